// Kernel-driven mode: markVolatile also applies MADV_FREE, so the kernel
// discards pages under pressure by itself, and the library sees a reclaimed
// page as a missing one (userfaultfd). Everything here relies on the
// region's userfaultfd registration, so it is verified first (and after the
// work that relied on it); when it was lost, every volatile page is treated
// as purged.
import CVRange
#if canImport(Glibc)
import Glibc
#endif

extension VolatileRegion {
    /// Makes sure the region is registered with the process-wide userfaultfd
    /// (restoring it if the descriptor was lost). If the registration epoch
    /// moved since this region last looked, pages that relied on it may have
    /// been reclaimed and refilled without a fault: every volatile page is
    /// treated as purged (discarded), and every purged page discarded again
    /// (one refilled meanwhile would read zeros without SIGBUS). Returns the
    /// epoch and whether the region is registered.
    func ensureRegistration() -> (epoch: UInt64, registered: Bool) {
        let now = Kernel.FaultTable.checkRegistration(slot: slot)
        var seen = registrationEpoch.load(ordering: .acquiring)
        while seen != now.epoch {
            let (done, current) = registrationEpoch.compareExchange(
                expected: seen, desired: now.epoch, ordering: .acquiringAndReleasing)
            if done {
                map.discardRuns(in: 0..<geometry.pageCount, includePurged: true, includeVolatile: isKernelDriven) {
                    discard($0)
                }
                break
            }
            seen = current
        }
        return now
    }

    /// Whether the registration checked at `epoch` still holds (the
    /// descriptor is verified again: a program may have closed it since).
    func registrationHeld(since epoch: UInt64) -> Bool {
        let now = Kernel.FaultTable.checkRegistration(slot: slot)
        return now.registered && now.epoch == epoch
    }

    /// markVolatile in kernel-driven mode: under the page lock (so that no
    /// markNonVolatile can pass between the mark and the advice), the
    /// chunks are registered with the userfaultfd (a registered chunk has
    /// no missing page, so a missing volatile page always means "reclaimed"),
    /// then MADV_FREE. Without a registration there is no MADV_FREE: the
    /// kernel's reclaim would go unseen.
    func markVolatileKernelDriven(_ pages: Range<Int>) {
        let registration = ensureRegistration()
        map.lockedRuns(in: pages, select: { word, _ in VolatilityMap.pages(in: word, .nonVolatile) }, release: .volatile) { run in
            changingMappings {
                let bytes = geometry.bytes(run)
                do throws(SystemError) {
                    guard registration.registered else { throw SystemError(call: "userfaultfd", errno: EBADF) }
                    try Kernel.FaultTable.registerChunks(slot: slot, pages: run)
                    try Kernel.advise(baseAddress + bytes.lowerBound, length: bytes.count, .free)
                } catch {
                    // The pages stay volatile; only the library can purge them.
                    lazyFreeFailureCount.add(1, ordering: .relaxed)
                }
            }
        }
    }

    /// markNonVolatile in kernel-driven mode: volatile pages are locked and
    /// settled (their lazy free cancelled, reclaimed ones found), purged
    /// pages cleared and repopulated.
    ///
    /// - Throws: `.closed` when the region was closed while the pages were
    ///   settled: the settling pass may have probed close()'s empty mapping
    ///   (zeros, no fault) instead of a page the kernel had reclaimed, so
    ///   what it found proves nothing (never report such a page intact).
    func markNonVolatileKernelDriven(_ pages: Range<Int>, offset: Int, length: Int) throws(VRangeError) -> NonVolatileResult {
        let registration = ensureRegistration()
        var reclaimed: [Range<Int>] = []
        var purged: [Range<Int>] = []
        map.markNonVolatile(
            pages, settleVolatile: true, wait: Kernel.yield,
            settle: { settle($0, epoch: registration.epoch, registered: registration.registered, lost: &reclaimed) },
            purged: { purged.append($0) })
        // After the settling pass (sequentially consistent: close() sets the
        // flag before it replaces the memory, so a probe that read the
        // replacement is followed by this seeing the flag).
        if closedFlag.load(ordering: .sequentiallyConsistent) { throw .closed }
        TestHook.fire(Int32(VR_HOOK_UNMARK_CLEARED), UnsafeRawPointer(baseAddress + offset))
        for run in purged { repopulate(run) }
        if !reclaimed.isEmpty { purged = Self.union(purged, reclaimed) }
        return NonVolatileResult(
            range: offset..<(offset + length), purgedRanges: purged.map { geometry.bytes($0) })
    }

    /// Settles a run this thread holds locked: the settling pass reads every
    /// page (a reclaimed one faults and becomes the zero page) and writes the
    /// resident ones that hold data (cancelling their lazy free). Appends the
    /// reclaimed runs to `lost`. If the registration did not hold throughout
    /// (lost before or during the pass), a page may have been reclaimed and
    /// refilled without a fault: the whole run counts as lost and is zeroed.
    private func settle(_ run: Range<Int>, epoch: UInt64, registered: Bool, lost: inout [Range<Int>]) {
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: (run.count + 63) / 64) { faulted in
            faulted.initialize(repeating: 0)
            let n = Kernel.FaultTable.dirtyPages(
                slot: slot, start: baseAddress + (run.lowerBound << geometry.pageShift),
                count: run.count, pageSize: pageSize, faulted: faulted.baseAddress!)
            guard registered && registrationHeld(since: epoch) else {
                map.bumpGenerations(run)
                discard(run)
                lost.append(run)
                return
            }
            guard n > 0 else { return }
            // Before the release: an access that read a page zero-filled here
            // and finds it non-volatile afterwards sees the discard.
            map.bumpGenerations(run)
            var coalescer = RunCoalescer()
            for i in 0..<run.count where faulted[i / 64] & (1 << UInt64(i % 64)) != 0 {
                coalescer.add(run.lowerBound + i, 1) { lost.append($0) }
            }
            coalescer.flush { lost.append($0) }
        }
    }

    /// Union of two sorted lists of disjoint page runs, as maximal runs.
    static func union(_ a: [Range<Int>], _ b: [Range<Int>]) -> [Range<Int>] {
        let all = (a + b).sorted { $0.lowerBound < $1.lowerBound }
        var out: [Range<Int>] = []
        for r in all {
            if let last = out.last, r.lowerBound <= last.upperBound {
                out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    /// The volatile pages of `pages` that are not resident (reclaimed).
    func reclaimedVolatilePages(in pages: Range<Int>) -> [Int] {
        var out: [Int] = []
        map.forEachRun(of: .volatile, in: pages) { run in
            let start = baseAddress + (run.lowerBound << geometry.pageShift)
            try? Kernel.residency(start, pages: run.count, pageSize: pageSize) { resident in
                for i in 0..<run.count where resident[i] & 1 == 0 { out.append(run.lowerBound + i) }
            }
        }
        return out
    }
}
