// An arena: the segments one group of threads allocates from, and their span
// lists, under one lock. Threads are spread over arenas (VolatileAllocator
// picks by thread), so buffers of different threads live in different
// segments, hence different regions and volatility-map cache lines. The lock
// is taken by allocate and free only: lock/unlock of a buffer never takes it.
import CVRange
import Synchronization

/// The operations of an arena, as test hooks name them (the argument of
/// VR_HOOK_ALLOC_ENTERED and VR_HOOK_ALLOC_LOCKED).
enum AllocHookOp: Int {
    case allocateSpan = 1, allocateSlot, freeSpan, freeSlot, release, collectUnits, purgeUnit, statistics, abandon,
         releaseClock
}

extension TestHook {
    /// An arena operation began, before it takes the arena's lock.
    @inline(__always)
    static func entered(_ op: AllocHookOp) { fire(Int32(VR_HOOK_ALLOC_ENTERED), op.rawValue) }
    /// An arena operation holds the arena's lock.
    @inline(__always)
    static func locked(_ op: AllocHookOp) { fire(Int32(VR_HOOK_ALLOC_LOCKED), op.rawValue) }
}

/// What every arena of an allocator shares.
struct AllocatorConfig: Sendable {
    let source: SegmentSource
    let pageSize: Int
    let pageShift: Int
    let classes: SizeClasses
    let firstSegmentBytes: Int
    let maxSegmentBytes: Int
    let releaseDelayMs: UInt32
    let priority: PurgePriority
    /// The allocator's thread-cache token (ThreadCache), 0 without caches.
    let cacheToken: UInt64
}

/// Arena-locked state.
struct ArenaState {
    var lists: SpanLists
    var segmentCount = 0
    var nextSegmentBytes: Int
    var lastReleaseScanMs: UInt32 = 0
    var abandoned = false
    // Statistics.
    var liveBuffers = 0
    var liveBytes = 0
    var mappedBytes = 0
    var segmentsCreated = 0
    var segmentsDropped = 0
}

final class Arena: @unchecked Sendable {
    let index: Int
    let config: AllocatorConfig
    let state: Locked<ArenaState>
    /// Bytes given back to the kernel by the release delay and by purges.
    let releasedBytes = Atomic<Int>(0)
    /// Hot spans freed while locked (see Magazine).
    let magazine = Magazine()
    /// This arena in the allocator's registry (tcache.c): the at-fork
    /// handlers take its lock (layer VR_FORK_ALLOCATOR) and reset its
    /// release word in a fork child.
    private let forkLink: UnsafeMutablePointer<vr_alloc_link>

    init(index: Int, config: AllocatorConfig) {
        self.index = index
        self.config = config
        state = Locked(ArenaState(lists: SpanLists(classCount: config.classes.sizes.count),
                                 nextSegmentBytes: config.firstSegmentBytes))
        forkLink = .allocate(capacity: 1)
        forkLink.initialize(to: vr_alloc_link(
            mutex: state.mutex,
            release_flag: UnsafeMutableRawPointer(magazine.words + Magazine.releaseWord).assumingMemoryBound(to: UInt64.self),
            prev: nil, next: nil))
        vr_alloc_link_arena(forkLink)
    }

    deinit {
        // Out of the registry before the lock and the magazine go.
        vr_alloc_unlink_arena(forkLink)
        forkLink.deallocate()
        magazine.deallocate()
    }

    // MARK: - The magazine (lock-free fast path of page spans)

    /// Under the lock: moves the magazine's spans to the free lists.
    func drainMagazine(_ s: inout ArenaState) {
        let now = Self.nowMs()
        magazine.drain { local, page, pages in
            let seg = s.lists.segments[local]!
            seg.liveBuffers -= 1
            s.liveBuffers -= 1
            s.liveBytes -= pages << config.pageShift
            s.lists.freeSpan(seg, page, pages, flags: 0, now: now)
        }
    }

    /// Coarse milliseconds (wrapping) for free-span ages.
    @inline(__always)
    static func nowMs() -> UInt32 { UInt32(truncatingIfNeeded: Kernel.coarseNanoseconds() / 1_000_000) }

    // MARK: - Segments

    /// Maps a segment able to hold `pages` pages and adds it as one free span.
    private func addSegment(_ s: inout ArenaState, pages: Int) throws(VRangeError) -> Segment {
        let want = pages << config.pageShift
        let dedicated = want > config.maxSegmentBytes
        let bytes = dedicated ? want : max(s.nextSegmentBytes, want)
        let seg = try Segment(arena: self, source: config.source, byteCount: bytes, dedicated: dedicated)
        if !dedicated { s.nextSegmentBytes = min(s.nextSegmentBytes * 2, config.maxSegmentBytes) }
        if let hole = s.lists.segments.firstIndex(where: { $0 == nil }) {
            seg.localIndex = hole
            s.lists.segments[hole] = seg
        } else {
            seg.localIndex = s.lists.segments.count
            s.lists.segments.append(seg)
        }
        if seg.localIndex < Magazine.tableCapacity { magazine.table[seg.localIndex] = Unmanaged.passUnretained(seg) }
        s.segmentCount += 1
        s.segmentsCreated += 1
        s.mappedBytes += seg.pageCount << config.pageShift
        // Fresh memory holds nothing to give back: "released" keeps it out
        // of the release delay and of purge units until it has been used.
        s.lists.insertFree(seg, 0, seg.pageCount, flags: FreeFlags.released, freedAt: Self.nowMs())
        return seg
    }

    /// Removes a wholly free segment and returns the table's reference to
    /// it, which the caller drops outside the lock (the region is unmapped
    /// when the last reference goes). The caller must keep that reference,
    /// not `seg`: a free reaches `seg` unretained through its buffer, and
    /// the table's was the last strong one (retaining `seg` after this call,
    /// as `[seg]` did, retained a freed object: the benchmark's cache
    /// teardown crashed in 5 of 8 runs).
    @discardableResult
    private func dropSegment(_ s: inout ArenaState, _ seg: Segment) -> Segment {
        let owned = s.lists.segments[seg.localIndex]!
        s.lists.unlinkAll(seg)
        s.lists.segments[seg.localIndex] = nil
        if seg.localIndex < Magazine.tableCapacity { magazine.table[seg.localIndex] = nil }
        s.segmentCount -= 1
        s.segmentsDropped += 1
        s.mappedBytes -= seg.pageCount << config.pageShift
        return owned
    }

    // MARK: - Allocate

    /// A span of `pages` pages, locked (non-volatile). Returns the segment
    /// and first page.
    func allocateSpan(pages: Int) throws(VRangeError) -> (Segment, Int) {
        TestHook.entered(.allocateSpan)
        let (seg, page, mayBeVolatile) = try state.withLock { s throws(VRangeError) -> (Segment, Int, Bool) in
            TestHook.locked(.allocateSpan)
            var found = s.lists.takeFree(pages)
            if found == nil {
                let seg = try addSegment(&s, pages: pages)
                found = s.lists.takeFree(pages)
                precondition(found?.seg === seg, "VRange allocator: a new segment did not fit its request")
            }
            let f = found!
            s.lists.split(f.seg, f.page, pages, spanPages: f.spanPages, flags: f.flags, freedAt: f.seg.tags[f.page].aux)
            s.lists.setTags(f.seg, f.page, pages, kind: .large)
            f.seg.liveBuffers += 1
            s.liveBuffers += 1
            s.liveBytes += pages << config.pageShift
            return (f.seg, f.page, f.flags & FreeFlags.mayBeVolatile != 0)
        }
        // Outside the lock: the span is ours now. Pages a release or a purger
        // marked volatile come back non-volatile (zero-filled if purged).
        if mayBeVolatile { _ = seg.backing.markNonVolatile(seg.bytes(pages: page, pages)) }
        return (seg, page)
    }

    /// A slot of size class `c`, locked. Returns the segment, page and slot.
    func allocateSlot(sizeClass c: Int) throws(VRangeError) -> (Segment, Int, Int) {
        let slots = config.classes.slotsPerPage(c)
        TestHook.entered(.allocateSlot)
        let (seg, page, slot) = try state.withLock { s throws(VRangeError) -> (Segment, Int, Int) in
            TestHook.locked(.allocateSlot)
            if s.lists.partial[c].isEmpty {
                var found = s.lists.takeFree(1)
                if found == nil {
                    _ = try addSegment(&s, pages: 1)
                    found = s.lists.takeFree(1)
                }
                let f = found!
                s.lists.split(f.seg, f.page, 1, spanPages: f.spanPages, flags: f.flags, freedAt: f.seg.tags[f.page].aux)
                s.lists.setTags(f.seg, f.page, 1, kind: .slab, aux: UInt32(truncatingIfNeeded: (1 << UInt64(slots)) - 1))
                f.seg.tags[f.page].sizeClass = UInt8(c)
                // No buffer is on this page: a plain store is safe.
                f.seg.pageWords[f.page].store(f.flags & FreeFlags.mayBeVolatile != 0 ? SlabWord.volatile : 0,
                                              ordering: .relaxed)
                s.lists.addPartial(f.seg, f.page, sizeClass: c)
            }
            let r = s.lists.partial[c][s.lists.partial[c].count - 1]
            let seg = s.lists.segments[refSegment(r)]!
            let page = refPage(r)
            let free = seg.tags[page].aux
            let slot = free.trailingZeroBitCount
            seg.tags[page].aux = free & ~(1 << UInt32(slot))
            if seg.tags[page].aux == 0 { s.lists.removePartial(seg, page, sizeClass: c) }
            seg.liveBuffers += 1
            s.liveBuffers += 1
            s.liveBytes += config.classes.sizes[c]
            return (seg, page, slot)
        }
        // The slot starts locked; whatever it held before is not its
        // contents, so its lost bit is cleared and ignored.
        _ = seg.lockSlot(page: page, slot: slot)
        return (seg, page, slot)
    }

    // MARK: - Free

    /// Frees a span (`wasLocked`: its pages are non-volatile, else volatile).
    func freeSpan(_ seg: Segment, page: Int, pages: Int, wasLocked: Bool) {
        // The caller reaches this arena through the segment, unretained; the
        // free may drop that segment (the arena of a dead allocator), and
        // with it the last reference to this arena: hold one to the end.
        let me = Unmanaged.passRetained(self)
        defer { me.release() }
        let now = Self.nowMs()
        seg.stamp(page: page)
        TestHook.entered(.freeSpan)
        let work: ReleaseWork = state.withLock { s in
            TestHook.locked(.freeSpan)
            if !seg.lostAtBegin.isEmpty { seg.lostAtBegin[page] = nil }
            seg.liveBuffers -= 1
            s.liveBuffers -= 1
            s.liveBytes -= pages << config.pageShift
            s.lists.freeSpan(seg, page, pages, flags: wasLocked ? 0 : FreeFlags.mayBeVolatile, now: now)
            return afterFree(&s, seg, now: now)
        }
        if !work.isEmpty { finishRelease(work) }
        noteFree()
    }

    /// Frees a slot (already unlocked on its page word if it was locked).
    func freeSlot(_ seg: Segment, page: Int, slot: Int) {
        let me = Unmanaged.passRetained(self)  // see freeSpan
        defer { me.release() }
        let now = Self.nowMs()
        TestHook.entered(.freeSlot)
        let work: ReleaseWork = state.withLock { s in
            TestHook.locked(.freeSlot)
            let c = Int(seg.tags[page].sizeClass)
            let all = UInt32(truncatingIfNeeded: (1 << UInt64(config.classes.slotsPerPage(c))) - 1)
            let before = seg.tags[page].aux
            seg.tags[page].aux = before | (1 << UInt32(slot))
            seg.liveBuffers -= 1
            s.liveBuffers -= 1
            s.liveBytes -= config.classes.sizes[c]
            if before == 0 { s.lists.addPartial(seg, page, sizeClass: c) }
            if seg.tags[page].aux == all && s.lists.partial[c].count > 1 {
                // An empty slab page goes back to the free spans (one empty
                // page per class stays, so that churn does not convert pages).
                s.lists.removePartial(seg, page, sizeClass: c)
                let volatile = seg.pageWords[page].load(ordering: .acquiring) & SlabWord.volatile != 0
                s.lists.freeSpan(seg, page, 1, flags: volatile ? FreeFlags.mayBeVolatile : 0, now: now)
            }
            return afterFree(&s, seg, now: now)
        }
        if !work.isEmpty { finishRelease(work) }
        noteFree()
    }

    /// After a free, under the lock: an abandoned arena drops an empty
    /// segment at once; otherwise the release delay runs now and then.
    /// Returns segments to drop outside the lock (and purges already done).
    private func afterFree(_ s: inout ArenaState, _ seg: Segment, now: UInt32) -> ReleaseWork {
        if s.abandoned && seg.liveBuffers == 0 {
            let left = unreleasedRanges(seg)
            return ReleaseWork(purges: [], drops: [(dropSegment(&s, seg), left)])
        }
        let period = max(config.releaseDelayMs / 4, 1)
        if now &- s.lastReleaseScanMs >= period {
            s.lastReleaseScanMs = now
            var work = collectExpired(&s, now: now, delayMs: config.releaseDelayMs)
            // Spans idle in threads' caches rejoin the free lists (and age
            // from now), so that the release delay reaches them too.
            work.drainCaches = config.cacheToken != 0
            return work
        }
        return ReleaseWork()
    }

    // MARK: - Ranges lost at a failed beginContentAccess

    /// Keeps the ranges a failed `beginContentAccess` of the span at `page`
    /// found purged, for its next `lock()`.
    func rememberLost(_ seg: Segment, page: Int, _ ranges: [Range<Int>]) {
        state.withLock { _ in
            let earlier = seg.lostAtBegin[page] ?? []
            seg.lostAtBegin[page] = mergedRanges(earlier, ranges)
        }
    }

    /// Takes them back (nil: none kept).
    func takeLost(_ seg: Segment, page: Int) -> [Range<Int>]? {
        state.withLock { _ in seg.lostAtBegin.removeValue(forKey: page) }
    }

    // MARK: - Delayed release

    /// Under the lock: free spans older than `delayMs` are marked volatile
    /// (so that no allocation can pass them unnoticed) and queued for purging;
    /// wholly free segments are queued for dropping, except an arena's last
    /// ordinary segment.
    func collectExpired(_ s: inout ArenaState, now: UInt32, delayMs: UInt32) -> ReleaseWork {
        drainMagazine(&s)
        var candidates: [SpanRef] = []
        var soonest = UInt32.max
        for b in 0..<SpanLists.bucketCount where !s.lists.buckets[b].isEmpty {
            for r in s.lists.buckets[b] {
                let tag = s.lists.segments[refSegment(r)]!.tags[refPage(r)]
                guard tag.flags & FreeFlags.released == 0 else { continue }
                let age = now &- tag.aux
                if age >= delayMs { candidates.append(r) } else { soonest = min(soonest, delayMs - age) }
            }
        }
        var work = ReleaseWork()
        if soonest != .max { work.nextExpiryMs = soonest }
        for r in candidates {
            let seg = s.lists.segments[refSegment(r)]!
            let page = refPage(r)
            let pages = Int(seg.tags[page].pages)
            if pages == seg.pageCount && seg.liveBuffers == 0 && (seg.dedicated || s.segmentCount > 1) {
                let left = unreleasedRanges(seg)
                work.drops.append((dropSegment(&s, seg), left))
                continue
            }
            let range = seg.bytes(pages: page, pages)
            seg.backing.markVolatile(range)
            seg.tags[page].flags |= FreeFlags.released | FreeFlags.mayBeVolatile
            seg.tags[page + pages - 1].flags = seg.tags[page].flags
            work.purges.append((seg, range))
        }
        return work
    }

    /// Under the lock, before a wholly free segment is dropped: the byte
    /// ranges of its pages not given back yet (free spans not released,
    /// empty slab pages). Released spans are out: their pages were purged
    /// (and counted) or were never used.
    func unreleasedRanges(_ seg: Segment) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var p = 0
        while p < seg.pageCount {
            let tag = seg.tags[p]
            let pages = tag.kind == .slab ? 1 : max(1, Int(tag.pages))
            if tag.kind != .free || tag.flags & FreeFlags.released == 0 { out.append(seg.bytes(pages: p, pages)) }
            p += pages
        }
        return out
    }

    /// Outside the lock: purge what `collectExpired` queued; drop segments.
    /// Returns the bytes this call gave back (also added to `releasedBytes`).
    ///
    /// A dropped segment's pages not given back yet are marked volatile and
    /// purged before its last reference goes (unmapping it), and only what
    /// that purge took is counted: a page is counted once, by whichever
    /// purge discards it — this one, an earlier release's, or another
    /// thread's purge of a released span still in flight (the page's lock
    /// in the volatility map decides). Counting the whole mapping counted
    /// the spans released before again (issue 18 follow-up, C3).
    @discardableResult
    func finishRelease(_ work: consuming ReleaseWork) -> Int {
        if work.drainCaches { ThreadCache.drain(token: config.cacheToken) }
        var released = 0
        for (seg, range) in work.purges { released += seg.backing.purge(range) }
        for (seg, left) in work.drops {
            for range in left { seg.backing.markVolatile(range) }
            released += seg.backing.purge(seg.bytes(pages: 0, seg.pageCount))
        }
        if released > 0 { releasedBytes.add(released, ordering: .relaxed) }
        return released
    }

    /// Releases free spans freed at least `delayMs` ago now. Returns the
    /// bytes this call gave back to the kernel (not what other threads
    /// released meanwhile).
    func release(olderThanMs delayMs: UInt32) -> Int {
        TestHook.entered(.release)
        let work: ReleaseWork = state.withLock { s in
            TestHook.locked(.release)
            let now = Self.nowMs()
            s.lastReleaseScanMs = now
            return collectExpired(&s, now: now, delayMs: delayMs)
        }
        return finishRelease(work)
    }

    /// The allocator is gone: drop every segment without live buffers now,
    /// the others when their last buffer is freed. Segments keep the arena
    /// alive until then.
    func abandon() {
        TestHook.entered(.abandon)
        let drop: [Segment] = state.withLock { s in
            TestHook.locked(.abandon)
            s.abandoned = true
            // Closed first, so that a free racing with this cannot leave a
            // span in the magazine after the drain (its segment would stay).
            magazine.close()
            drainMagazine(&s)
            var out: [Segment] = []
            for case let seg? in s.lists.segments where seg.liveBuffers == 0 {
                out.append(dropSegment(&s, seg))
            }
            return out
        }
        _ = drop
    }
}

/// Release work found under the lock and done after it: purges of expired
/// free spans (already marked volatile) and segments to drop.
struct ReleaseWork {
    var purges: [(Segment, Range<Int>)] = []
    /// Segments to drop, with the ranges of their pages not given back yet.
    var drops: [(Segment, [Range<Int>])] = []
    /// Whether to drain the allocator's thread caches (outside the lock).
    var drainCaches = false
    /// In how many ms the soonest free span left unreleased expires (nil:
    /// none is left).
    var nextExpiryMs: UInt32?
    var isEmpty: Bool { purges.isEmpty && drops.isEmpty && !drainCaches }
}

/// The union of two lists of ranges, ascending and disjoint (touching
/// ranges merged).
func mergedRanges(_ a: [Range<Int>], _ b: [Range<Int>]) -> [Range<Int>] {
    var out: [Range<Int>] = []
    for r in (a + b).sorted(by: { $0.lowerBound < $1.lowerBound }) where !r.isEmpty {
        if let last = out.last, r.lowerBound <= last.upperBound {
            out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
        } else {
            out.append(r)
        }
    }
    return out
}
