// The purge mechanism that purgers drive: discard volatile pages now.
// Race-safe against markNonVolatile through the map's per-page lock state.
import CVRange

extension VolatileRegion {
    /// Purges every volatile page of `range` now (`MADV_DONTNEED`; with the
    /// mprotect mechanism the pages are also made inaccessible first).
    /// Non-volatile pages are never touched, even if marked non-volatile
    /// concurrently: a page is discarded only after the purge has locked it
    /// in the volatile state. Pages locked with `mlock` are discarded too
    /// (`MADV_DONTNEED_LOCKED`, or munlock on kernels before 5.18).
    ///
    /// - Returns: the bytes released (pages this call purged).
    /// - Throws: a range error or `.closed`; nothing changes then.
    @discardableResult
    public func purge(_ range: Range<Int>) throws(VRangeError) -> Int {
        try checkOpen()
        let pages = try geometry.pages(range)
        return map.discardRuns(in: pages) { discard($0) } << geometry.pageShift
    }

    /// Purges every volatile page of the region. Returns the bytes released.
    @discardableResult
    public func purgeAll() throws(VRangeError) -> Int {
        try purge(0..<size)
    }

    /// Discards a run of pages this thread has locked (state `.locked`).
    /// Does nothing once the region is closed (its memory is replaced).
    func discard(_ pages: Range<Int>) {
        changingMappings {
            let bytes = geometry.bytes(pages)
            let start = baseAddress + bytes.lowerBound
            TestHook.fire(Int32(VR_HOOK_DISCARD), start)
            if faultMechanism == .userfaultfd {
                // A discarded page must fault: its chunk must be registered.
                do { try Kernel.FaultTable.registerChunks(slot: slot, pages: pages) } catch {
                    registrationFailureCount.add(1, ordering: .relaxed)
                }
            } else {
                // Protect first, so that no access can slip in between the
                // discard and the protection and read zeros without a fault.
                do { try Kernel.protect(start, length: bytes.count, .none) } catch {
                    protectFailureCount.add(1, ordering: .relaxed)
                }
            }
            do { try Kernel.discard(start, length: bytes.count) } catch {
                preconditionFailure("VRange: MADV_DONTNEED on a region's own pages failed: \(error)")
            }
        }
    }

    /// Asks the kernel to reclaim `range` now (`MADV_PAGEOUT`), as it would
    /// under memory pressure. A request, not a guarantee: the kernel may
    /// skip pages (on many-core machines, pages still in a per-CPU LRU batch
    /// are skipped). In kernel-driven mode it discards the range's volatile
    /// (lazily freed) pages that it takes, which then read as purged;
    /// non-volatile pages are never lost (without swap they stay, with swap
    /// they are swapped out and come back intact). For tests and demos.
    ///
    /// - Throws: a range error, `.closed`, or `.system` when the kernel lacks
    ///   `MADV_PAGEOUT` (Linux < 5.4).
    public func pageOut(_ range: Range<Int>) throws(VRangeError) {
        try checkOpen()
        _ = try geometry.pages(range)
        TestHook.fire(Int32(VR_HOOK_REGION_CHECKED), UnsafeRawPointer(baseAddress))
        do { try Kernel.advise(baseAddress + range.lowerBound, length: range.count, .pageOut) } catch {
            throw .system(error)
        }
    }
}
