// The two marks. Their one-word, library-driven case is inlined into the
// caller (it is the hot path of every cache layer: a call into the library
// would cost as much as the CAS); everything else — ranges spanning words,
// purged pages to repopulate, locked pages to wait for, kernel-driven mode,
// bad input, a closed region — takes a slow path out of line.
import CVRange
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension VolatileRegion {
    /// Marks `range` volatile: its pages may be purged from now on. Pages
    /// already volatile or purged keep their state (marks are idempotent).
    ///
    /// - Throws: a range error or `.closed`; nothing changes then.
    @inlinable @inline(__always)
    public func markVolatile(_ range: Range<Int>) throws(VRangeError) {
        try markVolatile(offset: range.lowerBound, length: range.upperBound &- range.lowerBound)
    }

    /// Marks `[offset, offset + length)` volatile. See `markVolatile(_:)`.
    ///
    /// Always inlined: what is left beyond the CAS is the range check (three
    /// compares, which also turn away a closed or kernel-driven region), the
    /// page arithmetic, and the recency stamp's two loads.
    @inlinable @inline(__always)
    public func markVolatile(offset: Int, length: Int) throws(VRangeError) {
        if _fastPath(geometry.isValid(offset: offset, length: length, size: fastSize.load(ordering: .relaxed))) {
            let first = offset &>> geometry.pageShift, end = (offset &+ length) &>> geometry.pageShift
            if _fastPath(map.markVolatileInOneWord(first: first, end: end))
                || map.markVolatileWords(first: first, end: end) == end {
                stampRecency()
                return
            }
        }
        try markVolatileSlow(offset: offset, length: length)
    }

    /// Marks `range` non-volatile: its pages will never be purged again until
    /// marked volatile. Waits for an operation in flight on any of its pages.
    ///
    /// - Returns: `.intact` if no page was purged since it was marked
    ///   volatile; otherwise the exact byte ranges that were purged, which now
    ///   read as zeros and are writable.
    /// - Throws: a range error or `.closed`; nothing changes then.
    @inlinable @inline(__always)
    public func markNonVolatile(_ range: Range<Int>) throws(VRangeError) -> NonVolatileResult {
        try markNonVolatile(offset: range.lowerBound, length: range.upperBound &- range.lowerBound)
    }

    /// Marks `[offset, offset + length)` non-volatile. See `markNonVolatile(_:)`.
    /// Always inlined, like `markVolatile(offset:length:)`.
    @inlinable @inline(__always)
    public func markNonVolatile(offset: Int, length: Int) throws(VRangeError) -> NonVolatileResult {
        if _fastPath(geometry.isValid(offset: offset, length: length, size: fastSize.load(ordering: .relaxed))) {
            let first = offset &>> geometry.pageShift, end = (offset &+ length) &>> geometry.pageShift
            if let lost = map.markNonVolatileInOneWord(first: first, end: end) {
                if _fastPath(lost == 0) { return NonVolatileResult(intact: offset..<(offset &+ length)) }
                return purgedInOneWord(lost, offset: offset, length: length)
            }
            if map.markNonVolatileWords(first: first, end: end) == end {
                return NonVolatileResult(intact: offset..<(offset &+ length))
            }
        }
        return try markNonVolatileSlow(offset: offset, length: length)
    }

    /// Records that the region was used now, for a purger's recency order.
    /// Two loads and a compare; a store only when the clock has moved, so
    /// that threads marking the same region rarely write the same line.
    @inlinable @inline(__always)
    func stampRecency() {
        let now = RecencyClock.now
        if lastMarkedVolatile.load(ordering: .relaxed) != now {
            lastMarkedVolatile.store(now, ordering: .relaxed)
        }
    }

    // MARK: - Slow paths

    @usableFromInline
    func markVolatileSlow(offset: Int, length: Int) throws(VRangeError) {
        try checkOpen()
        let pages = try geometry.pages(offset: offset, length: length)
        stampRecency()
        if isKernelDriven {
            markVolatileKernelDriven(pages)
        } else {
            map.markVolatile(pages)
        }
    }

    /// The one-word fast path found purged pages (`lost`, low bits of the
    /// word holding `offset`) and has cleared them: repopulate and report.
    @usableFromInline
    func purgedInOneWord(_ lost: UInt64, offset: Int, length: Int) -> NonVolatileResult {
        var purged: [Range<Int>] = []
        VolatilityMap.forEachRun(in: lost, word: (offset >> geometry.pageShift) / VolatilityMap.pagesPerWord) {
            purged.append($0..<($0 + $1))
        }
        TestHook.fire(Int32(VR_HOOK_UNMARK_CLEARED), UnsafeRawPointer(baseAddress + offset))
        for run in purged { repopulate(run) }
        return NonVolatileResult(range: offset..<(offset + length), purgedRanges: purged.map { geometry.bytes($0) })
    }

    @usableFromInline
    func markNonVolatileSlow(offset: Int, length: Int) throws(VRangeError) -> NonVolatileResult {
        try checkOpen()
        let pages = try geometry.pages(offset: offset, length: length)
        if isKernelDriven { return try markNonVolatileKernelDriven(pages, offset: offset, length: length) }
        var purged: [Range<Int>] = []
        map.markNonVolatile(pages, wait: Kernel.yield, purged: { purged.append($0) })
        TestHook.fire(Int32(VR_HOOK_UNMARK_CLEARED), UnsafeRawPointer(baseAddress + offset))
        for run in purged { repopulate(run) }
        return NonVolatileResult(
            range: offset..<(offset + length), purgedRanges: purged.map { geometry.bytes($0) })
    }

    /// Makes purged pages usable again: zero pages (userfaultfd; present
    /// pages are skipped) or read-write protection (mprotect). At the
    /// vm.max_map_count limit (ENOMEM: unprotecting part of a protected run
    /// needs VMA splits) the whole enclosing run is unprotected instead (a
    /// merge), and its other purged pages stop raising SIGBUS
    /// (`sigbusCoverageLost`): a non-volatile page must never stay
    /// inaccessible. Any other failure is counted in `repopulateFailures`;
    /// the fault handler then fills such a page on its first touch. A page
    /// purged again meanwhile is discarded again after the fill.
    func repopulate(_ pages: Range<Int>) {
        if isKernelDriven {
            // Page by page under each page's lock, and only a page still
            // non-volatile: one marked volatile since it was cleared may
            // have been reclaimed by the kernel, and a late zero page over
            // that would hide the reclaim (the next unmark would call the
            // page intact). It is no longer this thread's to fill.
            let failed = vr_region_repopulate_kernel_driven(slot, pages.lowerBound, pages.count)
            if failed > 0 { repopulateFailureCount.add(Int(failed), ordering: .relaxed) }
            return
        }
        let bytes = geometry.bytes(pages)
        let start = baseAddress + bytes.lowerBound
        do throws(SystemError) {
            if faultMechanism == .userfaultfd {
                try Kernel.UserFault.zeroFill(start, length: bytes.count)
            } else {
                do { try Kernel.protect(start, length: bytes.count, .readWrite) } catch where error.errno == ENOMEM {
                    try Kernel.FaultTable.unprotectWidened(handlerRegion, first: pages.lowerBound, count: pages.count)
                }
            }
        } catch {
            repopulateFailureCount.add(1, ordering: .relaxed)
        }
        // The map said non-volatile before the fill: a page marked volatile
        // and purged again in between would now read the fill, zeros
        // without a fault. Such a page is purged again (issue 18, 5h).
        vr_region_repurge_filled(slot, pages.lowerBound, pages.count)
    }
}
