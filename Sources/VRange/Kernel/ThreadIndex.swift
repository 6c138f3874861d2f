// A small per-thread number (pthread_getspecific), handed out in order of
// first use: the allocator picks a thread's arena with it.
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    enum ThreadIndex {
        private static let next = Atomic<Int>(0)
        private static let key: pthread_key_t = {
            var key = pthread_key_t()
            let rc = pthread_key_create(&key, nil)
            precondition(rc == 0, "VRange: pthread_key_create failed (\(rc))")
            return key
        }()

        /// This thread's number: 0, 1, 2, … in the order threads first ask.
        /// A few nanoseconds (one TLS lookup) after the first call.
        @inline(__always)
        static var current: Int {
            if let raw = pthread_getspecific(key) { return Int(bitPattern: raw) - 1 }
            let n = next.add(1, ordering: .relaxed).oldValue
            _ = pthread_setspecific(key, UnsafeRawPointer(bitPattern: n + 1))
            return n
        }
    }
}

extension Kernel {
    /// sysconf(_SC_NPROCESSORS_ONLN), at least 1.
    static let onlineCPUs: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}
