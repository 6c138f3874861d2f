// A pthread mutex and condition variable, for state that threads block on
// (Event, the purger loop's phase): no spinning.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    final class Monitor: @unchecked Sendable {
        private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

        init() {
            pthread_mutex_init(mutex, nil)
            pthread_cond_init(cond, nil)
        }

        deinit {
            pthread_cond_destroy(cond)
            pthread_mutex_destroy(mutex)
            cond.deallocate()
            mutex.deallocate()
        }

        /// Runs `body` holding the mutex.
        func locked<R>(_ body: () -> R) -> R {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return body()
        }

        /// Wakes every waiter (call holding the mutex, inside `locked`).
        func broadcast() { pthread_cond_broadcast(cond) }

        /// Waits for a broadcast (call holding the mutex, inside `locked`).
        func wait() { pthread_cond_wait(cond, mutex) }
    }
}
