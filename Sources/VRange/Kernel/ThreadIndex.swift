// A small per-thread number (pthread_getspecific): the lowest number no
// live thread holds, given at a thread's first use and taken back when it
// exits (a pthread key destructor). The allocator picks a thread's arena
// with it, so live threads get distinct arenas while there are enough, even
// in programs that start and stop threads all the time.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    enum ThreadIndex {
        /// Numbers given back by exited threads, and the next new one.
        private static let pool = Locked<(free: [Int], next: Int)>(([], 0))
        private static let key: pthread_key_t = {
            var key = pthread_key_t()
            let rc = pthread_key_create(&key, { raw in
                if let raw { ThreadIndex.giveBack(Int(bitPattern: raw) - 1) }
            })
            precondition(rc == 0, "VRange: pthread_key_create failed (\(rc))")
            return key
        }()

        /// This thread's number. A few nanoseconds (one TLS lookup) after
        /// the first call, which takes a lock.
        @inline(__always)
        static var current: Int {
            if let raw = pthread_getspecific(key) { return Int(bitPattern: raw) - 1 }
            return assign()
        }

        @inline(never)
        private static func assign() -> Int {
            let n = pool.withLock { p -> Int in
                if let i = p.free.indices.min(by: { p.free[$0] < p.free[$1] }) { return p.free.remove(at: i) }
                p.next += 1
                return p.next - 1
            }
            _ = pthread_setspecific(key, UnsafeRawPointer(bitPattern: n + 1))
            return n
        }

        private static func giveBack(_ n: Int) {
            pool.withLock { $0.free.append(n) }
        }
    }
}

extension Kernel {
    /// sysconf(_SC_NPROCESSORS_ONLN), at least 1.
    static let onlineCPUs: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}
