// CLOCK_MONOTONIC, for bounded waits.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// clock_gettime(CLOCK_MONOTONIC) in nanoseconds (a vDSO call, no syscall).
    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// getpid(), recorded in the sidecar for people reading it (never used
    /// to decide whether a process is alive).
    static var processID: Int32 { getpid() }
}
