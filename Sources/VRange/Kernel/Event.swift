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
        private let monitor = Monitor()
        private var signalled = false  // guarded by `monitor`

        /// Wakes every waiter, present and future.
        func signal() {
            monitor.locked {
                signalled = true
                monitor.broadcast()
            }
        }

        /// Blocks until `signal()` was called.
        func wait() {
            monitor.locked {
                while !signalled { monitor.wait() }
            }
        }
    }
}
