// Optimistic access: read volatile memory without un-marking it, and get
// "purged" as a value instead of SIGBUS.
import CVRange
import Synchronization

extension VolatileRegion {
    /// Runs `body` over `range` while it stays volatile. A purged page touched
    /// inside `body` does not raise SIGBUS: it reads as zeros, the access is
    /// reported `.purged`, and the page goes back to its purged state after
    /// `body` returns. `body` is not run when a page of the range is already
    /// purged. Nesting (up to 8 deep) is allowed. `body` cannot throw: return
    /// a `Result` to carry an error out. While the access runs, a page it
    /// found purged reads as zeros on every thread (not SIGBUS); it is purged
    /// again, and faults again, once the access ends.
    ///
    /// The access is `.intact` only if no page of its map words (32 pages
    /// each) was discarded between its check before `body` and its check
    /// after: a page purged and marked non-volatile again while `body` ran
    /// reads zeros without a fault, and is caught this way. A purge of a
    /// neighbouring page in the same 32 can therefore also report `.purged`.
    ///
    /// SIGBUS and SIGSEGV are unblocked in the calling thread while `body`
    /// runs (a blocked synchronous fault would kill the process): one
    /// `rt_sigprocmask` per access.
    ///
    /// - Returns: `.intact(value)` when no page of `range` was purged before
    ///   or during the access (so `body` read real contents), else `.purged`.
    /// - Throws: a range error, `.closed` (also when the region was closed
    ///   while `body` ran and no page of `range` had been purged: its memory was
    ///   replaced, and what `body` read is not the region's), or
    ///   `.accessNestingTooDeep`.
    public func withVolatileAccess<Value>(
        _ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Value
    ) throws(VRangeError) -> VolatileAccess<Value> {
        try checkOpen()
        let pages = try geometry.pages(range)
        // Kernel-driven mode relies on the userfaultfd registration to see
        // reclaimed pages: it must hold from before the check to after it.
        let registration = isKernelDriven ? ensureRegistration() : (epoch: 0, registered: true)
        // Generations first, then states; after the body, states first, then
        // generations (see VolatilityMap: discard generations).
        let generation = map.generationSum(pages)
        if map.anyDiscarded(in: pages) { return .purged }
        let start = UnsafeRawPointer(baseAddress + range.lowerBound)
        TestHook.fire(Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), start)
        guard Kernel.FaultTable.beginScope(slot: slot, base: start, length: range.count) else {
            throw .accessNestingTooDeep
        }
        let value = Kernel.withFaultSignalsUnblocked {
            body(UnsafeRawBufferPointer(start: start, count: range.count))
        }
        let faults = Kernel.FaultTable.endScope()
        TestHook.fire(Int32(VR_HOOK_ACCESS_BEFORE_POSTCHECK), start)
        // Closed meanwhile: the body may have read the empty mapping that
        // replaced the region's memory (zeros, no fault). Nothing it read
        // can be vouched for (issue 18, 1d): `.closed`, unless a page of the
        // range was purged before the close, which is a true `.purged` (the
        // memory it would restore is gone with the region; the map stays
        // readable until deinit).
        if closedFlag.load(ordering: .sequentiallyConsistent) {
            if faults.count > 0 { vr_scope_restored(slot) }
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if faults.count > 0 || map.anyDiscarded(in: pages) || map.generationSum(pages) != generation {
                return .purged
            }
            throw .closed
        }
        if faults.count > 0 {
            restorePurged(faults, in: pages)
            vr_scope_restored(slot)
            return .purged
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if map.anyDiscarded(in: pages) || map.generationSum(pages) != generation { return .purged }
        if isKernelDriven && !(registration.registered && registrationHeld(since: registration.epoch)) {
            _ = ensureRegistration()  // treats every volatile page as purged
            return .purged
        }
        return .intact(value)
    }

    /// Pages that faulted inside an access were purged, and filled with
    /// zeros so the body could go on; discard those still purged again so
    /// that they fault (SIGBUS) next time. (One that was marked non-volatile
    /// meanwhile keeps the zero page as its repopulation.)
    private func restorePurged(_ faults: Kernel.FaultTable.ScopeFaults, in pages: Range<Int>) {
        if faults.overflow {
            // Too many to have been recorded: treat the whole range.
            waitWhileLocked(pages)
            map.discardRuns(in: pages, includePurged: true, includeVolatile: false) { discard($0) }
            return
        }
        faults.forEachPage { address in
            let page = (Int(bitPattern: address) - Int(bitPattern: baseAddress)) >> geometry.pageShift
            let one = page..<(page + 1)
            waitWhileLocked(one)
            map.discardRuns(in: one, includePurged: true, includeVolatile: false) { discard($0) }
        }
    }

    /// Waits until no page of `pages` is locked by an operation in flight,
    /// so that a page zero-filled during a purge is discarded again after it.
    private func waitWhileLocked(_ pages: Range<Int>) {
        while map.census(pages).locked > 0 { Kernel.yield() }
    }
}
