// Table test of issue 18, class 5 ("a report be wrong") for the cache and
// the allocator: each row is one operation held at a point in its middle
// (a hook, or the rebuild closure) × one interleaving run by other threads
// meanwhile (more threads than cores); the statistics afterwards must be
// exact (every lookup counted once, gauges equal to what is stored), and
// after removeAll every gauge of the cache and of its allocator is 0.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The operation held (thread A).
enum StatsOp: String, CaseIterable, Sendable {
    /// `bytes(forKey:)`, `copyBytes(forKey:into:)`, `withBytes(forKey:_:)`
    /// of a present key, held inside the shard's mutex before the lock of
    /// the entry's buffer.
    case bytes, copyBytes, withBytes
    /// `fetchBytes` of a purged key, held inside its rebuild closure.
    case fetchBytes
    /// `setBytes` of a new key, held after its insert (before eviction).
    case setBytes
    /// `setBytes` of a new key that takes the cache over its cost limit,
    /// held before its eviction.
    case setBytesEvicting
    /// `removeValue` of a present key, held inside the shard's mutex.
    case removeValue

    /// The key the operation (and the interleaving) uses.
    var key: Int { self == .setBytes || self == .setBytesEvicting ? 2 : 1 }
}

/// What other threads do while the operation is held.
enum StatsInterleaving: String, CaseIterable, Sendable {
    /// Purge every unit of the cache's allocator.
    case purge
    /// Remove the operation's key.
    case remove
    /// Set the operation's key (2000 bytes).
    case set
    /// Four threads read the operation's key (fetchBytes for the fetch row).
    case readers
}

/// Exact statistics after a row.
struct StatsExpectation: Equatable, CustomStringConvertible {
    var hits = 0, misses = 0, purgedMisses = 0, rebuilds = 0, coalesced = 0, evictions = 0
    var entries = 0, totalCost = 0, resident = 0, purged = 0
    init(_ s: CacheStatistics) {
        hits = s.hits; misses = s.misses; purgedMisses = s.purgedMisses; rebuilds = s.rebuilds
        coalesced = s.coalescedRequests; evictions = s.evictions; entries = s.entries; totalCost = s.totalCost
        resident = s.residentBytes; purged = s.purgedBytes
    }
    init(hits: Int = 0, misses: Int = 0, purgedMisses: Int = 0, rebuilds: Int = 0, coalesced: Int = 0, evictions: Int = 0,
         entries: Int, totalCost: Int, resident: Int? = nil, purged: Int = 0) {
        (self.hits, self.misses, self.purgedMisses, self.rebuilds, self.coalesced, self.evictions) =
            (hits, misses, purgedMisses, rebuilds, coalesced, evictions)
        (self.entries, self.totalCost, self.resident, self.purged) = (entries, totalCost, resident ?? totalCost - purged, purged)
    }
    var description: String {
        "hits \(hits) misses \(misses) purgedMisses \(purgedMisses) rebuilds \(rebuilds) coalesced \(coalesced) evictions \(evictions) entries \(entries) totalCost \(totalCost) resident \(resident) purged \(purged)"
    }
}

struct StatsRow: Sendable, CustomTestStringConvertible {
    let op: StatsOp
    let interleaving: StatsInterleaving
    var testDescription: String { "\(op.rawValue) × \(interleaving.rawValue)" }

    /// Key 1 holds 3000 bytes before the row (purged for fetchBytes); the
    /// rebuild makes 1000 bytes, setBytes stores 1500 (8000 when evicting)
    /// under key 2, the interleaving's set 2000. Cost limit 10 000.
    var expected: StatsExpectation {
        switch (op, interleaving) {
        case (.bytes, .purge), (.copyBytes, .purge), (.withBytes, .purge):
            return .init(purgedMisses: 1, entries: 0, totalCost: 0)
        case (.bytes, .remove), (.copyBytes, .remove), (.withBytes, .remove):
            return .init(hits: 1, entries: 0, totalCost: 0)
        case (.bytes, .set), (.copyBytes, .set), (.withBytes, .set):
            return .init(hits: 1, entries: 1, totalCost: 2000)
        case (.bytes, .readers), (.copyBytes, .readers), (.withBytes, .readers):
            return .init(hits: 5, entries: 1, totalCost: 3000)
        case (.fetchBytes, .purge):
            return .init(purgedMisses: 1, rebuilds: 1, entries: 1, totalCost: 1000)
        case (.fetchBytes, .remove):
            return .init(purgedMisses: 1, rebuilds: 1, entries: 0, totalCost: 0)
        case (.fetchBytes, .set):
            return .init(purgedMisses: 1, rebuilds: 1, entries: 1, totalCost: 2000)
        case (.fetchBytes, .readers):
            return .init(misses: 4, purgedMisses: 1, rebuilds: 1, coalesced: 4, entries: 1, totalCost: 1000)
        case (.setBytes, .purge):
            return .init(entries: 2, totalCost: 4500, purged: 4500)
        case (.setBytes, .remove):
            return .init(entries: 1, totalCost: 3000)
        case (.setBytes, .set):
            return .init(entries: 2, totalCost: 5000)
        case (.setBytes, .readers):
            return .init(hits: 4, entries: 2, totalCost: 4500)
        case (.setBytesEvicting, .purge):
            return .init(evictions: 1, entries: 1, totalCost: 8000, purged: 8000)
        case (.setBytesEvicting, .remove):
            return .init(entries: 1, totalCost: 3000)
        case (.setBytesEvicting, .set):
            return .init(entries: 2, totalCost: 5000)
        case (.setBytesEvicting, .readers):
            return .init(hits: 4, evictions: 1, entries: 1, totalCost: 8000)
        case (.removeValue, .purge), (.removeValue, .remove):
            return .init(entries: 0, totalCost: 0)
        case (.removeValue, .set):
            return .init(entries: 1, totalCost: 2000)
        case (.removeValue, .readers):
            return .init(misses: 4, entries: 0, totalCost: 0)
        }
    }

    /// Whether the operation is held inside a shard's mutex (the other
    /// threads' cache calls then wait for it; a purge does not).
    var heldInsideTheMutex: Bool { [.bytes, .copyBytes, .withBytes, .removeValue].contains(op) }
}

/// An allocator operation held at VR_HOOK_ALLOC_ENTERED × what another
/// thread does meanwhile.
enum AllocatorStatsRow: String, CaseIterable, Sendable {
    /// `statistics` × a purge-unit snapshot draining the magazine.
    case statisticsWhileAMagazineDrains
    /// `releaseFreeMemory` × a purger purging a free span.
    case releaseWhileAPurgerPurgesAFreeSpan
    /// `releaseFreeMemory` × the last buffer of a segment whose other span
    /// was released before is freed (the release drops the segment).
    case releaseDroppingASegmentWhoseSpanWasReleased
    /// `statistics` × a drain (releaseFreeMemory) moving a thread's cached
    /// span into the arena (5-stats2).
    case statisticsWhileAThreadCacheDrains
    /// `statistics` × a full thread cache replacing a span (the old one goes
    /// to the arena's magazine).
    case statisticsWhileAThreadCacheReplacesASpan
    /// `statistics` × the owner taking its cached span back and freeing it
    /// unlocked (into the free lists).
    case statisticsWhileACachedSpanIsFreedUnlocked

    /// `statistics` reading a magazine × its first slot's span taken and
    /// put back in a later slot (lock-free) while it reads.
    case statisticsWhileAMagazineSpanMovesSlots
    /// `statistics` × a thread cache's owner held inside its fast path: the
    /// snapshot is taken 8 times, then counts the cached spans as live.
    case statisticsWhileAThreadCacheOwnerIsInside

    /// Rows about thread caches run with them (and only where they exist).
    var threadCache: Bool { rawValue.contains("ThreadCache") || rawValue.contains("CachedSpan") }
}

@Suite("statistics table: cache and allocator", .serialized) struct StatisticsTable {
    #if DEBUG
    @Test("an operation held in its middle × an interleaving: exact statistics, all gauges 0 after removeAll",
          arguments: StatsOp.allCases.flatMap { op in StatsInterleaving.allCases.map { StatsRow(op: op, interleaving: $0) } })
    func cacheRow(_ row: StatsRow) throws {
        let cache = regressionCache(costLimit: 10_000, shards: 2)
        try cache.setBytes(cacheValue(1, 0, count: 3000), forKey: 1)
        if row.op == .fetchBytes { _ = purgeEverything(cache.allocator) }
        let gate = Gate()
        let heldTID = Atomic<Int32>(0)
        let point: CacheHookPoint? = switch row.op {
        case .bytes: .locked(.lookup)
        case .copyBytes: .locked(.copy)
        case .withBytes: .locked(.checkOut)
        case .setBytes, .setBytesEvicting: .afterStore
        case .removeValue: .locked(.remove)
        case .fetchBytes: nil
        }
        cache.testHook.set { p in
            guard p == point, currentTID() == heldTID.load(ordering: .acquiring), !gate.isOpen else { return }
            gate.hold()
        }
        defer { cache.testHook.set(nil) }
        let key = row.op.key
        let a = TestThread {
            heldTID.store(currentTID(), ordering: .releasing)
            switch row.op {
            case .bytes: _ = cache.bytes(forKey: key)
            case .copyBytes:
                var d = [UInt8](repeating: 0, count: 3000)
                _ = d.withUnsafeMutableBytes { cache.copyBytes(forKey: key, into: $0) }
            case .withBytes: _ = cache.withBytes(forKey: key) { $0.count }
            case .fetchBytes: _ = try? cache.fetchBytes(forKey: key) { _ in gate.hold(); return [UInt8](repeating: 1, count: 1000) }
            case .setBytes: try! cache.setBytes([UInt8](repeating: 2, count: 1500), forKey: key)
            case .setBytesEvicting: try! cache.setBytes([UInt8](repeating: 2, count: 8000), forKey: key)
            case .removeValue: cache.removeValue(forKey: key)
            }
        }
        #expect(gate.waitReached(), "\(row.testDescription): the operation reached its window")
        var others: [TestThread] = []
        switch row.interleaving {
        case .purge: _ = purgeEverything(cache.allocator)
        case .remove: others.append(TestThread { cache.removeValue(forKey: key) })
        case .set: others.append(TestThread { try! cache.setBytes([UInt8](repeating: 3, count: 2000), forKey: key) })
        case .readers:
            for _ in 0..<4 {
                others.append(TestThread {
                    if row.op == .fetchBytes {
                        _ = try? cache.fetchBytes(forKey: key) { _ in [9] }
                    } else {
                        _ = cache.bytes(forKey: key)
                    }
                })
            }
        }
        if !row.heldInsideTheMutex {
            // The others run to their end (or, for a fetch, join its flight)
            // while the operation is held.
            if row.op == .fetchBytes && row.interleaving == .readers {
                #expect(waitUntil { cache.statistics.coalescedRequests == 4 }, "\(row.testDescription): the readers joined the rebuild")
            } else {
                for t in others { t.join() }
                others = []
            }
        }
        gate.open()
        a.join()
        for t in others { t.join() }
        cache.testHook.set(nil)
        let s = cache.statistics
        #expect(StatsExpectation(s) == row.expected, "\(row.testDescription): got \(StatsExpectation(s)), expected \(row.expected)")
        #expect(s.entries == cache.count, "\(row.testDescription): entries \(s.entries), count \(cache.count)")
        #expect(cache.evictionTotal == UInt128(s.totalCost), "\(row.testDescription): eviction total \(cache.evictionTotal), totalCost \(s.totalCost)")
        #expect(s.lookups == s.hits + s.misses + s.purgedMisses)
        cache.removeAll()
        let e = cache.statistics
        let live = cache.allocator.statistics
        #expect(e.entries == 0 && e.totalCost == 0 && e.residentBytes == 0 && e.purgedBytes == 0 && cache.evictionTotal == 0,
                "\(row.testDescription): after removeAll: \(StatsExpectation(e)), eviction total \(cache.evictionTotal)")
        #expect(live.liveBuffers == 0 && live.liveBytes == 0,
                "\(row.testDescription): after removeAll the allocator holds \(live.liveBuffers) buffers, \(live.liveBytes) bytes")
    }
    #endif

    @Test("an allocator operation held at its start × another thread's release, purge or drain: exact statistics",
          arguments: AllocatorStatsRow.allCases)
    func allocatorRow(_ row: AllocatorStatsRow) throws {
        guard hooksAvailable("allocatorRow(\(row.rawValue))") else { return }
        if row.threadCache { guard try threadCachesAvailable("allocatorRow(\(row.rawValue))") else { return } }
        try withHooks {
            let a = try VolatileAllocator(options: .init(segmentBytes: 1 << 20, releaseDelay: .seconds(600), arenaCount: 1,
                                                         threadCache: row.threadCache))
            try allocatorRowBody(row, a)
            let end = a.statistics
            #expect(end.liveBuffers == 0 && end.liveBytes == 0, "\(row.rawValue): all freed: \(end)")
        }
    }

    /// The row's buffers are freed when this returns.
    func allocatorRowBody(_ row: AllocatorStatsRow, _ a: VolatileAllocator) throws {
        var first = try a.allocate(byteCount: 250 * page)   // segment 1 (an arena's last: kept)
        first.withUnsafeMutableBytes { $0[0] = 1 }
        var big = try a.allocate(byteCount: 150 * page)     // segment 2
        var small = try a.allocate(byteCount: 50 * page)    // segment 2
        big.withUnsafeMutableBytes { for p in 0..<150 { $0[p * page] = 1 } }
        small.withUnsafeMutableBytes { for p in 0..<50 { $0[p * page] = 1 } }
        let segment2 = 512 * page
        switch row {
        case .statisticsWhileAMagazineDrains:
            big.free()  // into the arena's magazine
            let held = HeldAllocatorOp(.statistics, a)
            a.forEachPurgeUnit { _ in }  // drains the magazine into the free lists
            let (_, snapshot) = held.finish()
            #expect(snapshot?.liveBuffers == 2 && snapshot?.liveBytes == 300 * page,
                    "\(row.rawValue): two buffers (300 pages) live throughout; the snapshot says \(snapshot.map { "\($0.liveBuffers) buffers, \($0.liveBytes / page) pages" } ?? "nothing")")
            small.free()  // (a noncopyable value may go after its last use: kept to here)
        case .releaseWhileAPurgerPurgesAFreeSpan:
            small.free()
            var purged = 0
            let held = HeldAllocatorOp(.release, a)
            a.forEachPurgeUnit { u in if u.priority == .veryLow { purged += a.purge(unit: u.id) } }
            let (returned, _) = held.finish()
            let s = a.statistics
            #expect(purged > 0)
            #expect(returned == 0, "\(row.rawValue): the release found nothing to release; it returned \(returned) (the purger's: \(purged))")
            #expect(s.releasedBytes == purged, "\(row.rawValue): releasedBytes \(s.releasedBytes), purged \(purged)")
            big.free()
        case .releaseDroppingASegmentWhoseSpanWasReleased:
            big.free()
            let r1 = a.releaseFreeMemory()
            let held = HeldAllocatorOp(.release, a)
            small.free()
            let (r2, _) = held.finish()
            let s = a.statistics
            #expect(s.segments == 1 && r1 == 150 * page, "\(row.rawValue): \(s), r1 \(r1 / page) pages")
            #expect(r1 + r2 == segment2 && s.releasedBytes == r1 + r2,
                    "\(row.rawValue): segment 2 (\(segment2 / page) pages) released once: \(r1 / page) + \(r2 / page) pages, releasedBytes \(s.releasedBytes / page) pages")
        case .statisticsWhileAThreadCacheDrains, .statisticsWhileAThreadCacheReplacesASpan,
             .statisticsWhileACachedSpanIsFreedUnlocked:
            // Another thread (an empty cache of its own) caches spans; the
            // snapshot counts them once, as free, whichever way one moves
            // while it is held after counting the caches.
            let other = StepThread()
            defer { other.finish() }
            let sizes = row == .statisticsWhileAThreadCacheReplacesASpan ? Array(2...9) : [2]
            other.run { for p in sizes { try! a.allocate(byteCount: p * page).free() } }
            #expect(cached(a).spans == sizes.count, "\(row.rawValue): \(cached(a)) cached")
            let held = HeldAllocatorOp(.statistics, a)
            switch row {
            case .statisticsWhileAThreadCacheDrains:
                _ = a.releaseFreeMemory()  // the cached span goes to the arena
            case .statisticsWhileAThreadCacheReplacesASpan:
                other.run { try! a.allocate(byteCount: 10 * page).free() }  // replaces a span: it goes to the magazine
            default:
                other.run {
                    var b = try! a.allocate(byteCount: 2 * page)  // the cached span
                    b.unlock()
                    b.free()  // unlocked: into the free lists
                }
            }
            let (_, snapshot) = held.finish()
            #expect(snapshot?.liveBuffers == 3 && snapshot?.liveBytes == 450 * page,
                    "\(row.rawValue): three buffers (450 pages) live before and after; the snapshot says \(snapshot.map { "\($0.liveBuffers) buffers, \($0.liveBytes / page) pages" } ?? "nothing")")
            big.free()
            small.free()
        case .statisticsWhileAMagazineSpanMovesSlots:
            var e = try a.allocate(byteCount: 2 * page)
            let f = try a.allocate(byteCount: 3 * page)
            var h = try a.allocate(byteCount: 4 * page)
            e.withUnsafeMutableBytes { $0[0] = 1 }
            h.withUnsafeMutableBytes { $0[0] = 1 }
            e.free()  // slot 0
            f.free()  // slot 1: cached {e, f}, live 4 buffers (454 pages)
            let tid = Atomic<Int32>(0)
            let go = Atomic<Bool>(false)
            let seen = Locked<VolatileAllocator.Statistics?>(nil)
            let t = TestThread {
                tid.store(currentTID(), ordering: .releasing)
                _ = waitUntil { go.load(ordering: .acquiring) }
                let s = a.statistics
                seen.withLock { $0 = s }
            }
            _ = waitUntil { tid.load(ordering: .acquiring) != 0 }
            arm(1, Int32(VR_HOOK_ALLOC_MAGAZINE_CENSUS), arg: 0, tid: tid.load(ordering: .acquiring),
                set: Flag.a, waitAny: Flag.b, times: 1)
            go.store(true, ordering: .releasing)
            let held = waitForFlags(Flag.a, seconds: 10)
            var e2 = try a.allocate(byteCount: 2 * page)  // e, from slot 0 (no lock)
            e2.withUnsafeMutableBytes { $0[0] = 1 }
            h.free()   // slot 0
            e2.free()  // slot 2: cached {h, f, e}, live 3 buffers (450 pages)
            vr_test_hook_set_flags(Flag.b)
            t.join()
            let snapshot = seen.withLock { $0 }
            #expect(held, "\(row.rawValue): statistics was held in the magazine's census")
            #expect(snapshot?.liveBuffers == 4 && snapshot?.liveBytes == 454 * page,
                    "\(row.rawValue): the magazine held {e, f} when slot 0 was read (4 buffers, 454 pages live); the snapshot says \(snapshot.map { "\($0.liveBuffers) buffers, \($0.liveBytes / page) pages" } ?? "nothing")")
            big.free()
            small.free()
        case .statisticsWhileAThreadCacheOwnerIsInside:
            let other = StepThread()
            defer { other.finish() }
            let tid = Atomic<Int32>(0)
            other.run { tid.store(currentTID(), ordering: .releasing); try! a.allocate(byteCount: 2 * page).free() }
            arm(0, Int32(VR_HOOK_TCACHE_INSIDE), arg: 1, tid: tid.load(ordering: .acquiring), set: Flag.a, waitAny: Flag.b, times: 1)
            other.start { try! a.allocate(byteCount: 2 * page).free() }
            let held = waitForFlags(Flag.a, seconds: 10)
            let s = a.statistics  // returns: the owner's seq stays odd
            vr_test_hook_set_flags(Flag.b)
            other.run {}
            #expect(held, "\(row.rawValue): the owner was held inside its fast path")
            #expect(s.liveBuffers == 4 && s.liveBytes == 452 * page,
                    "\(row.rawValue): the cached span counts as live after 8 tries: \(s.liveBuffers) buffers, \(s.liveBytes / page) pages")
            big.free()
            small.free()
        }
        first.free()
    }
}

/// `op` (statistics or releaseFreeMemory) run on another thread, held at
/// VR_HOOK_ALLOC_ENTERED until `finish()` (under `withHooks`).
final class HeldAllocatorOp: @unchecked Sendable {
    let op: AllocHookOp
    let allocator: VolatileAllocator
    let tid = Atomic<Int32>(0)
    let go = Atomic<Bool>(false)
    let returned = Atomic<Int>(-1)
    let seen = Locked<VolatileAllocator.Statistics?>(nil)
    var thread: TestThread?
    var held = false

    init(_ op: AllocHookOp, _ a: VolatileAllocator) {
        self.op = op
        allocator = a
        thread = TestThread { [self] in
            tid.store(currentTID(), ordering: .releasing)
            _ = waitUntil { go.load(ordering: .acquiring) }
            if op == .statistics {
                let s = allocator.statistics
                seen.withLock { $0 = s }
            } else {
                returned.store(allocator.releaseFreeMemory(), ordering: .releasing)
            }
        }
        _ = waitUntil { tid.load(ordering: .acquiring) != 0 }
        arm(1, Int32(VR_HOOK_ALLOC_ENTERED), arg: UInt(op.rawValue), tid: tid.load(ordering: .acquiring),
            set: Flag.a, waitAny: Flag.b, times: 1)
        go.store(true, ordering: .releasing)
        held = waitForFlags(Flag.a, seconds: 10)
    }

    /// Lets the operation go on; what releaseFreeMemory returned, or the
    /// statistics snapshot.
    func finish() -> (Int, VolatileAllocator.Statistics?) {
        vr_test_hook_set_flags(Flag.b)
        thread?.join()
        #expect(held, "\(op): the operation was held")
        return (returned.load(ordering: .acquiring), seen.withLock { $0 })
    }
}
