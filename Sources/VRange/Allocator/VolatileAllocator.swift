// VolatileAllocator: purgeable buffers carved from volatile segments
// (DESIGN.md §8). Large buffers are page spans with best-fit free lists and a
// delayed release; small ones share slab pages. Threads are spread over
// arenas with their own segments; lock/unlock takes no lock at all.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An allocator of `PurgeableBuffer`s: memory that is volatile (purgeable)
/// while unlocked.
///
/// - Buffers of a page or more are page spans carved from segments (one
///   `VolatileRegion` each, 4 MiB at first, doubling per arena up to
///   `Options.maxSegmentBytes`; larger buffers get a segment of their own).
///   Freed spans are kept in 256 size-bucketed lists (best fit, most
///   recently freed first, merged with free neighbours) and stay resident:
///   allocate/free churn costs no system call. Spans free for longer than
///   `Options.releaseDelay` are purged (`MADV_DONTNEED`) by the release
///   clock, one thread per process shared by every allocator, whether or not
///   the allocator is called again (also on a later free, and by
///   `releaseFreeMemory(olderThan:)`); a purger purges them first of all
///   (they are purge units of class `.veryLow`). Wholly free segments are
///   unmapped, except each arena's last one.
/// - Smaller buffers share slab pages of 11 size classes (128 B to half a
///   page). A shared page is marked volatile only when every buffer on it is
///   unlocked; a buffer whose page was purged learns it at its next lock,
///   even when a neighbour locked the page first.
/// - Each thread allocates from one of `Options.arenaCount` arenas (by order
///   of first use), each with its own segments, so buffers of different
///   threads do not share volatility-map cache lines. Allocate and free take
///   their arena's lock; `lock()`/`unlock()` of a buffer take no lock.
///
/// Thread-safe. Buffers may outlive the allocator: its segments are unmapped
/// when their last buffer is freed.
public final class VolatileAllocator: Sendable {
    /// How an allocator is set up.
    public struct Options: Sendable, Equatable {
        /// Where segments come from. Default: anonymous regions with the
        /// automatic fault mechanism; `.sharedFile` puts every buffer in a
        /// memfd that other processes can map.
        public var source: SegmentSource
        /// Size of an arena's first segment (each new one doubles, up to
        /// `maxSegmentBytes`). Default 4 MiB.
        public var segmentBytes: Int
        /// Largest shared segment; a bigger buffer gets a segment of its own.
        /// Default 64 MiB.
        public var maxSegmentBytes: Int
        /// How long freed memory stays resident for reuse before it goes back
        /// to the kernel. Default 1 second (mimalloc's purge delay is 10 ms,
        /// Chromium's discardable heap waits minutes). The release clock's
        /// thread gives it back between the delay and a quarter of it more
        /// (plus 10 ms) after the free, without any further call; spans a
        /// thread's cache or an arena's magazine kept for reuse rejoin the
        /// free lists at one round and go back at the next (within about
        /// twice the delay). In the child of a fork the clock does not run:
        /// freed memory goes back on later frees (a scan every quarter of the
        /// delay) and by `releaseFreeMemory`. Counted in whole
        /// milliseconds; a delay longer than `maxReleaseDelay` (2^31 − 1 ms,
        /// about 24.8 days) is clamped to it; a negative one is refused.
        public var releaseDelay: Duration
        /// Number of arenas (rounded up to a power of two); nil picks twice
        /// the number of online CPUs.
        public var arenaCount: Int?
        /// The class a purger sees for this allocator's unlocked buffers
        /// (free memory is always `.veryLow`). Default `.normal`.
        public var purgePriority: PurgePriority
        /// Whether each thread keeps a few spans of up to 64 pages it freed
        /// while locked (at most 8 per thread, across allocators), for its
        /// next allocation of the same size: that pair then takes no atomic
        /// operation at all. Cached spans stay within reach: purge-unit
        /// snapshots, `releaseFreeMemory`, the release delay's scan and the
        /// allocator's deinit take them out of the threads' caches that hold
        /// them (one `membarrier` system call; two at deinit, which also
        /// waits out frees in flight), and an exiting thread gives its own
        /// back. Where `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` is
        /// unavailable (before Linux 4.14, or refused by a seccomp filter)
        /// there are no thread caches. Default true.
        public var threadCache: Bool

        public init(
            source: SegmentSource = .anonymous(), segmentBytes: Int = 4 << 20, maxSegmentBytes: Int = 64 << 20,
            releaseDelay: Duration = .seconds(1), arenaCount: Int? = nil, purgePriority: PurgePriority = .normal,
            threadCache: Bool = true
        ) {
            self.source = source
            self.segmentBytes = segmentBytes
            self.maxSegmentBytes = maxSegmentBytes
            self.releaseDelay = releaseDelay
            self.arenaCount = arenaCount
            self.purgePriority = purgePriority
            self.threadCache = threadCache
        }
    }

    /// What an allocator holds, summed over its arenas.
    public struct Statistics: Sendable, Equatable {
        /// Buffers allocated and not freed.
        public var liveBuffers: Int
        /// Their bytes, rounded to slot or page sizes.
        public var liveBytes: Int
        /// Segments mapped now, and their bytes.
        public var segments: Int
        public var mappedBytes: Int
        /// Segments mapped and unmapped since the allocator was made.
        public var segmentsCreated: Int
        public var segmentsDropped: Int
        /// Free memory given back to the kernel so far (release delay, purges
        /// of free spans, unmapped segments).
        public var releasedBytes: Int
        /// Bookkeeping outside the segments (per-page tags and words).
        public var metadataBytes: Int
    }

    /// The longest release delay (and age for `releaseFreeMemory`) counted:
    /// 2^31 − 1 ms (about 24.8 days); longer ones are clamped to it.
    public static let maxReleaseDelay = Duration.milliseconds(Int64(Int32.max))

    /// The largest buffer: the machine's physical memory (and 2^32 − 1
    /// pages). A buffer that could never be resident whole is refused with
    /// `.invalidSize`, as are segment sizes above it.
    public static var maxBufferSize: Int { Kernel.physicalMemoryBytes }

    public let options: Options
    let config: AllocatorConfig
    let arenas: [Arena]
    /// The arenas' magazines, by arena index: plain values, so that the
    /// allocation fast path retains nothing.
    nonisolated(unsafe) let magazines: UnsafeMutablePointer<Magazine>

    /// The system page size: buffers of at least this size are page spans.
    public var pageSize: Int { config.pageSize }
    /// The largest buffer that shares a page with others.
    public var maxSmallBufferSize: Int { config.classes.maxSmall }

    /// Makes an allocator. Nothing is mapped until the first allocation.
    ///
    /// - Throws: `.invalidSize` when a segment size is not positive or above
    ///   `maxBufferSize`, or the first segment is larger than
    ///   `maxSegmentBytes`, or when `arenaCount` is not in 1...4096;
    ///   `.invalidConfiguration` for a negative `releaseDelay`;
    ///   `.unsupported` for a `.sharedFile` source with huge pages or a
    ///   private mapping.
    public init(options: Options = Options()) throws(VRangeError) {
        let pageSize = Kernel.pageSize
        guard options.segmentBytes > 0 else { throw .invalidSize(options.segmentBytes) }
        guard options.maxSegmentBytes >= options.segmentBytes else { throw .invalidSize(options.maxSegmentBytes) }
        guard options.maxSegmentBytes <= Self.maxBufferSize else { throw .invalidSize(options.maxSegmentBytes) }
        guard options.releaseDelay >= .zero else {
            throw .invalidConfiguration("releaseDelay \(options.releaseDelay): must not be negative")
        }
        guard (1...4096).contains(options.arenaCount ?? 1) else { throw .invalidSize(options.arenaCount ?? 0) }
        if let reason = options.source.unsupportedReason { throw .unsupported(reason) }
        // A power of two, so that picking a thread's arena is a mask.
        var arenaCount = 1
        while arenaCount < (options.arenaCount ?? min(64, 2 * Kernel.onlineCPUs)) { arenaCount <<= 1 }
        let first = try PageGeometry.roundedSize(options.segmentBytes, pageSize: pageSize)
        let most = try PageGeometry.roundedSize(options.maxSegmentBytes, pageSize: pageSize)
        let config = AllocatorConfig(
            source: options.source, pageSize: pageSize, pageShift: pageSize.trailingZeroBitCount,
            classes: SizeClasses(pageSize: pageSize), firstSegmentBytes: first, maxSegmentBytes: most,
            releaseDelayMs: Self.clampedMilliseconds(options.releaseDelay), priority: options.purgePriority,
            cacheToken: options.threadCache ? ThreadCache.newToken() : 0)
        self.options = options
        self.config = config
        let arenas = (0..<arenaCount).map { Arena(index: $0, config: config) }
        self.arenas = arenas
        magazines = .allocate(capacity: arenaCount)
        magazines.initialize(from: arenas.map(\.magazine), count: arenaCount)
    }

    deinit {
        if config.cacheToken != 0 {
            // Closed first: a free that races with this keeps nothing in a
            // thread cache after the drain (vr_tcache_put checks, under the
            // drain's handshake).
            for arena in arenas { arena.magazine.close() }
            ThreadCache.drain(token: config.cacheToken, closing: true)
        }
        for arena in arenas { arena.abandon() }
        magazines.deallocate()
    }

    /// The calling thread's arena index.
    @inline(__always)
    var currentArenaIndex: Int { Kernel.ThreadIndex.current & (arenas.count - 1) }

    /// Allocates a buffer of `byteCount` bytes. It starts **locked**
    /// (non-volatile); its contents are unspecified (zero where the memory is
    /// fresh or was released, else what an earlier buffer left there).
    ///
    /// - Throws: `.invalidSize` for a size of zero or less or above
    ///   `maxBufferSize`; `.system` or `.unsupported` when a new segment
    ///   cannot be mapped (out of memory, or the process's 4096 regions are
    ///   in use).
    public func allocate(byteCount: Int) throws(VRangeError) -> PurgeableBuffer {
        guard byteCount > 0 else { throw .invalidSize(byteCount) }
        if byteCount > config.classes.maxSmall && byteCount <= Magazine.maxPages << config.pageShift {
            let pages = (byteCount + config.pageSize - 1) >> config.pageShift
            // Fastest path: a span this thread freed, plain loads and stores.
            if pages <= ThreadCache.maxPages && config.cacheToken != 0,
               let (seg, page) = ThreadCache.take(token: config.cacheToken, pages: pages) {
                return PurgeableBuffer(segment: seg, offset: page << config.pageShift, count: byteCount, slot: -1)
            }
            // Fast path: a hot span of this size, one CAS, no lock.
            if let (seg, page) = magazines[currentArenaIndex].take(pages: pages) {
                return PurgeableBuffer(segment: seg, offset: page << config.pageShift, count: byteCount, slot: -1)
            }
        }
        let arena = arenas[currentArenaIndex]
        if let c = config.classes.classFor(byteCount) {
            let (seg, page, slot) = try arena.allocateSlot(sizeClass: c)
            let offset = page << config.pageShift + slot * config.classes.sizes[c]
            return PurgeableBuffer(segment: .passUnretained(seg), offset: offset, count: byteCount, slot: slot)
        }
        let bytes = try PageGeometry.roundedSize(byteCount, pageSize: config.pageSize)
        guard bytes <= Int(UInt32.max) << config.pageShift, bytes <= Self.maxBufferSize else { throw .invalidSize(byteCount) }
        let (seg, page) = try arena.allocateSpan(pages: bytes >> config.pageShift)
        return PurgeableBuffer(segment: .passUnretained(seg), offset: page << config.pageShift, count: byteCount, slot: -1)
    }

    /// Gives free memory that has been free for at least `age` back to the
    /// kernel now (`MADV_DONTNEED` of free spans; wholly free segments are
    /// unmapped, except each arena's last one). Memory in use is never
    /// touched. A negative age counts as zero; one above `maxReleaseDelay`
    /// is clamped to it.
    ///
    /// - Returns: the bytes released.
    @discardableResult
    public func releaseFreeMemory(olderThan age: Duration = .zero) -> Int {
        let ms = Self.clampedMilliseconds(age)
        drainThreadCaches()
        return arenas.reduce(0) { $0 + $1.release(olderThanMs: ms) }
    }

    /// Whole milliseconds of `d`, in 0...`maxReleaseDelay` (saturating: no
    /// duration traps).
    static func clampedMilliseconds(_ d: Duration) -> UInt32 {
        let (seconds, attoseconds) = d.saturatingComponents
        if seconds < 0 || (seconds == 0 && attoseconds < 0) { return 0 }
        let limit = Int64(Int32.max)
        if seconds >= limit / 1000 + 1 { return UInt32(limit) }
        return UInt32(min(limit, seconds * 1000 + attoseconds / 1_000_000_000_000_000))
    }

    /// Takes this allocator's spans out of every thread's cache, back to
    /// their arenas.
    func drainThreadCaches() {
        ThreadCache.drain(token: config.cacheToken)
    }

    /// A snapshot of what the allocator holds.
    ///
    /// Taken while other threads allocate and free, it is not one instant's
    /// state, but every figure keeps its invariants under every
    /// interleaving: `liveBuffers` and `liveBytes` are never negative and
    /// count the same buffers (no span is counted twice, as live or as
    /// free); a buffer allocated or freed while the snapshot runs counts as
    /// live or as free, once. Spans kept for reuse (an arena's magazine, a
    /// thread's cache) count as free. The thread caches' count is checked
    /// against the caches after the arenas' counts (a cached span that moved
    /// into an arena meanwhile was counted twice), and the snapshot is taken
    /// again when one moved; after 8 tries that all saw a
    /// move (threads that keep allocating from their caches), the spans in
    /// thread caches count as live in that snapshot. Each arena's figures
    /// are read under its lock.
    public var statistics: Statistics {
        let token = config.cacheToken
        guard token != 0 else { return arenaStatistics() }
        var s: Statistics
        var attempt = 0
        repeat {
            attempt += 1
            let cached = ThreadCache.Census(token: token)
            s = arenaStatistics()
            if cached.unchanged {
                // The counted spans stayed in the caches while the arenas
                // were read: in no magazine, counted live by their arenas.
                s.liveBuffers -= cached.spans
                s.liveBytes -= cached.pages << config.pageShift
                return s
            }
            sched_yield()
        } while attempt < Self.statisticsTries
        return s  // the thread caches' spans count as live
    }

    /// Snapshots taken before the thread-cache spans count as live.
    static let statisticsTries = 8

    /// The arenas' figures, spans in thread caches counted as live.
    private func arenaStatistics() -> Statistics {
        var s = Statistics(liveBuffers: 0, liveBytes: 0, segments: 0, mappedBytes: 0, segmentsCreated: 0,
                           segmentsDropped: 0, releasedBytes: 0, metadataBytes: 0)
        for arena in arenas {
            TestHook.entered(.statistics)
            arena.state.withLock { a in
                TestHook.locked(.statistics)
                // Spans in a magazine count as free. Counted under the lock:
                // a drain (which needs it) between this count and the
                // arena's counters subtracted a span twice.
                let cached = arena.magazine.census(pageShift: config.pageShift)
                s.liveBuffers += a.liveBuffers - cached.spans
                s.liveBytes += a.liveBytes - cached.bytes
                s.segments += a.segmentCount
                s.mappedBytes += a.mappedBytes
                s.segmentsCreated += a.segmentsCreated
                s.segmentsDropped += a.segmentsDropped
            }
            s.releasedBytes += arena.releasedBytes.load(ordering: .relaxed)
        }
        s.metadataBytes = (s.mappedBytes >> config.pageShift) * Segment.metadataBytesPerPage
        return s
    }
}

extension Kernel {
    /// The machine's physical memory in bytes (sysconf: _SC_PHYS_PAGES
    /// pages), capped at 2^32 − 1 pages (what a span's tag can count).
    static let physicalMemoryBytes: Int = {
        let pages = Int(sysconf(Int32(_SC_PHYS_PAGES)))
        return min(pages > 0 ? pages : Int(UInt32.max), Int(UInt32.max)) * pageSize
    }()
}
