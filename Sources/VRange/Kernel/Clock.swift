// clock_gettime and nanosleep: monotonic time for bounded waits, reaction
// times and debouncing, wall time for the statistics a program shows; and
// getpid.
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
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// CLOCK_REALTIME in nanoseconds since the epoch.
    static func wallClockNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// nanosleep for `nanoseconds` (an interrupted sleep just ends early).
    static func sleep(nanoseconds: UInt64) {
        var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        _ = nanosleep(&ts, nil)
    }

    /// getpid(), recorded in the sidecar for people reading it (never used
    /// to decide whether a process is alive).
    static var processID: Int32 { getpid() }
}
