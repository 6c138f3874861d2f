// Regressions of issue 18 in the cache: a purged entry served as a hit (5a),
// a missing key counted twice (5c), costs and shard counts at their extremes
// (4a, 4b), empty values (4g).
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// A cache on an allocator that keeps freed memory (no release in tests).
func regressionCache(costLimit: Int = .max, shards: Int = 4, rebuild: PurgeableCache<Int>.Rebuild? = nil) -> PurgeableCache<Int> {
    let a = try! VolatileAllocator(options: .init(releaseDelay: .seconds(600)))
    return PurgeableCache(costLimit: costLimit, allocator: a, shards: shards, rebuild: rebuild)
}

@Suite("issue 18: cache regressions") struct CacheRegressionTests {
    #if DEBUG
    /// 5a: a fetch whose first lookup missed finds, at join, an entry that
    /// another thread stored and a purge took meanwhile. The entry must be
    /// dropped (and its buffer unlocked): never served as a hit, during the
    /// rebuild or after a failed one.
    @Test("5a: an entry found purged when a fetch joins is dropped, never served as a hit")
    func joinFindsPurgedEntry() throws {
        struct Failed: Error {}
        let cache = regressionCache()
        let once = Atomic<Bool>(false)
        cache.testHook.set { [unowned cache] point in
            guard point == .beforeJoin, !once.exchange(true, ordering: .relaxed) else { return }
            // Between the fetch's lookup (a miss) and its join: another
            // writer stores the key, and memory pressure purges it.
            try! cache.setBytes(cacheValue(1), forKey: 1)
            _ = purgeEverything(cache.allocator)
        }
        defer { cache.testHook.set(nil) }
        let seenDuringRebuild = Locked<[UInt8]??>(nil)
        #expect(throws: Failed.self) {
            _ = try cache.fetchBytes(forKey: 1) { _ in
                seenDuringRebuild.withLock { $0 = .some(cache.bytes(forKey: 1)) }
                throw Failed()
            }
        }
        let during = seenDuringRebuild.withLock { $0 } ?? nil
        let servedDuring = during.map { "\($0.count) bytes, all zero: \($0.allSatisfy { $0 == 0 })" } ?? "nil"
        #expect(servedDuring == "nil", "a lookup during the rebuild served the purged entry")
        let after = cache.bytes(forKey: 1)
        let servedAfter = after.map { "\($0.count) bytes, all zero: \($0.allSatisfy { $0 == 0 })" } ?? "nil"
        #expect(servedAfter == "nil", "a lookup after the failed rebuild served the purged entry")
        let read = cache.withBytes(forKey: 1) { $0.count }
        #expect(read == nil)
        // A successful fetch now stores and serves the rebuilt value.
        #expect(try cache.fetchBytes(forKey: 1) { cacheValue($0, 2) } == cacheValue(1, 2))
        #expect(cache.bytes(forKey: 1) == cacheValue(1, 2))
    }
    #endif

    /// 5c: one fetchValue of a missing key is one lookup: one miss.
    @Test("5c: fetchValue of a missing, a purged and a present key counts one lookup each")
    func fetchValueCountsOnce() throws {
        let a = try VolatileAllocator(options: .init(releaseDelay: .seconds(600)))
        let cache = PurgeableValueCache<Int, String>(allocator: a) { "value \($0)" }
        #expect(try cache.fetchValue(forKey: 1) == "value 1")
        var s = cache.statistics
        #expect(s.misses == 1 && s.purgedMisses == 0 && s.hits == 0, "missing key: \(s)")
        #expect(try cache.fetchValue(forKey: 1) == "value 1")
        s = cache.statistics
        #expect(s.misses == 1 && s.purgedMisses == 0 && s.hits == 1, "present key: \(s)")
        _ = purgeEverything(a)
        #expect(try cache.fetchValue(forKey: 1) == "value 1")
        s = cache.statistics
        #expect(s.misses == 1 && s.purgedMisses == 1 && s.hits == 1 && s.lookups == 3, "purged key: \(s)")
    }

    /// 4a: costs at Int.max add up saturating (unlimited cache); an entry
    /// that alone exceeds a cost limit is not kept and evicts nothing else.
    @Test("4a: setBytes(cost: .max) next to other entries neither traps nor evicts the others")
    func maximalCosts() async {
        await #expect(processExitsWith: .success) {
            alarm(20)
            let unlimited = regressionCache()
            try! unlimited.setBytes([1], forKey: 1, cost: .max)
            try! unlimited.setBytes([2], forKey: 2, cost: .max)
            try! unlimited.setBytes([3], forKey: 3, cost: 5)
            precondition(unlimited.bytes(forKey: 1) == [1] && unlimited.bytes(forKey: 2) == [2] && unlimited.bytes(forKey: 3) == [3])
            let s = unlimited.statistics
            precondition(s.entries == 3 && s.totalCost == .max, "\(s)")
            precondition(unlimited.removeValue(forKey: 1))
            precondition(unlimited.statistics.totalCost == .max, "Int.max + 5 saturates")
            precondition(unlimited.removeValue(forKey: 2))
            precondition(unlimited.statistics.totalCost == 5, "exact again below Int.max")
            unlimited.removeAll()
            precondition(unlimited.statistics.totalCost == 0 && unlimited.statistics.entries == 0)

            let limited = regressionCache(costLimit: 100, shards: 1)
            try! limited.setBytes([1], forKey: 1, cost: 10)
            try! limited.setBytes([2], forKey: 2, cost: .max)
            try! limited.setBytes([3], forKey: 3, cost: 10)
            precondition(limited.contains(1) && !limited.contains(2) && limited.contains(3))
            let t = limited.statistics
            precondition(t.totalCost == 20 && t.entries == 2 && t.evictions == 1, "\(t)")
            _exit(0)
        }
    }

    /// 4b: any shard count returns at once (clamped to 1...maxShards).
    @Test("4b: PurgeableCache(shards:) at .max, .min, -1, 0 returns (clamped)")
    func extremeShardCounts() async {
        await #expect(processExitsWith: .success) {
            alarm(20)  // a hang dies of SIGALRM
            for n in [Int.max, Int.max / 2 + 1, Int.min, -1, 0, 1] {
                let c = PurgeableCache<Int>(shards: n)
                try! c.setBytes([9], forKey: 9)
                precondition(c.bytes(forKey: 9) == [9])
            }
            _exit(0)
        }
    }

    /// 4g: an empty value is stored and read back as empty, as NSCache
    /// stores any object; it holds no memory, so no purge takes it.
    @Test("4g: empty values are stored and read back empty, through every read and fetch")
    func emptyValues() throws {
        let cache = regressionCache()
        try cache.setBytes([], forKey: 1)
        #expect(cache.bytes(forKey: 1) == [])
        #expect(cache.withBytes(forKey: 1) { $0.count } == 0)
        var scratch = [UInt8](repeating: 7, count: 4)
        #expect(scratch.withUnsafeMutableBytes { cache.copyBytes(forKey: 1, into: $0) } == 0)
        #expect(scratch == [7, 7, 7, 7])
        _ = purgeEverything(cache.allocator)
        #expect(cache.bytes(forKey: 1) == [])
        #expect(try cache.fetchBytes(forKey: 2) { _ in [] } == [])
        #expect(cache.contains(2))
        #expect(try cache.fetchBytes(forKey: 2) { _ in Issue.record("rebuilt a stored empty value"); return [1] } == [])
        let s = cache.statistics
        #expect(s.entries == 2 && s.totalCost == 0 && s.purgedMisses == 0, "\(s)")
        let values = PurgeableValueCache<Int, String>(allocator: cache.allocator)
        try values.setValue("", forKey: 1)
        #expect(values.value(forKey: 1) == "")
    }
}
