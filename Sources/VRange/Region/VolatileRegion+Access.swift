// Optimistic access: read volatile memory without un-marking it, and get
// "purged" as a value instead of SIGBUS.

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
    /// - Returns: `.intact(value)` when no page of `range` was purged before
    ///   or during the access (so `body` read real contents), else `.purged`.
    /// - Throws: a range error, `.closed`, or `.accessNestingTooDeep`.
    public func withVolatileAccess<Value>(
        _ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Value
    ) throws(VRangeError) -> VolatileAccess<Value> {
        try checkOpen()
        let pages = try geometry.pages(range)
        if map.anyDiscarded(in: pages) { return .purged }
        let start = UnsafeRawPointer(baseAddress + range.lowerBound)
        guard Kernel.FaultTable.beginScope(slot: slot, base: start, length: range.count) else {
            throw .accessNestingTooDeep
        }
        let value = body(UnsafeRawBufferPointer(start: start, count: range.count))
        let faults = Kernel.FaultTable.endScope()
        if faults.count > 0 { restorePurged(faults, in: pages) }
        if faults.count > 0 || map.anyDiscarded(in: pages) { return .purged }
        // Kernel-driven: a page reclaimed before the body touched it faulted;
        // one reclaimed after it was read does not matter.
        return .intact(value)
    }

    /// Pages that faulted inside an access were filled with zeros so the body
    /// could go on; discard them again so that they fault (SIGBUS) next time
    /// and read as purged.
    private func restorePurged(_ faults: Kernel.FaultTable.ScopeFaults, in pages: Range<Int>) {
        if faults.overflow {
            // Too many to have been recorded: treat the whole range. Only in
            // kernel-driven mode can an intact volatile page have faulted.
            waitWhilePurging(pages)
            map.discardRuns(in: pages, includePurged: true, includeVolatile: isKernelDriven) { discard($0) }
            return
        }
        faults.forEachPage { address in
            let page = (Int(bitPattern: address) - Int(bitPattern: baseAddress)) >> geometry.pageShift
            let one = page..<(page + 1)
            waitWhilePurging(one)
            // The page faulted, so it is gone whatever the map says.
            map.discardRuns(in: one, includePurged: true) { discard($0) }
        }
    }

    /// Waits until no page of `pages` is locked by a purge in flight, so that
    /// a page zero-filled during that purge is discarded again afterwards.
    private func waitWhilePurging(_ pages: Range<Int>) {
        while map.census(pages).purging > 0 { Kernel.yield() }
    }
}
