// One shard of a PurgeableCache: a dictionary of entries, their LRU order,
// the rebuilds in flight, and the shard's counters, all under one mutex.
// Each entry owns a PurgeableBuffer that is unlocked (volatile) except while
// a reader holds it.
import Synchronization

// The lookup paths of PurgeableCache are @inlinable, and so is what they
// touch here (@usableFromInline): unspecialized, each lookup paid several
// generic-metadata lookups in the runtime (measured: a 4 KiB hit took 2.7×
// a Dictionary's; specialized in the caller's module, see BENCHMARKS.md).

/// A stored value: its buffer, cost and place in the LRU list.
@usableFromInline
final class CacheEntry<Key: Hashable & Sendable>: @unchecked Sendable {
    @usableFromInline let key: Key
    /// Guarded by the shard's mutex (lock/unlock nest across readers). The
    /// mutex makes every access exclusive, so the runtime's dynamic
    /// exclusivity check is off for these fields (it cost ~10% of a hit).
    /// nil for an empty value: it holds no memory, so nothing purges it.
    @exclusivity(unchecked) @usableFromInline var buffer: PurgeableBuffer?
    /// The value's size in bytes.
    @usableFromInline let byteCount: Int
    @usableFromInline let cost: Int
    /// Readers running a closure over the bytes outside the mutex.
    @exclusivity(unchecked) @usableFromInline var readers = 0
    /// Dropped from the map; the last reader's reference frees it.
    @exclusivity(unchecked) @usableFromInline var removed = false
    /// LRU links (the map holds the strong references).
    @exclusivity(unchecked) @usableFromInline unowned(unsafe) var newer: CacheEntry?
    @exclusivity(unchecked) @usableFromInline unowned(unsafe) var older: CacheEntry?

    @usableFromInline
    init(key: Key, buffer: consuming PurgeableBuffer?, byteCount: Int, cost: Int) {
        self.key = key
        self.buffer = buffer
        self.byteCount = byteCount
        self.cost = cost
    }

    /// Locks the value for a reader (under the shard's mutex). Returns false
    /// when its contents were purged: the buffer is then left **unlocked**
    /// and the caller must drop the entry. Every lookup locks through here,
    /// so that no path can leave a purged, zero-filled buffer locked in the
    /// map, where every later (nested, hence "intact") lock would serve its
    /// zeros as a hit (issue 18, 5a).
    @inlinable
    func acquire() -> Bool {
        if buffer == nil { return true }
        if buffer!.lock().wasPurged {
            buffer!.unlock()
            return false
        }
        return true
    }

    /// The reader is done (under the shard's mutex).
    @inlinable
    func release() {
        if buffer != nil { buffer!.unlock() }
    }

    /// Runs `body` over the value's bytes; they must be acquired.
    @inlinable
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        if buffer == nil { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return buffer!.withUnsafeBytes(body)
    }

    /// Whether the contents are known to be purged (no reader holds them).
    var isPurged: Bool {
        if buffer == nil || readers > 0 { return false }
        return buffer?.isContentDiscarded == true
    }
}

/// A shard: its mutex-guarded state, in an object of its own (a Mutex
/// cannot be copied into an array) padded so that two shards' mutexes do
/// not share a cache line. The mutex is a pthread mutex (`Locked`), so that
/// the at-fork handlers (ForkRegistry.swift) can take it before `fork()` and
/// release it in both processes.
@usableFromInline
final class CacheShard<Key: Hashable & Sendable>: Sendable {
    @usableFromInline let state = Locked(ShardState<Key>())
    private let padding: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)

    @usableFromInline init() {}

    @inlinable
    func withLock<R>(_ body: (inout ShardState<Key>) -> R) -> R {
        state.withLock(body)
    }
}

/// Mutex-guarded state of a shard.
@usableFromInline
struct ShardState<Key: Hashable & Sendable>: ~Copyable {
    @usableFromInline var map: [Key: CacheEntry<Key>] = [:]
    /// Most and least recently used.
    @usableFromInline var newest: CacheEntry<Key>?
    @usableFromInline var oldest: CacheEntry<Key>?
    @usableFromInline var flights: [Key: RebuildFlight] = [:]
    @usableFromInline var stats = CacheStatistics()
    /// The exact total cost of the entries (costs up to Int.max each never
    /// overflow it); `stats.totalCost` is it, saturated at Int.max.
    @usableFromInline var cost: Int128 = 0

    @usableFromInline init() {}

    @inlinable
    mutating func link(_ e: CacheEntry<Key>) {
        e.older = newest
        e.newer = nil
        newest?.newer = e
        newest = e
        if oldest == nil { oldest = e }
    }

    @inlinable
    mutating func unlink(_ e: CacheEntry<Key>) {
        if let n = e.newer { n.older = e.older } else { newest = e.older }
        if let o = e.older { o.newer = e.newer } else { oldest = e.newer }
        e.newer = nil
        e.older = nil
    }

    @inlinable
    mutating func touch(_ e: CacheEntry<Key>) {
        if newest === e { return }
        unlink(e)
        link(e)
    }

    /// Removes `e` from the map and the list; returns it so that the caller
    /// drops the last reference outside the mutex. The cache calls it (and
    /// `insert`) only through `PurgeableCache.drop`/`insert`, which keep its
    /// eviction total in the same critical section.
    @inlinable @discardableResult
    mutating func remove(_ e: CacheEntry<Key>) -> CacheEntry<Key> {
        map[e.key] = nil
        unlink(e)
        e.removed = true
        stats.entries -= 1
        cost -= Int128(e.cost)
        stats.totalCost = Int(clamping: cost)
        return e
    }

    @inlinable
    mutating func insert(_ e: CacheEntry<Key>) -> CacheEntry<Key>? {
        let old = map[e.key].map { remove($0) }
        map[e.key] = e
        link(e)
        stats.entries += 1
        cost += Int128(e.cost)
        stats.totalCost = Int(clamping: cost)
        return old
    }
}
