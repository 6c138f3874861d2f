// VolatileRegion: mvrange on private anonymous memory (DESIGN.md §1, §1a).
// Creation, closing, the two marks and status. Purging and optimistic access
// live in the extensions beside this file.
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A private anonymous mapping whose pages can be marked volatile (may be
/// purged when memory is tight) and non-volatile again (learning whether
/// they survived).
///
/// Every operation is thread-safe, except `close()`, which must not race
/// with other operations on the same region (like closing a descriptor).
/// Ranges are byte offsets within the region and must be page-aligned.
public final class VolatileRegion: @unchecked Sendable {
    /// The region's size in bytes: the requested size rounded up to pages.
    public let size: Int
    /// The page size in bytes: the unit of every range.
    public let pageSize: Int
    /// The first byte of the region.
    public let baseAddress: UnsafeMutableRawPointer
    /// How a touch of a purged page raises SIGBUS in this region (never
    /// `.automatic`: the mechanism that was chosen).
    public let faultMechanism: FaultMechanism
    /// Whether marking volatile lets the kernel reclaim pages by itself.
    public let isKernelDriven: Bool

    let geometry: PageGeometry
    let map: VolatilityMap
    let slot: Int32
    private let mapMemory: UnsafeMutableRawPointer
    private let closedFlag = Atomic<Bool>(false)
    let protectFailureCount = Atomic<Int>(0)
    let repopulateFailureCount = Atomic<Int>(0)
    let lazyFreeFailureCount = Atomic<Int>(0)
    /// `RecencyClock.now` at the last markVolatile (stored only when it moved).
    let lastMarkedVolatile = Atomic<UInt64>(0)
    private let priorityRaw: Atomic<Int>

    /// The region's class for a `Purger` (lower classes are purged first).
    public var purgePriority: PurgePriority {
        get { PurgePriority(rawValue: priorityRaw.load(ordering: .relaxed)) ?? .normal }
        set { priorityRaw.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// How many purged runs could not be made inaccessible (mprotect fallback
    /// only, e.g. at the vm.max_map_count limit). Those pages still read back
    /// zero and are reported purged, but touching them raises no SIGBUS.
    public var protectFailures: Int { protectFailureCount.load(ordering: .relaxed) }
    /// How many purged runs could not be repopulated by markNonVolatile. Those
    /// pages are filled on first touch instead.
    public var repopulateFailures: Int { repopulateFailureCount.load(ordering: .relaxed) }
    /// Kernel-driven mode: how many runs the kernel refused to free lazily
    /// (MADV_FREE). They stay volatile; only the library can purge them.
    public var lazyFreeFailures: Int { lazyFreeFailureCount.load(ordering: .relaxed) }

    /// The whole region as bytes. Valid until `close()`.
    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: baseAddress, count: size)
    }

    /// Maps `byteCount` bytes (rounded up to whole pages), all non-volatile
    /// and zero-filled.
    ///
    /// - Throws: `.invalidSize` for a size of zero or less or too large;
    ///   `.unsupported` when `options` asks for userfaultfd or kernel-driven
    ///   purging and the kernel refuses userfaultfd; `.system` when a mapping
    ///   cannot be made.
    public init(byteCount: Int, options: Options = Options()) throws(VRangeError) {
        let pageSize = Kernel.pageSize
        let size = try PageGeometry.roundedSize(byteCount, pageSize: pageSize)
        let geometry = PageGeometry(size: size, pageSize: pageSize)
        if options.kernelDriven && options.faultMechanism == .mprotect {
            throw .unsupported("kernel-driven purging needs the userfaultfd mechanism: a page the kernel reclaims is only visible as a missing page")
        }

        let base: UnsafeMutableRawPointer
        do { base = try Kernel.mapAnonymous(length: size) } catch { throw .system(error) }
        var cleanup: [() -> Void] = [{ try? Kernel.unmap(base, length: size) }]
        func fail(_ e: VRangeError) -> VRangeError {
            for undo in cleanup.reversed() { undo() }
            return e
        }
        // Purges and faults are per 4 KiB page: keep transparent huge pages out.
        try? Kernel.advise(base, length: size, .noHugePage)

        var mechanism = FaultMechanism.mprotect
        if options.faultMechanism != .mprotect {
            do {
                try Kernel.UserFault.register(base, length: size)
                // Non-volatile memory must always be populated: a missing page
                // in a registered range faults.
                try Kernel.UserFault.zeroFill(base, length: size)
                mechanism = .userfaultfd
            } catch {
                try? Kernel.UserFault.unregister(base, length: size)
                if options.faultMechanism == .userfaultfd || options.kernelDriven {
                    throw fail(.unsupported("userfaultfd unavailable: \(error)"))
                }
            }
        }

        // The map lives on the heap: 8 bytes per 32 pages, not rounded up to a
        // page as its own mapping would be (that was 6 % of a 64 KiB region).
        let mapBytes = VolatilityMap.byteCount(pages: geometry.pageCount)
        let mapMemory = UnsafeMutableRawPointer.allocate(byteCount: mapBytes, alignment: 64)
        mapMemory.initializeMemory(as: UInt8.self, repeating: 0, count: mapBytes)
        cleanup.append { mapMemory.deallocate() }
        let map = VolatilityMap(memory: mapMemory, pageCount: geometry.pageCount)

        do {
            self.slot = try Kernel.FaultTable.register(
                base: base, length: size, pageSize: pageSize, map: map.rawWords,
                mechanism: mechanism == .userfaultfd ? .userfaultfd : .mprotect)
        } catch {
            throw fail(error.errno == ENOSPC ? .unsupported("too many regions (at most 4096 at once)") : .system(error))
        }
        self.size = size
        self.pageSize = pageSize
        self.baseAddress = base
        self.faultMechanism = mechanism
        self.isKernelDriven = options.kernelDriven
        self.priorityRaw = Atomic(options.purgePriority.rawValue)
        self.geometry = geometry
        self.map = map
        self.mapMemory = mapMemory
    }

    deinit { close() }

    /// Unmaps the region and releases everything it holds. Idempotent; every
    /// later operation throws `.closed`. Must not race with other operations
    /// on this region.
    public func close() {
        guard !closedFlag.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Kernel.FaultTable.unregister(slot: slot)
        try? Kernel.unmap(baseAddress, length: size)
        mapMemory.deallocate()
    }

    /// Bytes of bookkeeping this region keeps per page: its volatility map
    /// (2 bits a page, 0.006 % of 4 KiB pages, on the heap). Each region also
    /// has a fixed cost that does not grow with its size: this object (about
    /// a dozen words) and a slot in the fault handler's static table.
    public var metadataBytes: Int { VolatilityMap.byteCount(pages: geometry.pageCount) }

    /// Whether `close()` was called.
    public var isClosed: Bool { closedFlag.load(ordering: .relaxed) }

    @inline(__always)
    func checkOpen() throws(VRangeError) {
        if closedFlag.load(ordering: .relaxed) { throw .closed }
    }

    // MARK: - Marks

    /// Records that the region was used now, for a purger's recency order.
    /// A load and a compare; a store only when the clock has moved, so that
    /// threads marking the same region rarely write the same cache line.
    @inline(__always)
    func stampRecency() {
        let now = RecencyClock.now
        if lastMarkedVolatile.load(ordering: .relaxed) != now {
            lastMarkedVolatile.store(now, ordering: .relaxed)
        }
    }

    /// Marks `range` volatile: its pages may be purged from now on. Pages
    /// already volatile or purged keep their state (marks are idempotent).
    ///
    /// - Throws: a range error or `.closed`; nothing changes then.
    public func markVolatile(_ range: Range<Int>) throws(VRangeError) {
        try markVolatile(offset: range.lowerBound, length: range.count)
    }

    /// Marks `[offset, offset + length)` volatile. See `markVolatile(_:)`.
    public func markVolatile(offset: Int, length: Int) throws(VRangeError) {
        try checkOpen()
        let pages = try geometry.pages(offset: offset, length: length)
        stampRecency()
        guard isKernelDriven else {
            map.markVolatile(pages)
            return
        }
        // MADV_FREE under the page lock, so that no markNonVolatile can pass
        // these pages between the mark and the advice. Purged pages stay
        // purged; pages locked by a purge in flight end purged anyway.
        map.lockedRuns(in: pages, select: { word, _ in ~word >> 1 & VolatilityMap.lowBits }, release: .volatile) { run in
            let bytes = geometry.bytes(run)
            do throws(SystemError) { try Kernel.advise(baseAddress + bytes.lowerBound, length: bytes.count, .free) } catch {
                // Advice only: the pages stay volatile, the library can still purge them.
                lazyFreeFailureCount.add(1, ordering: .relaxed)
            }
        }
    }

    /// Marks `range` non-volatile: its pages will never be purged again until
    /// marked volatile. Waits for a purge in flight on any of its pages.
    ///
    /// - Returns: `.intact` if no page was purged since it was marked
    ///   volatile; otherwise the exact byte ranges that were purged, which now
    ///   read as zeros and are writable.
    /// - Throws: a range error or `.closed`; nothing changes then.
    @discardableResult
    public func markNonVolatile(_ range: Range<Int>) throws(VRangeError) -> NonVolatileResult {
        try markNonVolatile(offset: range.lowerBound, length: range.count)
    }

    /// Marks `[offset, offset + length)` non-volatile. See `markNonVolatile(_:)`.
    @discardableResult
    public func markNonVolatile(offset: Int, length: Int) throws(VRangeError) -> NonVolatileResult {
        try checkOpen()
        let pages = try geometry.pages(offset: offset, length: length)
        if !isKernelDriven, let lost = map.markNonVolatileInOneWord(pages) {
            if lost == 0 { return NonVolatileResult(intact: offset..<(offset + length)) }
            var purged: [Range<Int>] = []
            VolatilityMap.forEachRun(in: lost, word: pages.lowerBound / VolatilityMap.pagesPerWord) {
                purged.append($0..<($0 + $1))
            }
            for run in purged { repopulate(run) }
            return NonVolatileResult(
                range: offset..<(offset + length), purgedRanges: purged.map { geometry.bytes($0) })
        }
        var reclaimed: [Range<Int>] = []
        var purged: [Range<Int>] = []
        map.markNonVolatile(
            pages, settleVolatile: isKernelDriven, wait: Kernel.yield,
            settle: { cancelLazyFree($0, lost: &reclaimed) },
            purged: { purged.append($0) })
        for run in purged { repopulate(run) }
        if !reclaimed.isEmpty { purged = Self.union(purged, reclaimed) }
        return NonVolatileResult(
            range: offset..<(offset + length),
            purgedRanges: purged.map { geometry.bytes($0) })
    }

    /// Makes purged pages usable again: zero pages (userfaultfd; present
    /// pages are skipped) or read-write protection (mprotect). A failure
    /// (ENOMEM: page tables, or vm.max_map_count for mprotect) is counted in
    /// `repopulateFailures` and not fatal: the fault handler fills such a
    /// page on its first touch, and raises SIGBUS only if that fails too.
    private func repopulate(_ pages: Range<Int>) {
        let bytes = geometry.bytes(pages)
        let start = baseAddress + bytes.lowerBound
        do throws(SystemError) {
            if faultMechanism == .userfaultfd {
                try Kernel.UserFault.zeroFill(start, length: bytes.count)
            } else {
                try Kernel.protect(start, length: bytes.count, .readWrite)
            }
        } catch {
            repopulateFailureCount.add(1, ordering: .relaxed)
        }
    }

    /// Kernel-driven mode: writes to every page of `run` (which this thread
    /// holds locked) so that the kernel can no longer reclaim it, and appends
    /// to `lost` the runs of pages it had already reclaimed (they faulted and
    /// are now zero-filled).
    private func cancelLazyFree(_ run: Range<Int>, lost: inout [Range<Int>]) {
        var faulted = [UInt64](repeating: 0, count: (run.count + 63) / 64)
        let n = faulted.withUnsafeMutableBufferPointer {
            Kernel.FaultTable.dirtyPages(
                slot: slot, start: baseAddress + (run.lowerBound << geometry.pageShift),
                count: run.count, pageSize: pageSize, faulted: $0.baseAddress!)
        }
        if n == 0 { return }
        var coalescer = RunCoalescer()
        for i in 0..<run.count where faulted[i / 64] & (1 << UInt64(i % 64)) != 0 {
            coalescer.add(run.lowerBound + i, 1) { lost.append($0) }
        }
        coalescer.flush { lost.append($0) }
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

    // MARK: - Status

    /// A snapshot of the whole region. In kernel-driven mode, volatile pages
    /// the kernel has reclaimed count as purged (found with mincore; on a
    /// host with swap, a volatile page that was written after being marked
    /// and then swapped out also counts, although markNonVolatile will find
    /// it intact).
    public func status() throws(VRangeError) -> RegionStatus {
        try status(0..<size)
    }

    /// A snapshot of `range`.
    public func status(_ range: Range<Int>) throws(VRangeError) -> RegionStatus {
        try checkOpen()
        let pages = try geometry.pages(range)
        let c = map.census(pages)
        var volatile = c.volatile, purged = c.purging + c.purged
        if isKernelDriven {
            let reclaimed = reclaimedVolatilePages(in: pages).count
            volatile -= reclaimed
            purged += reclaimed
        }
        return RegionStatus(
            bytes: range.count, volatileBytes: volatile << geometry.pageShift,
            purgedBytes: purged << geometry.pageShift)
    }

    /// The state of every page of `range`, in order. In kernel-driven mode a
    /// volatile page the kernel has reclaimed reads `.purged`.
    public func pageStates(_ range: Range<Int>) throws(VRangeError) -> [PageState] {
        try checkOpen()
        let pages = try geometry.pages(range)
        var states = pages.map { map.state(ofPage: $0) }
        if isKernelDriven {
            for page in reclaimedVolatilePages(in: pages) { states[page - pages.lowerBound] = .purged }
        }
        return states
    }

    /// Kernel-driven mode: the volatile pages of `pages` that are not resident.
    private func reclaimedVolatilePages(in pages: Range<Int>) -> [Int] {
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
