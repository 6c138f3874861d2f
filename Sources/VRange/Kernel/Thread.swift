// pthread_create/pthread_join and the thread's name: the purger's one
// background thread.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// A joinable POSIX thread running a closure.
    final class Thread: @unchecked Sendable {
        private var handle = pthread_t()
        private let body: @Sendable () -> Void
        private let name: String

        /// pthread_create: starts `body` on a new thread named `name` (at most
        /// 15 bytes are kept, as `ps -L` shows).
        ///
        /// - Throws: `SystemError` naming `pthread_create` (EAGAIN: no
        ///   resources for another thread).
        init(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
            self.body = body
            self.name = name
            let box = Unmanaged.passRetained(self)
            let rc = pthread_create(&handle, nil, { raw in
                let me = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
                _ = me.name.withCString { vr_thread_set_name($0) }
                me.body()
                return nil
            }, box.toOpaque())
            if rc != 0 {
                box.release()
                throw SystemError(call: "pthread_create", errno: rc)
            }
        }

        /// pthread_join: waits for the body to return.
        func join() { pthread_join(handle, nil) }

        /// pthread_detach: the thread's resources go when its body returns
        /// (for a thread that cannot be joined because it is the caller).
        func detach() { pthread_detach(handle) }

        /// Whether the calling thread is this thread.
        var isCurrent: Bool { pthread_equal(handle, pthread_self()) != 0 }
    }
}
