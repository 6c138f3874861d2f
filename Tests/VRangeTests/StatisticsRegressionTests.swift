// Regressions of issue 18, class 5 ("a report be wrong", second review): the
// cache's eviction total drifting when a removal races a store (C1), a
// rebuild's result stored over a write made while it ran (C2), the
// allocator's releasedBytes counting a dropped segment's released spans
// again (C3), and releaseFreeMemory returning other threads' bytes (C4).
// Every race is forced by a held window (a hook or the rebuild closure).
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// A write to a key while its rebuild runs.
enum RebuildWrite: String, CaseIterable, Sendable {
    case setBytes, removeValue
}

/// Where the rebuild is held while the write happens.
enum RebuildWindow: String, CaseIterable, Sendable {
    /// Inside the rebuild closure.
    case insideClosure
    /// After the closure returned, before its result is stored (the
    /// `.beforeStore` hook on the leader's thread).
    case beforeStoringTheResult
}

struct RebuildRow: Sendable, CustomTestStringConvertible {
    let write: RebuildWrite
    let window: RebuildWindow
    var testDescription: String { "\(write.rawValue) × \(window.rawValue)" }
}

@Suite("issue 18: statistics and rebuild regressions", .serialized) struct StatisticsRegressionTests {
    #if DEBUG
    /// C1: a store inserted its entry under the shard's mutex and added its
    /// cost to the eviction total after releasing it; a removeValue in
    /// between subtracted first (clamped at 0), then the add landed: the
    /// total kept a cost no entry had, and entries within the limit were
    /// evicted.
    @Test("C1: removeValue between a store's insert and the rest of the store: the eviction total stays exact")
    func totalCostExactWhenARemoveRacesAStore() throws {
        let cache = regressionCache(costLimit: 1000, shards: 1)
        let gate = Gate()
        let once = Atomic<Bool>(false)
        cache.testHook.set { point in
            guard point == .afterStore, !once.exchange(true, ordering: .relaxed) else { return }
            gate.hold()
        }
        defer { cache.testHook.set(nil) }
        let writer = TestThread { try! cache.setBytes([1], forKey: 1, cost: 600) }
        #expect(gate.waitReached())
        let removed = cache.removeValue(forKey: 1)
        gate.open()
        writer.join()
        cache.testHook.set(nil)
        #expect(removed, "the held store's entry was in the map")
        let drift = cache.evictionTotal
        try cache.setBytes([2], forKey: 2, cost: 400)
        try cache.setBytes([3], forKey: 3, cost: 400)
        let s = cache.statistics
        #expect(drift == 0, "eviction total \(drift) with an empty cache")
        #expect(cache.contains(2) && cache.contains(3) && s.evictions == 0,
                "two entries of cost 400 under a limit of 1000: contains(2) \(cache.contains(2)), contains(3) \(cache.contains(3)), evictions \(s.evictions)")
        #expect(s.entries == 2 && s.totalCost == 800 && cache.evictionTotal == 800, "\(s)")
    }

    /// C2: a rebuild's result was stored over a setBytes or removeValue of
    /// its key made while it ran. Rule (as Guava's loading cache): such a
    /// result is discarded; every caller of the rebuild still gets it.
    @Test("C2: a write while a rebuild of its key runs wins; the rebuild's callers still get its result",
          arguments: RebuildWrite.allCases.flatMap { w in RebuildWindow.allCases.map { RebuildRow(write: w, window: $0) } })
    func rebuildResultDiscardedAfterAWrite(_ row: RebuildRow) throws {
        let cache = regressionCache()
        try cache.setBytes([0], forKey: 7)
        _ = purgeEverything(cache.allocator)  // the entry is purged: the fetch rebuilds
        let gate = Gate()
        let leaderTID = Atomic<Int32>(0)
        cache.testHook.set { point in
            guard row.window == .beforeStoringTheResult, point == .beforeStore,
                  currentTID() == leaderTID.load(ordering: .acquiring) else { return }
            gate.hold()
        }
        defer { cache.testHook.set(nil) }
        let leaderGot = Locked<[UInt8]?>(nil)
        let leader = TestThread {
            leaderTID.store(currentTID(), ordering: .releasing)
            let v = try? cache.fetchBytes(forKey: 7) { _ in
                if row.window == .insideClosure { gate.hold() }
                return [1, 1, 1]
            }
            leaderGot.withLock { $0 = v }
        }
        #expect(gate.waitReached())
        // A second caller joins the flight and waits for its result.
        let waiterGot = Locked<[UInt8]?>(nil)
        let waiter = TestThread { waiterGot.withLock { $0 = try? cache.fetchBytes(forKey: 7) { _ in [9] } } }
        let joined = waitUntil { cache.statistics.coalescedRequests == 1 }
        switch row.write {
        case .setBytes: try cache.setBytes([2, 2], forKey: 7)
        case .removeValue: cache.removeValue(forKey: 7)
        }
        gate.open()
        leader.join()
        waiter.join()
        cache.testHook.set(nil)
        #expect(joined, "the second caller joined the rebuild")
        #expect(leaderGot.withLock { $0 } == [1, 1, 1], "the rebuild's caller gets its result")
        #expect(waiterGot.withLock { $0 } == [1, 1, 1], "a caller waiting on the rebuild gets its result")
        let now = cache.bytes(forKey: 7)
        switch row.write {
        case .setBytes:
            #expect(now == [2, 2], "the setBytes made during the rebuild was replaced by the rebuild's result: \(String(describing: now))")
        case .removeValue:
            #expect(now == nil, "the key removed during its rebuild came back: \(String(describing: now))")
        }
        let s = cache.statistics
        #expect(s.rebuilds == 1 && s.coalescedRequests == 1, "\(s)")
        #expect(s.entries == (row.write == .setBytes ? 1 : 0) && s.totalCost == (row.write == .setBytes ? 2 : 0), "\(s)")
    }
    #endif

    /// C3: a free span released by releaseFreeMemory (counted), then its
    /// segment dropped when its last buffer went: the drop counted the
    /// whole mapping again.
    @Test("C3: releasedBytes counts a dropped segment's already released span once")
    func releasedBytesCountedOnceWhenASegmentIsDropped() throws {
        let a = try VolatileAllocator(options: .init(segmentBytes: 1 << 20, releaseDelay: .seconds(600), arenaCount: 1, threadCache: false))
        var first = try a.allocate(byteCount: 250 * page)   // segment 1 (an arena's last: kept)
        var big = try a.allocate(byteCount: 150 * page)     // segment 2
        var small = try a.allocate(byteCount: 50 * page)    // segment 2 (does not fit segment 1's tail)
        for p in 0..<150 { big.withUnsafeMutableBytes { $0[p * page] = 1 } }
        for p in 0..<50 { small.withUnsafeMutableBytes { $0[p * page] = 1 } }
        first.withUnsafeMutableBytes { $0[0] = 1 }
        let before = a.statistics
        big.free()
        let r1 = a.releaseFreeMemory()
        small.free()
        let r2 = a.releaseFreeMemory()
        let s = a.statistics
        let unmapped = before.mappedBytes - s.mappedBytes
        #expect(before.segments == 2 && s.segments == 1 && unmapped > 0, "\(before) -> \(s)")
        #expect(r1 == 150 * page, "the first release gives back big's 150 pages: \(r1 / page) pages")
        #expect(s.releasedBytes == r1 + r2, "releasedBytes \(s.releasedBytes) is what the calls returned (\(r1) + \(r2))")
        #expect(r1 + r2 == unmapped,
                "segment 2 (\(unmapped / page) pages) released once: \(r1 / page) pages then \(r2 / page) pages at its drop")
        first.free()
    }

    /// C4: releaseFreeMemory returned the growth of the arena's counter
    /// while it ran, which counts what other threads released meanwhile.
    @Test("C4: releaseFreeMemory returns the bytes it released, not another thread's purge meanwhile")
    func releaseFreeMemoryReturnsItsOwnBytes() throws {
        guard hooksAvailable("releaseFreeMemoryReturnsItsOwnBytes") else { return }
        try withHooks {
            let a = try VolatileAllocator(options: .init(releaseDelay: .seconds(600), arenaCount: 1, threadCache: false))
            let keep = try a.allocate(byteCount: 4 * page)
            var b = try a.allocate(byteCount: 8 * page)
            b.withUnsafeMutableBytes { for p in 0..<8 { $0[p * page] = 1 } }
            let tid = Atomic<Int32>(0)
            let go = Atomic<Bool>(false)
            let returned = Atomic<Int>(-1)
            let releaser = TestThread {
                tid.store(currentTID(), ordering: .releasing)
                _ = waitUntil { go.load(ordering: .acquiring) }
                returned.store(a.releaseFreeMemory(olderThan: .seconds(600)), ordering: .releasing)
            }
            #expect(waitUntil { tid.load(ordering: .acquiring) != 0 })
            // The releaser is held inside its call, on its arena; meanwhile
            // a purger purges a free span (counted as released).
            arm(1, Int32(VR_HOOK_ALLOC_ENTERED), arg: UInt(AllocHookOp.release.rawValue), tid: tid.load(ordering: .acquiring),
                set: Flag.a, waitAny: Flag.b, times: 1)
            go.store(true, ordering: .releasing)
            let held = waitForFlags(Flag.a, seconds: 5)
            b.free()
            var purged = 0
            a.forEachPurgeUnit { u in if u.priority == .veryLow { purged += a.purge(unit: u.id) } }
            vr_test_hook_set_flags(Flag.b)
            releaser.join()
            #expect(held, "the releaser was held")
            #expect(purged >= 8 * page, "the purge released the freed span: \(purged)")
            #expect(returned.load(ordering: .acquiring) == 0,
                    "releaseFreeMemory(olderThan: 600 s) released nothing itself, returned \(returned.load(ordering: .acquiring)) (the purge meanwhile: \(purged))")
            keep.free()
        }
    }
}
