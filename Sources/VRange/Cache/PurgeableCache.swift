// PurgeableCache: key -> bytes in purgeable buffers, unlocked (volatile)
// whenever nobody reads them, so that memory pressure takes them instead of
// the process. Sharded (one mutex per shard, no global lock), LRU within a
// shard, a cost limit, statistics. Rebuilds live in PurgeableCache+Rebuild.
import Synchronization

/// A thread-safe cache of byte values that memory pressure may purge.
///
/// Each value lives in a `PurgeableBuffer` that stays **unlocked**
/// (volatile) except while it is being read, so a purger (or the kernel in
/// kernel-driven mode) can discard it when memory is tight. A lookup that
/// finds its entry purged drops it and answers "not cached"; with a
/// rebuild closure, `fetchBytes(forKey:)` regenerates it instead, and
/// concurrent requests for the same missing key share **one** rebuild.
///
/// Like `NSCache`, entries have a cost (their size by default) and the
/// cache evicts least recently used entries to stay within `costLimit`
/// (approximately: keys are spread over shards, each with its own LRU
/// order; the total cost is exact). Unlike `NSCache` on Linux, discarded
/// content really is evicted, lookups report it, and memory pressure
/// reaches it through the allocator (`PurgeableMemory`).
///
/// Numbers at their extremes: a negative cost counts as 0; costs add up
/// saturating at `Int.max` (never trapping); an entry whose cost alone
/// exceeds `costLimit` is not kept (it counts as evicted, and evicts
/// nothing else); `shards` is clamped to `1...maxShards`. Empty values are
/// stored like any other (they hold no memory, so no purge takes them).
///
/// A cache is fork-safe: a thread inside one of its operations when another
/// thread forks leaves no mutex locked in the child, and a rebuild in
/// flight in the parent is not waited for in the child.
public final class PurgeableCache<Key: Hashable & Sendable>: Sendable {
    /// Regenerates the bytes of `key` (for a miss or a purged entry).
    public typealias Rebuild = @Sendable (Key) throws -> [UInt8]

    /// The allocator holding the values: register it with a purger.
    public let allocator: VolatileAllocator
    /// Total cost above which least recently used entries are evicted.
    public let costLimit: Int
    let rebuild: Rebuild?
    @usableFromInline let shards: [CacheShard<Key>]
    /// The total cost, for eviction: kept only with a cost limit (without
    /// one nothing is evicted). Exact under every interleaving: an entry's
    /// cost is added under its shard's mutex in the same critical section
    /// that inserts it (before any other thread can see it), and subtracted
    /// in the one that removes it; 128 bits (low, high), so that no sum of
    /// costs (each at most Int.max) overflows it.
    @usableFromInline let totalCost = Atomic<WordPair>(WordPair(first: 0, second: 0))
    /// This cache's shard mutexes in the at-fork registry.
    nonisolated(unsafe) private let forkNode: ForkRegistry.Node

    /// The most shards a cache has (`init` clamps to it).
    public static var maxShards: Int { 1024 }
    #if DEBUG
    /// Test-only interleaving hook (CacheTestHooks.swift).
    @usableFromInline let testHook = CacheTestHookSlot()
    #endif

    /// Makes a cache.
    ///
    /// - Parameters:
    ///   - costLimit: the most total cost kept (default: no limit; memory
    ///     pressure still purges).
    ///   - allocator: where values live (default: a new allocator with the
    ///     default options). Register it with your `Purger`.
    ///   - shards: lock shards, rounded up to a power of two (default 16),
    ///     clamped to `1...maxShards`.
    ///   - rebuild: regenerates a missing or purged value for
    ///     `fetchBytes(forKey:)` (optional; a call can pass its own).
    public init(costLimit: Int = .max, allocator: VolatileAllocator? = nil, shards: Int = 16, rebuild: Rebuild? = nil) {
        // Default options are always valid: this cannot throw.
        self.allocator = allocator ?? (try! VolatileAllocator())
        self.costLimit = max(0, costLimit)
        self.rebuild = rebuild
        var n = 1
        while n < min(max(1, shards), Self.maxShards) { n <<= 1 }
        let made = (0..<n).map { _ in CacheShard<Key>() }
        self.shards = made
        // Fork safety (issue 18, 2b): fork()'s prepare takes every shard
        // mutex (after the purger layer, whose pass calls into caches; no
        // operation holds two shard mutexes, and a shard's mutex is held
        // while the allocator is called, never the other way round), parent
        // and child release them. A rebuild in flight has no leader in the
        // child: flights carry the fork generation they began in, and the
        // child replaces older ones instead of waiting for them.
        forkNode = ForkRegistry.cache.link(made.map { $0.state.mutex })
    }

    deinit { ForkRegistry.cache.unlink(forkNode) }

    @inlinable
    func shard(_ key: Key) -> Int { key.hashValue & (shards.count - 1) }

    // MARK: - Set

    /// Stores a copy of `bytes` under `key`, replacing any value, and
    /// unlocks it (from now on it may be purged). May evict least recently
    /// used entries to stay within `costLimit`. A rebuild of `key` in
    /// flight is superseded: its result is not stored (see
    /// `fetchBytes(forKey:rebuild:)`).
    ///
    /// An empty value is stored too (as `NSCache` stores any object): it
    /// takes no memory, no purge takes it, and it reads back as empty.
    ///
    /// - Parameters:
    ///   - cost: the entry's cost (default: its byte count); a negative
    ///     cost counts as 0. An entry whose cost exceeds `costLimit` is not
    ///     kept: the key's previous value is removed and the new one counts
    ///     as evicted at once.
    /// - Throws: what `VolatileAllocator.allocate` throws; the cache is
    ///   unchanged then.
    public func setBytes(_ bytes: UnsafeRawBufferPointer, forKey key: Key, cost: Int? = nil) throws(VRangeError) {
        let entry = try makeEntry(bytes, forKey: key, cost: cost)
        hook(.beforeStore)
        store(entry)
    }

    /// A copy of `bytes` in an unlocked buffer (none for an empty value),
    /// as an entry not yet stored.
    func makeEntry(_ bytes: UnsafeRawBufferPointer, forKey key: Key, cost: Int?) throws(VRangeError) -> CacheEntry<Key> {
        var buffer: PurgeableBuffer? = nil
        if bytes.count > 0 {
            var b = try allocator.allocate(byteCount: bytes.count)
            b.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
            b.unlock()
            buffer = consume b
        }
        return CacheEntry(key: key, buffer: buffer, byteCount: bytes.count, cost: max(0, cost ?? bytes.count))
    }

    /// Stores a copy of `bytes` under `key`. See `setBytes(_:forKey:cost:)`.
    public func setBytes(_ bytes: [UInt8], forKey key: Key, cost: Int? = nil) throws(VRangeError) {
        let r = bytes.withUnsafeBytes { raw in Result { () throws(VRangeError) in try setBytes(raw, forKey: key, cost: cost) } }
        try r.get()
    }

    /// Inserts an entry and evicts to stay within the cost limit. An entry
    /// that alone costs more than the limit replaces the key's value and is
    /// evicted at once, leaving the other entries alone.
    ///
    /// A store of the user's (`flight` nil) marks the rebuild in flight for
    /// its key, if any, superseded. The result of rebuild `flight` is stored
    /// only while that flight is the key's and was not superseded (its key
    /// was neither set nor removed while it ran); otherwise nothing changes
    /// and this returns false.
    @discardableResult
    func store(_ entry: CacheEntry<Key>, resultOf flight: RebuildFlight? = nil) -> Bool {
        let s = shard(entry.key)
        let tooCostly = entry.cost > costLimit
        var stored = true
        let replaced = shards[s].withLock { st -> CacheEntry<Key>? in
            hook(.locked(.store))
            if let flight {
                guard st.flights[entry.key] === flight, !flight.superseded.load(ordering: .relaxed) else {
                    stored = false
                    return nil
                }
            } else {
                st.flights[entry.key]?.superseded.store(true, ordering: .relaxed)
            }
            if tooCostly {
                st.stats.evictions += 1
                return st.map[entry.key].map { drop($0, from: &st) }
            }
            return insert(entry, into: &st)
        }
        _ = replaced  // freed here, outside the mutex
        guard stored else { return false }
        hook(.afterStore)
        if !tooCostly && costLimit < .max { evictIfNeeded(startingAt: s, keep: entry) }
        return true
    }

    /// Inserts `e` in its shard (whose mutex is held) and adds its cost to
    /// the eviction total in the same critical section; returns the entry
    /// it replaced (removed and subtracted), for the caller to free outside
    /// the mutex.
    @inlinable
    func insert(_ e: CacheEntry<Key>, into st: inout ShardState<Key>) -> CacheEntry<Key>? {
        let old = st.insert(e)
        adjustTotalCost(by: e.cost, minus: old?.cost ?? 0)
        return old
    }

    /// Removes `e` from its shard (whose mutex is held) and subtracts its
    /// cost from the eviction total in the same critical section. Every
    /// removal goes through here, so the total is exact: the cost of an
    /// entry is subtracted once, by the thread that removed it, after the
    /// add of the thread that inserted it.
    @inlinable @discardableResult
    func drop(_ e: CacheEntry<Key>, from st: inout ShardState<Key>) -> CacheEntry<Key> {
        st.remove(e)
        adjustTotalCost(by: 0, minus: e.cost)
        return e
    }

    /// Adds `plus` and subtracts `minus` (both ≥ 0) to the eviction total,
    /// under the mutex of the shard whose entries they are. Never below 0
    /// (it cannot be: see `drop`). Nothing to do without a cost limit.
    @inlinable
    func adjustTotalCost(by plus: Int, minus: Int) {
        guard costLimit < .max, plus != minus else { return }
        var old = totalCost.load(ordering: .relaxed)
        while true {
            let sum = Self.total(old) + UInt128(max(0, plus))
            let m = UInt128(max(0, minus))
            let new = Self.pair(sum > m ? sum - m : 0)
            let (exchanged, current) = totalCost.weakCompareExchange(
                expected: old, desired: new, successOrdering: .relaxed, failureOrdering: .relaxed)
            if exchanged { return }
            old = current
        }
    }

    @inlinable
    static func total(_ p: WordPair) -> UInt128 { UInt128(p.first) | UInt128(p.second) << 64 }

    @inlinable
    static func pair(_ v: UInt128) -> WordPair {
        WordPair(first: UInt(truncatingIfNeeded: v), second: UInt(truncatingIfNeeded: v >> 64))
    }

    /// The eviction total now (0 without a cost limit).
    @usableFromInline
    var evictionTotal: UInt128 { Self.total(totalCost.load(ordering: .relaxed)) }

    /// Evicts LRU entries, the inserting shard first, then the others in
    /// turn, until the total cost is within the limit. `keep` goes last.
    private func evictIfNeeded(startingAt first: Int, keep: CacheEntry<Key>) {
        var dropped: [CacheEntry<Key>] = []
        defer { _ = dropped }  // freed after every mutex is released
        for pass in 0..<2 {
            for k in 0..<shards.count where overLimit {
                let i = (first + k) & (shards.count - 1)
                shards[i].withLock { s in
                    hook(.locked(.evict))
                    var e = s.oldest
                    while let victim = e, overLimit {
                        e = victim.newer
                        if victim === keep && pass == 0 { continue }
                        dropped.append(drop(victim, from: &s))
                        s.stats.evictions += 1
                    }
                }
            }
        }
    }

    /// Whether the total cost is above the cost limit.
    private var overLimit: Bool { evictionTotal > UInt128(costLimit) }

    // MARK: - Get

    /// The bytes stored under `key`, copied out; nil when the key is absent
    /// or its entry was purged (the entry is dropped then). Never rebuilds.
    @inlinable
    public func bytes(forKey key: Key) -> [UInt8]? {
        hit(key, .lookup) { e in
            let copy = e.withBytes { [UInt8]($0) }
            e.release()
            return copy
        }
    }

    /// Copies the bytes stored under `key` into `destination` (as many as
    /// fit), under the shard's lock: one lock round trip, no allocation.
    ///
    /// - Returns: the value's full size, or nil when the key is absent or
    ///   its entry was purged (the entry is dropped then). Never rebuilds.
    @inlinable
    public func copyBytes(forKey key: Key, into destination: UnsafeMutableRawBufferPointer) -> Int? {
        hit(key, .copy) { e in
            let n = e.withBytes { raw in
                let n = min(raw.count, destination.count)
                if n > 0 { destination.baseAddress!.copyMemory(from: raw.baseAddress!, byteCount: n) }
                return raw.count
            }
            e.release()
            return n
        }
    }

    /// Runs `body` over the bytes stored under `key`, without copying them,
    /// while they are locked; nil when the key is absent or was purged (the
    /// entry is dropped then). Never rebuilds. `body` runs outside the
    /// cache's locks, so it may use the cache.
    ///
    /// - Returns: `body`'s result, or nil.
    /// - Throws: what `body` throws.
    @inlinable
    public func withBytes<R, E: Error>(
        forKey key: Key, _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R? {
        guard let (e, bytes) = checkOut(key) else { return nil }
        defer { checkIn(e) }
        return try body(bytes)
    }

    /// Finds and locks the entry of `key` for a reader; nil when absent or
    /// purged (dropped then).
    @inlinable
    func checkOut(_ key: Key) -> (CacheEntry<Key>, UnsafeRawBufferPointer)? {
        hit(key, .checkOut) { e in
            e.readers += 1
            return (e, e.withBytes { $0 })
        }
    }

    /// One lookup of `key` under its shard's lock, counted once: a miss when
    /// absent; a purged miss when its buffer was purged (the entry is
    /// dropped, and freed after the lock); otherwise a hit: the entry is
    /// touched and `found` runs on it, locked (acquired), still under the
    /// shard's lock. `found` releases it or keeps it for a reader.
    @inlinable
    func hit<R>(_ key: Key, _ operation: CacheOperation, _ found: (CacheEntry<Key>) -> R) -> R? {
        var dropped: CacheEntry<Key>?
        defer { _ = dropped }
        return shards[shard(key)].withLock { st -> R? in
            hook(.locked(operation))
            guard let e = st.map[key] else {
                st.stats.misses += 1
                return nil
            }
            if !e.acquire() {
                dropped = drop(e, from: &st)
                st.stats.purgedMisses += 1
                return nil
            }
            st.stats.hits += 1
            st.touch(e)
            return found(e)
        }
    }

    /// A reader is done: unlock (the buffer becomes volatile again when the
    /// last reader leaves).
    @inlinable
    func checkIn(_ e: CacheEntry<Key>) {
        shards[shard(e.key)].withLock { _ in
            hook(.locked(.checkIn))
            e.readers -= 1
            e.release()
        }
    }

    // MARK: - Remove and inspect

    /// Removes the value of `key`. Returns whether there was one. A rebuild
    /// of `key` in flight is superseded: its result is not stored (see
    /// `fetchBytes(forKey:rebuild:)`).
    @discardableResult
    public func removeValue(forKey key: Key) -> Bool {
        let removed = shards[shard(key)].withLock { st -> CacheEntry<Key>? in
            hook(.locked(.remove))
            st.flights[key]?.superseded.store(true, ordering: .relaxed)
            return st.map[key].map { drop($0, from: &st) }
        }
        return removed != nil  // freed here, outside the mutex
    }

    /// Removes every value. Rebuilds in flight are superseded: their
    /// results are not stored.
    public func removeAll() {
        for shard in shards {
            let all = shard.withLock { st -> [CacheEntry<Key>] in
                hook(.locked(.removeAll))
                for f in st.flights.values { f.superseded.store(true, ordering: .relaxed) }
                let all = Array(st.map.values)
                for e in all { drop(e, from: &st) }
                return all
            }
            _ = all  // freed here, outside the mutex
        }
    }

    /// Whether `key` has an entry (which may have been purged meanwhile).
    /// Counts no lookup.
    public func contains(_ key: Key) -> Bool {
        shards[shard(key)].withLock { st in
            hook(.locked(.contains))
            return st.map[key] != nil
        }
    }

    /// How many entries are stored (purged ones included until looked up).
    public var count: Int {
        shards.reduce(0) { n, s in
            n + s.withLock { st in
                hook(.locked(.count))
                return st.map.count
            }
        }
    }

    /// Counters and contents. Resident and purged bytes are found by asking
    /// each stored entry's memory (a scan: not for hot paths).
    public var statistics: CacheStatistics {
        var total = CacheStatistics()
        for shard in shards {
            shard.withLock { st in
                hook(.locked(.statistics))
                var s = st.stats
                for e in st.map.values {
                    if e.isPurged { s.purgedBytes += e.byteCount } else { s.residentBytes += e.byteCount }
                }
                total.add(s)
            }
        }
        return total
    }
}
