// One shard of a PurgeableCache: a dictionary of entries, their LRU order,
// the rebuilds in flight, and the shard's counters, all under one mutex.
// Each entry owns a PurgeableBuffer that is unlocked (volatile) except while
// a reader holds it.
import Synchronization

/// A stored value: its buffer, cost and place in the LRU list.
final class CacheEntry<Key: Hashable & Sendable>: @unchecked Sendable {
    let key: Key
    /// Guarded by the shard's mutex (lock/unlock nest across readers).
    var buffer: PurgeableBuffer
    let cost: Int
    /// Readers running a closure over the bytes outside the mutex.
    var readers = 0
    /// Dropped from the map; the last reader's reference frees it.
    var removed = false
    /// LRU links (the map holds the strong references).
    unowned(unsafe) var newer: CacheEntry?
    unowned(unsafe) var older: CacheEntry?

    init(key: Key, buffer: consuming PurgeableBuffer, cost: Int) {
        self.key = key
        self.buffer = buffer
        self.cost = cost
    }
}

/// A shard: its mutex-guarded state, in an object of its own (a Mutex
/// cannot be copied into an array) padded so that two shards' mutexes do
/// not share a cache line.
final class CacheShard<Key: Hashable & Sendable>: Sendable {
    let state = Mutex(ShardState<Key>())
    private let padding: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)

    @inline(__always)
    func withLock<R>(_ body: (inout ShardState<Key>) -> R) -> R {
        state.withLock { body(&$0) }
    }
}

/// Mutex-guarded state of a shard.
struct ShardState<Key: Hashable & Sendable>: ~Copyable {
    var map: [Key: CacheEntry<Key>] = [:]
    /// Most and least recently used.
    var newest: CacheEntry<Key>?
    var oldest: CacheEntry<Key>?
    var flights: [Key: RebuildFlight] = [:]
    var stats = CacheStatistics()

    mutating func link(_ e: CacheEntry<Key>) {
        e.older = newest
        e.newer = nil
        newest?.newer = e
        newest = e
        if oldest == nil { oldest = e }
    }

    mutating func unlink(_ e: CacheEntry<Key>) {
        if let n = e.newer { n.older = e.older } else { newest = e.older }
        if let o = e.older { o.newer = e.newer } else { oldest = e.newer }
        e.newer = nil
        e.older = nil
    }

    mutating func touch(_ e: CacheEntry<Key>) {
        if newest === e { return }
        unlink(e)
        link(e)
    }

    /// Removes `e` from the map and the list; returns it so that the caller
    /// drops the last reference outside the mutex.
    @discardableResult
    mutating func remove(_ e: CacheEntry<Key>) -> CacheEntry<Key> {
        map[e.key] = nil
        unlink(e)
        e.removed = true
        stats.entries -= 1
        stats.totalCost -= e.cost
        return e
    }

    mutating func insert(_ e: CacheEntry<Key>) -> CacheEntry<Key>? {
        let old = map[e.key].map { remove($0) }
        map[e.key] = e
        link(e)
        stats.entries += 1
        stats.totalCost += e.cost
        return old
    }
}
