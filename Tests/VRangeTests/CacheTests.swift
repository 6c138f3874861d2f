// PurgeableCache and PurgeableValueCache: get/set/remove, purged entries
// dropped, entries volatile unless read, LRU cost limit, rebuild closures,
// single flight under 8 overlapping requesters (threads and tasks),
// statistics, the typed layer, and many threads under continuous purges.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The value the tests store under key `k`, version `v`.
func cacheValue(_ k: Int, _ v: Int = 0, count: Int = 3000) -> [UInt8] {
    (0..<count).map { patternByte($0, UInt8(truncatingIfNeeded: k &* 7 &+ v)) }
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
    @discardableResult func increment() -> Int { value.add(1, ordering: .relaxed).newValue }
    var current: Int { value.load(ordering: .relaxed) }
}

@Suite("PurgeableCache") struct CacheTests {
    func makeCache(costLimit: Int = .max, shards: Int = 16, rebuild: PurgeableCache<Int>.Rebuild? = nil) -> PurgeableCache<Int> {
        let a = try! VolatileAllocator(options: .init(releaseDelay: .seconds(600)))
        return PurgeableCache(costLimit: costLimit, allocator: a, shards: shards, rebuild: rebuild)
    }

    @Test("set, get, remove")
    func setGetRemove() throws {
        let cache = makeCache()
        try cache.setBytes(cacheValue(1), forKey: 1)
        try cache.setBytes([7], forKey: 2)
        #expect(cache.bytes(forKey: 1) == cacheValue(1))
        #expect(cache.withBytes(forKey: 2) { $0.count } == 1)
        #expect(cache.bytes(forKey: 3) == nil)
        try cache.setBytes(cacheValue(1, 1), forKey: 1)  // replace
        #expect(cache.bytes(forKey: 1) == cacheValue(1, 1))
        #expect(cache.count == 2)
        #expect(cache.removeValue(forKey: 1))
        #expect(!cache.removeValue(forKey: 1))
        #expect(cache.bytes(forKey: 1) == nil)
        try cache.setBytes([], forKey: 4)  // an empty value is stored (issue 18, 4g)
        #expect(cache.contains(4) && cache.removeValue(forKey: 4))
        let s = cache.statistics
        #expect(s.hits == 3 && s.misses == 2 && s.purgedMisses == 0 && s.entries == 1 && s.totalCost == 1)
        cache.removeAll()
        #expect(cache.count == 0 && cache.statistics.totalCost == 0)
    }

    @Test("entries are volatile unless read; a purged entry reads as nil and is dropped")
    func purgedEntriesDropped() throws {
        let cache = makeCache()
        for k in 0..<4 { try cache.setBytes(cacheValue(k), forKey: k) }
        // While a reader holds key 0, purging everything leaves it intact.
        let seen = cache.withBytes(forKey: 0) { raw -> [UInt8] in
            #expect(purgeEverything(cache.allocator) > 0)  // the other three go
            return [UInt8](raw)
        }
        #expect(seen == cacheValue(0))
        #expect(cache.bytes(forKey: 0) == cacheValue(0))
        let before = cache.statistics
        #expect(before.purgedBytes == 3 * 3000 && before.residentBytes == 3000, "\(before)")
        #expect(cache.bytes(forKey: 1) == nil)
        #expect(cache.withBytes(forKey: 2) { _ in true } == nil)
        #expect(!cache.contains(1) && !cache.contains(2) && cache.contains(3))
        let s = cache.statistics
        #expect(s.purgedMisses == 2 && s.entries == 2 && s.purgedBytes == 3000 && s.hits == 2)
    }

    @Test("the cost limit evicts the least recently used entries")
    func costLimitEvictsLRU() throws {
        let cache = makeCache(costLimit: 3000, shards: 1)
        for k in 0..<3 { try cache.setBytes(cacheValue(k, count: 1000), forKey: k) }
        _ = cache.bytes(forKey: 0)  // 0 is now the most recent: 1 is the oldest
        try cache.setBytes(cacheValue(3, count: 1000), forKey: 3)
        #expect(!cache.contains(1) && cache.contains(0) && cache.contains(2) && cache.contains(3))
        try cache.setBytes(cacheValue(4, count: 500), forKey: 4, cost: 2000)
        #expect(!cache.contains(2) && !cache.contains(0) && cache.contains(3) && cache.contains(4))
        let s = cache.statistics
        #expect(s.evictions == 3 && s.totalCost == 3000 && s.entries == 2)
        // An entry costlier than the limit is not kept.
        try cache.setBytes([1, 2, 3], forKey: 5, cost: 5000)
        #expect(!cache.contains(5) && cache.statistics.totalCost <= 3000)
    }

    @Test("a rebuild closure regenerates missing and purged values; its errors pass through")
    func rebuildClosure() throws {
        struct Broken: Error, Equatable {}
        let calls = Counter()
        let cache = makeCache { k in
            calls.increment()
            if k < 0 { throw Broken() }
            return cacheValue(k)
        }
        #expect(try cache.fetchBytes(forKey: 5) == cacheValue(5))
        #expect(try cache.fetchBytes(forKey: 5) == cacheValue(5))
        #expect(calls.current == 1)
        purgeEverything(cache.allocator)
        #expect(try cache.fetchBytes(forKey: 5) == cacheValue(5))
        #expect(calls.current == 2)
        #expect(try cache.fetchBytes(forKey: 6, rebuild: { _ in [42] }) == [42], "a call's own closure wins")
        #expect(throws: Broken()) { try cache.fetchBytes(forKey: -1) }
        #expect(!cache.contains(-1))
        #expect(throws: PurgeableCacheError.noRebuildClosure) { try makeCache().fetchBytes(forKey: 1) }
        let s = cache.statistics
        #expect(s.rebuilds == 4 && s.rebuildFailures == 1 && s.purgedMisses == 1 && s.hits == 1)
        #expect(s.rebuildTime > .zero)
    }

    @Test("8 overlapping threads asking for one missing key run exactly one rebuild")
    func singleFlightThreads() throws {
        let rebuilds = Counter(), arrived = Counter()
        let holder = Locked<PurgeableCache<Int>?>(nil)
        let cache = makeCache { k in
            rebuilds.increment()
            // Block until the other 7 are waiting on this flight (bounded).
            let deadline = Kernel.nanoseconds() + 600_000_000_000
            while holder.withLock({ $0! }).statistics.coalescedRequests < 7 && Kernel.nanoseconds() < deadline { sched_yield() }
            return cacheValue(k)
        }
        holder.withLock { $0 = cache }
        let results = Locked<[[UInt8]]>([])
        let threads = (0..<8).map { _ in
            TestThread {
                arrived.increment()
                while arrived.current < 8 { sched_yield() }
                let v = try? cache.fetchBytes(forKey: 77)
                results.withLock { $0.append(v ?? []) }
            }
        }
        for t in threads { t.join() }
        let s = cache.statistics
        #expect(rebuilds.current == 1 && s.rebuilds == 1)
        #expect(s.coalescedRequests == 7, "the requesters did not overlap: \(s)")
        #expect(results.withLock { $0.count == 8 && $0.allSatisfy { $0 == cacheValue(77) } })
        #expect(cache.bytes(forKey: 77) == cacheValue(77))
        holder.withLock { $0 = nil }  // the closure held the cache: break the cycle
    }

    /// Tasks run on Swift's cooperative pool (as many threads as cores,
    /// shared with every other test): a rebuild that blocks must not sit on
    /// it. So the leader here is a thread, blocked in its rebuild until the
    /// tasks (which only suspend) have all joined its flight. Sync tests of
    /// other suites occupy the pool's threads while they run, so the tasks
    /// may start late: the leader waits for them up to ten minutes (a
    /// ThreadSanitizer run of the whole suite kept them out for over two).
    @Test("a thread and 7 overlapping tasks asking for one missing key run exactly one rebuild")
    func singleFlightTasks() async throws {
        let rebuilds = Counter(), started = Counter()
        let holder = Locked<PurgeableCache<Int>?>(nil)
        let cache = makeCache { k in
            rebuilds.increment()
            started.increment()
            let deadline = Kernel.nanoseconds() + 600_000_000_000
            while holder.withLock({ $0! }).statistics.coalescedRequests < 7 && Kernel.nanoseconds() < deadline { sched_yield() }
            return cacheValue(k)
        }
        holder.withLock { $0 = cache }
        let leaderValue = Locked<[UInt8]?>(nil)
        let leader = TestThread { leaderValue.withLock { $0 = try? cache.fetchBytes(forKey: 9) } }
        while started.current == 0 { await Task.yield() }
        let values = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<7 { group.addTask { try await cache.fetchBytes(forKey: 9) } }
            var all: [[UInt8]] = []
            for try await v in group { all.append(v) }
            return all
        }
        leader.join()
        let s = cache.statistics
        #expect(rebuilds.current == 1 && s.rebuilds == 1)
        #expect(s.coalescedRequests == 7, "the requesters did not overlap: \(s)")
        #expect(values.count == 7 && values.allSatisfy { $0 == cacheValue(9) })
        #expect(leaderValue.withLock { $0 } == cacheValue(9))
        holder.withLock { $0 = nil }  // the closure held the cache: break the cycle
    }

    @Test("waiters of a failed rebuild all get its error")
    func singleFlightFailure() async throws {
        struct Failed: Error {}
        let started = Counter()
        let holder = Locked<PurgeableCache<Int>?>(nil)
        let cache = makeCache { _ in
            started.increment()
            let deadline = Kernel.nanoseconds() + 600_000_000_000
            while holder.withLock({ $0! }).statistics.coalescedRequests < 3 && Kernel.nanoseconds() < deadline { sched_yield() }
            throw Failed()
        }
        holder.withLock { $0 = cache }
        let leaderFailed = Locked(false)
        let leader = TestThread { leaderFailed.withLock { $0 = (try? cache.fetchBytes(forKey: 1)) == nil } }
        while started.current == 0 { await Task.yield() }
        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<3 { group.addTask { (try? await cache.fetchBytes(forKey: 1)) == nil } }
            var n = 0
            for await failed in group where failed { n += 1 }
            return n
        }
        leader.join()
        #expect(failures == 3 && leaderFailed.withLock { $0 })
        #expect(cache.statistics.rebuilds == 1 && cache.statistics.rebuildFailures == 1)
        #expect(cache.statistics.coalescedRequests == 3)
        holder.withLock { $0 = nil }  // the closure held the cache: break the cycle
    }

    @Test("typed values: strings and arrays of plain values")
    func typedValues() async throws {
        let strings = PurgeableValueCache<String, String>(rebuild: { "rebuilt " + $0 })
        try strings.setValue("héllo wörld", forKey: "a")
        #expect(strings.value(forKey: "a") == "héllo wörld")
        #expect(strings.value(forKey: "b") == nil)
        let syncFetch = { () throws -> String in try strings.fetchValue(forKey: "b") }
        #expect(try syncFetch() == "rebuilt b")
        purgeEverything(strings.bytes.allocator)
        #expect(strings.value(forKey: "a") == nil)
        #expect(try await strings.fetchValue(forKey: "a") == "rebuilt a")
        let floats = PurgeableValueCache<Int, [Float]>()
        try floats.setValue([1.5, -2, .pi], forKey: 1)
        #expect(floats.value(forKey: 1) == [1.5, -2, .pi])
        #expect(strings.statistics.purgedMisses == 1 && strings.statistics.rebuilds == 2)
    }

    @Test("many threads get, set and remove under continuous purges: values are whole or absent")
    func concurrentUnderPurges() throws {
        let cache = makeCache(costLimit: 40 * 3000)
        let stop = Atomic<Bool>(false)
        let wrong = Counter(), hits = Counter(), purged = Counter()
        let rounds = environmentInt("VRANGE_CACHE_ROUNDS", 1500)
        let purger = TestThread {
            while !stop.load(ordering: .acquiring) {
                purged.value.add(purgeEverything(cache.allocator) > 0 ? 1 : 0, ordering: .relaxed)
                sched_yield()
            }
        }
        let threads = (0..<6).map { t in
            TestThread {
                var rng = SeededGenerator(seed: UInt64(t) &+ 1)
                for _ in 0..<rounds {
                    let k = Int.random(in: 0..<64, using: &rng)
                    switch Int.random(in: 0..<10, using: &rng) {
                    case 0..<3: try? cache.setBytes(cacheValue(k), forKey: k)
                    case 3: cache.removeValue(forKey: k)
                    case 4..<7:
                        if let v = cache.bytes(forKey: k) { hits.increment(); if v != cacheValue(k) { wrong.increment() } }
                    default:
                        let ok = cache.withBytes(forKey: k) { raw in raw.elementsEqual(cacheValue(k)) }
                        if ok == false { wrong.increment() }
                    }
                }
            }
        }
        for t in threads { t.join() }
        stop.store(true, ordering: .releasing)
        purger.join()
        let s = cache.statistics
        print("[cache race] \(s.hits) hits, \(s.misses) misses, \(s.purgedMisses) purged misses, \(s.evictions) evictions, purger passes that purged: \(purged.current)")
        #expect(wrong.current == 0)
        #expect(s.totalCost <= 40 * 3000 && s.totalCost == s.entries * 3000)
        #expect(s.purgedMisses > 0, "no lookup ever met a purge: the test proved nothing")
    }
}

@Suite("PurgeableCache copy") struct CacheCopyTests {
    @Test("copyBytes copies what fits and returns the full size")
    func copyBytes() throws {
        let cache = PurgeableCache<String>()
        try cache.setBytes(cacheValue(3, count: 100), forKey: "k")
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 40, alignment: 1)
        defer { out.deallocate() }
        #expect(cache.copyBytes(forKey: "k", into: out) == 100)
        #expect(Array(out) == Array(cacheValue(3, count: 100).prefix(40)))
        #expect(cache.copyBytes(forKey: "x", into: out) == nil)
        purgeEverything(cache.allocator)
        #expect(cache.copyBytes(forKey: "k", into: out) == nil)
        #expect(cache.statistics.purgedMisses == 1 && cache.statistics.hits == 1 && cache.statistics.misses == 1)
    }
}
