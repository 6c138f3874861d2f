// VolatileRegion: mvrange on private anonymous memory. Creation, closing and
// status. Marks, purging, optimistic access and kernel-driven mode live in
// the extensions beside this file.
import CVRange
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
/// Every operation is thread-safe, `close()` included: an operation racing
/// with `close()` either throws `.closed` or completes on memory the region
/// still owns (see `close()`). Ranges are byte offsets within the region and
/// must be page-aligned.
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

    @usableFromInline let geometry: PageGeometry
    @usableFromInline let map: VolatilityMap
    let slot: Int32
    /// The handler's view of the region (for re-use by the widening unprotect).
    let handlerRegion: Kernel.FaultTable.Region
    private let metadata: UnsafeMutableRawPointer
    let closedFlag = Atomic<Bool>(false)
    // Operations in flight that change the region's mappings (discards,
    // protections, userfaultfd registration) are counted in the region's
    // slot of the handler's table (vr_region_change_begin): close() waits
    // for them, so that none of them acts on the memory that replaces the
    // region's, and the fork child resets the count (the threads making
    // them do not exist there: issue 18, 1c).
    /// The size the mark fast paths validate ranges against: `size` while
    /// they may run, 0 when every mark must take the slow path (kernel-driven
    /// mode, or closed), so that no range passes. One load, folded into the
    /// range check the fast path makes anyway.
    @usableFromInline let fastSize: Atomic<Int>
    /// `RecencyClock.now` at the last markVolatile (stored only when it moved).
    @usableFromInline let lastMarkedVolatile = Atomic<UInt64>(0)
    private let priorityRaw: Atomic<Int>
    /// The userfaultfd registration epoch this region last made sure of.
    let registrationEpoch: Atomic<UInt64>
    let protectFailureCount = Atomic<Int>(0)
    let repopulateFailureCount = Atomic<Int>(0)
    let registrationFailureCount = Atomic<Int>(0)
    let lazyFreeFailureCount = Atomic<Int>(0)

    /// How many purged runs could not be made inaccessible (mprotect fallback
    /// only, e.g. at the vm.max_map_count limit). Those pages still read back
    /// zero and are reported purged, but touching them raises no SIGBUS.
    public var protectFailures: Int { protectFailureCount.load(ordering: .relaxed) }
    /// How many purged runs could not be repopulated by markNonVolatile. Those
    /// pages are filled on first touch instead.
    public var repopulateFailures: Int { repopulateFailureCount.load(ordering: .relaxed) }
    /// userfaultfd mechanism: how many purges could not register their
    /// chunk with the userfaultfd (ENOMEM at vm.max_map_count, or the
    /// descriptor lost and not recovered). Those pages read as zeros instead
    /// of raising SIGBUS, and are still reported purged.
    public var registrationFailures: Int { registrationFailureCount.load(ordering: .relaxed) }
    /// Kernel-driven mode: how many runs were not freed lazily (MADV_FREE
    /// refused, or no userfaultfd registration to see the kernel reclaim
    /// them). They stay volatile; only the library can purge them.
    public var lazyFreeFailures: Int { lazyFreeFailureCount.load(ordering: .relaxed) }
    /// mprotect fallback: purged pages that were made accessible again to
    /// avoid a VMA split at the vm.max_map_count limit (a non-volatile page
    /// must never stay inaccessible). They read as zeros, are still reported
    /// purged, but raise no SIGBUS when touched.
    public var sigbusCoverageLost: Int {
        Int(UnsafeMutableRawPointer(handlerRegion.coverageLost)
            .assumingMemoryBound(to: Atomic<UInt64>.self).pointee.load(ordering: .relaxed))
    }

    /// The region's class for a `Purger` (lower classes are purged first).
    public var purgePriority: PurgePriority {
        get { PurgePriority(rawValue: priorityRaw.load(ordering: .relaxed)) ?? .normal }
        set { priorityRaw.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// The whole region as bytes. Valid until `close()`.
    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: baseAddress, count: size)
    }

    /// Maps `byteCount` bytes (rounded up to whole pages), all non-volatile
    /// and zero-filled. Nothing is populated: pages cost memory once
    /// touched. With userfaultfd, each 64 MiB chunk is registered the first
    /// time a page of it is purged (or, kernel-driven, marked volatile), and
    /// its never-touched pages then get the shared zero page (page tables
    /// only), so that memory never faults unless it was purged; its first
    /// page is written (4 KiB per chunk), so that fork() copies the chunk's
    /// page tables and a child finds those pages too.
    ///
    /// - Throws: `.invalidSize` for a size of zero or less or larger than
    ///   `maxByteCount`;
    ///   `.unsupported` when `options` asks for userfaultfd or kernel-driven
    ///   purging and the kernel refuses userfaultfd, or for kernel-driven
    ///   purging with the mprotect mechanism; `.tooManyRegions` when
    ///   `maxRegions` regions exist already; `.system` when a mapping (or
    ///   the bookkeeping) cannot be made.
    public init(byteCount: Int, options: Options = Options()) throws(VRangeError) {
        let pageSize = Kernel.pageSize
        guard byteCount <= Self.maxByteCount else { throw .invalidSize(byteCount) }
        let size = try PageGeometry.roundedSize(byteCount, pageSize: pageSize)
        let geometry = PageGeometry(size: size, pageSize: pageSize)
        if options.kernelDriven && options.faultMechanism == .mprotect {
            throw .unsupported("kernel-driven purging needs the userfaultfd mechanism: a page the kernel reclaims is only visible as a missing page")
        }

        let base: UnsafeMutableRawPointer
        do { base = try Kernel.mapAnonymousUnlocked(length: size) } catch { throw .system(error) }
        // Purges and faults are per 4 KiB page: keep transparent huge pages out.
        try? Kernel.advise(base, length: size, .noHugePage)

        // The map lives on the heap (8 bytes per 32 pages plus 4 of discard
        // generation, not rounded up to a page as a mapping would be); after
        // it the handler's count of pages that lost SIGBUS coverage, and the
        // bitmap of chunks registered with the userfaultfd.
        let mapBytes = VolatilityMap.byteCount(pages: geometry.pageCount)
        let chunkWords = Kernel.FaultTable.Region.chunkWords(pages: geometry.pageCount)
        let metadataBytes = mapBytes + 8 + 8 * chunkWords
        // A failure to allocate is an error, not a trap. A small map is
        // cache-line aligned; a large one comes from calloc (glibc maps it:
        // page-aligned, zeroed by the kernel, untouched until used).
        var allocated: UnsafeMutableRawPointer?
        if metadataBytes <= 64 << 10 {
            if posix_memalign(&allocated, 64, metadataBytes) == 0 {
                allocated?.initializeMemory(as: UInt8.self, repeating: 0, count: metadataBytes)
            }
        } else {
            allocated = calloc(1, metadataBytes)
        }
        guard let metadata = allocated else {
            try? Kernel.unmap(base, length: size)
            throw .system(SystemError(call: "calloc", errno: ENOMEM))
        }
        let map = VolatilityMap(memory: metadata, pageCount: geometry.pageCount)
        func fail(_ e: VRangeError) -> VRangeError {
            try? Kernel.unmap(base, length: size)
            free(metadata)
            return e
        }

        var region = Kernel.FaultTable.Region(
            base: base, length: size, pageSize: pageSize, words: map.rawWords, generations: map.rawGenerations,
            coverageLost: (metadata + mapBytes).assumingMemoryBound(to: UInt64.self),
            chunks: (metadata + mapBytes + 8).assumingMemoryBound(to: UInt64.self),
            chunkPages: Kernel.FaultTable.Region.chunkPages,
            mechanism: .mprotect, kernelDriven: options.kernelDriven)
        if options.faultMechanism != .mprotect {
            // The registration itself waits for the first purge of each chunk.
            do {
                _ = try Kernel.UserFault.shared()
                region.mechanism = .userfaultfd
            } catch {
                if options.faultMechanism == .userfaultfd || options.kernelDriven {
                    throw fail(.unsupported("userfaultfd unavailable: \(error)"))
                }
            }
        }
        let slot: Int32
        do { slot = try Kernel.FaultTable.register(region) } catch {
            throw fail(error.errno == ENOSPC ? .tooManyRegions(limit: Self.maxRegions) : .system(error))
        }
        self.size = size
        self.pageSize = pageSize
        self.baseAddress = base
        self.faultMechanism = region.mechanism == .userfaultfd ? .userfaultfd : .mprotect
        self.isKernelDriven = options.kernelDriven
        self.fastSize = Atomic(options.kernelDriven ? 0 : size)
        self.priorityRaw = Atomic(options.purgePriority.rawValue)
        self.geometry = geometry
        self.map = map
        self.slot = slot
        self.handlerRegion = region
        self.metadata = metadata
        self.registrationEpoch = Atomic(Kernel.FaultTable.registrationEpoch)
    }

    /// The largest `byteCount` a region accepts: 2^47 bytes (128 TiB), the
    /// user address space of x86-64 with 4-level paging; no larger mapping
    /// can ever be made there. A larger size throws `.invalidSize`; a size
    /// up to it that the kernel cannot map here throws `.system(ENOMEM)`.
    public static let maxByteCount = 1 << 47

    /// The most regions that can exist at once in a process (the fault
    /// handler's table is static: it must not allocate). A closed region
    /// counts until it is deinitialized.
    public static let maxRegions = Int(VR_MAX_REGIONS)

    deinit {
        close()
        // Only now, with no access left that could fault here, does the
        // region leave the handler's table: see close().
        Kernel.FaultTable.unregister(slot: slot)
        try? Kernel.unmap(baseAddress, length: size)
        free(metadata)
    }

    /// Releases the region's memory now. Idempotent; every later operation
    /// throws `.closed`.
    ///
    /// Safe against operations racing on other threads: once the discards
    /// and protections in flight are done (later ones do nothing), the
    /// region's pages are replaced by an empty mapping that the region keeps
    /// reserved, with its bookkeeping and its entry in the fault handler's
    /// table, until it is deinitialized. An operation already past its
    /// closed check completes on that memory and touches nothing that
    /// belongs to anyone else; an access body running meanwhile reads zeros.
    public func close() {
        guard !closedFlag.exchange(true, ordering: .sequentiallyConsistent) else { return }
        fastSize.store(0, ordering: .sequentiallyConsistent)
        // Closing in the handler's table before the wait: a change counted in
        // C (vr_region_change_enter: a repurge, the handler's rediscard) sees
        // it or is waited for, as a change counted here sees the flag.
        Kernel.FaultTable.closing(slot: slot)
        // Either a change in flight sees the flag, or this sees its count.
        while vr_region_changes(slot) != 0 {
            TestHook.fire(Int32(VR_HOOK_CLOSE_WAITING), UnsafeRawPointer(baseAddress))
            Kernel.yield()
        }
        // A racing access that faults meanwhile is resumed by the handler
        // and reads zeros. The region stays in the handler's table (marked
        // closing) until deinit: a fault raised just before the replacement
        // can reach the handler after it, and must still find the region
        // (it used to be passed on as a foreign SIGBUS: the process died,
        // seen under ASan in operationsRacingCloseEndCleanly). The slot is
        // never registered with a userfaultfd again (fork, recovery).
        if (try? Kernel.replaceWithEmpty(baseAddress, length: size)) == nil {
            // Cannot happen for a range we own; fall back to dropping the contents.
            try? Kernel.advise(baseAddress, length: size, .dontNeed)
        }
        TestHook.fire(Int32(VR_HOOK_CLOSE_REPLACED), UnsafeRawPointer(baseAddress))
    }

    /// Bytes of bookkeeping this region keeps per page: its volatility map
    /// (2 bits a page plus a 32-bit discard generation per 32 pages, 0.009 %
    /// of 4 KiB pages, on the heap). Each region also has a fixed cost that
    /// does not grow with its size: this object (about twenty words), 8 bytes
    /// of counters, and a slot in the fault handler's static table.
    public var metadataBytes: Int { VolatilityMap.byteCount(pages: geometry.pageCount) }

    /// Whether `close()` was called.
    public var isClosed: Bool { closedFlag.load(ordering: .relaxed) }

    /// Runs `change` (a discard, a protection, a registration: anything that
    /// changes the region's mappings) unless the region is closed, in which
    /// case it does nothing: the memory is being, or has been, replaced.
    @inline(__always)
    func changingMappings(_ change: () -> Void) {
        vr_region_change_begin(slot)
        defer { vr_region_change_end(slot) }
        if closedFlag.load(ordering: .sequentiallyConsistent) { return }
        change()
    }

    @inline(__always)
    func checkOpen() throws(VRangeError) {
        if closedFlag.load(ordering: .relaxed) { throw .closed }
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
        TestHook.fire(Int32(VR_HOOK_REGION_CHECKED), UnsafeRawPointer(baseAddress))
        let c = map.census(pages)
        var volatile = c.volatile, purged = c.locked + c.purged
        if isKernelDriven {
            let reclaimed = reclaimedVolatilePages(in: pages).count
            volatile -= reclaimed
            purged += reclaimed
        }
        return RegionStatus(
            bytes: range.count, volatileBytes: volatile << geometry.pageShift,
            purgedBytes: purged << geometry.pageShift)
    }

    /// The state of every page of `range`, in order: one of the four states
    /// of `PageState` (`.locked` only while an operation holds the page). In
    /// kernel-driven mode a volatile page the kernel has reclaimed reads
    /// `.purged`.
    public func pageStates(_ range: Range<Int>) throws(VRangeError) -> [PageState] {
        try checkOpen()
        let pages = try geometry.pages(range)
        TestHook.fire(Int32(VR_HOOK_REGION_CHECKED), UnsafeRawPointer(baseAddress))
        var states = pages.map { map.state(ofPage: $0) }
        if isKernelDriven {
            for page in reclaimedVolatilePages(in: pages) { states[page - pages.lowerBound] = .purged }
        }
        return states
    }
}
