// The purger's registered memory, held weakly: a region dropped by its owner
// is deinitialised as usual and simply disappears from here. A purger calls
// into an object only while it holds a *use* of it (DESIGN.md §9,
// Lifecycle), and `remove` waits, bounded, until no other thread holds one:
// after `Purger.unregister` returns, the purger never calls into the object
// again (issue 18, 1a).
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A registered object, held weakly, with its identity and who is calling
/// into it now. Guarded by the registry's mutex.
final class PurgeRegistration: @unchecked Sendable {
    let id: ObjectIdentifier
    weak var object: (any PurgeableMemory)?
    /// Unregistered: no new use is granted.
    var removed = false
    /// The threads holding a use now (one entry per use).
    var users: [pthread_t] = []

    init(_ object: any PurgeableMemory) {
        id = ObjectIdentifier(object)
        self.object = object
    }
}

final class PurgeRegistry: @unchecked Sendable {
    /// How long `remove` waits for uses held by other threads. Past it,
    /// `remove` returns anyway (the object is unregistered: no new use is
    /// granted) and the use in flight ends on its own; an object whose
    /// purge can take that long must itself wait for purges in flight
    /// before freeing what they touch (VolatileFile.close does).
    static let removalWaitLimit: Duration = .seconds(10)

    /// Internal for the at-fork handlers (ForkRegistry).
    let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let released = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var entries: [PurgeRegistration] = []

    init() {
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        released.initialize(to: pthread_cond_t())
        initCondition()
    }

    private func initCondition() {
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(released, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    /// In a fork child (the at-fork child handler, holding the mutex): the threads that
    /// held uses do not exist here, nor do those waiting in `remove`.
    /// Forgets the uses and reinitialises the condition. No allocation.
    func forkChildReset() {
        for r in entries { r.users.removeAll(keepingCapacity: true) }
        initCondition()
    }

    deinit {
        pthread_cond_destroy(released)
        released.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Adds `object` unless it is already registered. Returns whether added.
    func add(_ object: any PurgeableMemory) -> Bool {
        let id = ObjectIdentifier(object)
        return locked {
            entries.removeAll { $0.object == nil }
            if entries.contains(where: { $0.id == id }) { return false }
            entries.append(PurgeRegistration(object))
            return true
        }
    }

    /// Removes `object`, then waits until no other thread holds a use of
    /// it (at most `removalWaitLimit`). A use held by the calling thread
    /// (unregister from inside the object's own purge, on the purging
    /// thread) is not waited for: that pass calls into the object no more
    /// once this returns. Returns whether it was registered.
    func remove(_ object: any PurgeableMemory) -> Bool {
        let id = ObjectIdentifier(object)
        let me = pthread_self()
        return locked {
            let gone = entries.filter { $0.id == id }
            entries.removeAll { $0.id == id || $0.object == nil }
            for r in gone { r.removed = true }
            let had = gone.contains { $0.object != nil }
            let deadline = Kernel.monotonicNanoseconds()
                .addingSaturating(Self.removalWaitLimit.nanoseconds)
            var until = timespec(tv_sec: Int(clamping: deadline / 1_000_000_000),
                                 tv_nsec: Int(deadline % 1_000_000_000))
            while gone.contains(where: { $0.users.contains { pthread_equal($0, me) == 0 } }) {
                if pthread_cond_timedwait(released, mutex, &until) == ETIMEDOUT { break }
            }
            return had
        }
    }

    /// The registrations of the live objects, in registration order, for
    /// one pass of the purger (the mutex is not held while they are used:
    /// each call into an object goes through `withUse`).
    func snapshot() -> [PurgeRegistration] {
        locked {
            entries.removeAll { $0.object == nil }
            return entries
        }
    }

    /// Calls `body` with the object of `r` while holding a use of it; nil
    /// (without calling) when it was unregistered or dropped meanwhile.
    func withUse<R>(_ r: PurgeRegistration, _ body: (any PurgeableMemory) -> R) -> R? {
        let me = pthread_self()
        let object: (any PurgeableMemory)? = locked {
            guard !r.removed, let o = r.object else { return nil }
            r.users.append(me)
            return o
        }
        guard let object else { return nil }
        defer {
            locked {
                if let i = r.users.firstIndex(where: { pthread_equal($0, me) != 0 }) { r.users.remove(at: i) }
                pthread_cond_broadcast(released)
            }
        }
        return body(object)
    }
}

extension UInt64 {
    /// `self + other`, UInt64.max instead of wrapping.
    func addingSaturating(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
