// A one-shot event for threads that must block until something completes
// (a rebuild in flight): pthread mutex + condition variable, no spinning.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// Starts unsignalled; `signal()` wakes every waiter, present and future.
    final class Event: @unchecked Sendable {
        private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private var signalled = false  // guarded by `mutex`

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

        /// pthread_cond_broadcast under the mutex.
        func signal() {
            pthread_mutex_lock(mutex)
            signalled = true
            pthread_cond_broadcast(cond)
            pthread_mutex_unlock(mutex)
        }

        /// Blocks until `signal()` was called (pthread_cond_wait).
        func wait() {
            pthread_mutex_lock(mutex)
            while !signalled { pthread_cond_wait(cond, mutex) }
            pthread_mutex_unlock(mutex)
        }
    }
}
