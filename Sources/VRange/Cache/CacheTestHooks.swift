// Test-only interleaving hooks of the cache layer, compiled only in debug
// builds: a test installs a closure on one PurgeableCache (`testHook`),
// called at each named point of that cache's operations (some inside a
// shard's mutex); it may block there to hold a thread in the middle of an
// operation while another thread closes, clears, purges or forks.
import Synchronization

/// The operations of a cache that run under a shard's mutex.
@usableFromInline
enum CacheOperation: String, Sendable, CaseIterable {
    /// `bytes(forKey:)` (and the first lookup of `fetchBytes`).
    case lookup
    /// `copyBytes(forKey:into:)`.
    case copy
    /// `withBytes(forKey:_:)` finding and locking its entry.
    case checkOut
    /// `withBytes(forKey:_:)` giving its entry back after `body`.
    case checkIn
    /// `setBytes` inserting its entry.
    case store
    /// `setBytes` evicting to stay within the cost limit.
    case evict
    /// `removeValue(forKey:)`.
    case remove
    /// `removeAll()`.
    case removeAll
    /// `contains(_:)`.
    case contains
    /// `count`.
    case count
    /// `statistics`.
    case statistics
    /// `fetchBytes` joining or starting a rebuild.
    case join
    /// `fetchBytes` ending its rebuild's flight.
    case finish
}

/// Points of a cache's operations where a test may intervene.
@usableFromInline
enum CacheHookPoint: Sendable, Equatable {
    /// Inside the shard's mutex, in `operation`.
    case locked(CacheOperation)
    /// `fetchBytes`: the first lookup missed; no mutex held, the flight
    /// not yet joined.
    case beforeJoin
    /// `setBytes`: the value is in its (unlocked) buffer, not yet stored;
    /// no mutex held. Also a rebuild's result, after the closure returned.
    case beforeStore
    /// `setBytes`: the entry is in the map; no mutex held, the eviction
    /// not yet run.
    case afterStore
}

#if DEBUG
/// Where a test installs its hook: a closure under a mutex and a flag read
/// first, so that an operation takes that mutex only while a hook is
/// installed.
@usableFromInline
final class CacheTestHookSlot: @unchecked Sendable {
    @usableFromInline typealias Hook = @Sendable (CacheHookPoint) -> Void
    private let hook = Locked<Hook?>(nil)
    private let armed = Atomic<Bool>(false)

    @usableFromInline init() {}

    /// Installs `h` (nil: none).
    func set(_ h: Hook?) {
        hook.withLock { slot in
            slot = h
            armed.store(h != nil, ordering: .releasing)
        }
    }

    /// Calls the installed hook, if any.
    @usableFromInline
    func fire(_ point: CacheHookPoint) {
        guard armed.load(ordering: .acquiring), let h = hook.withLock({ $0 }) else { return }
        h(point)
    }
}
#endif

extension PurgeableCache {
    /// Fires `point` (debug builds; nothing in release builds).
    @inlinable @inline(__always)
    func hook(_ point: @autoclosure () -> CacheHookPoint) {
        #if DEBUG
        testHook.fire(point())
        #endif
    }
}
