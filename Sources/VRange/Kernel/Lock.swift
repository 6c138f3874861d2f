// A value behind a pthread mutex: what the library's slow paths lock with.
// Synchronization.Mutex would do, but it is built on futexes in code that
// ThreadSanitizer does not see, so every value it guards would be reported
// as racing; pthread mutexes are intercepted by the sanitizers. Never used in
// the fault handler or in shared (sidecar) memory.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@usableFromInline
final class Locked<Value: ~Copyable>: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    // Out of line, so that the value is plain memory guarded by the mutex
    // (no dynamic exclusivity check on a class property, which the
    // sanitizer would see as an access outside the lock).
    @usableFromInline let value: UnsafeMutablePointer<Value>

    @usableFromInline
    init(_ value: consuming Value) {
        self.value = .allocate(capacity: 1)
        self.value.initialize(to: value)
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "VRange: pthread_mutex_init failed: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    /// Runs `body` with the value, holding the lock.
    @inlinable @inline(__always)
    func withLock<R: ~Copyable, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value.pointee)
    }

    /// Runs `body` holding the lock if it is free right now; nil otherwise.
    @inlinable @inline(__always)
    func withLockIfAvailable<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R? {
        guard pthread_mutex_trylock(mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value.pointee)
    }
}
