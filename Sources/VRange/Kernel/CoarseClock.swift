// Monotonic time for the allocator's release delay and the cache's rebuild
// timings. clock_gettime goes through the vDSO: no system call.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// clock_gettime(CLOCK_MONOTONIC_COARSE) in nanoseconds: a few
    /// nanoseconds, updated every timer tick (1–4 ms). For delays.
    @inline(__always)
    static func coarseNanoseconds() -> UInt64 {
        var ts = timespec()
        _ = clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// clock_gettime(CLOCK_MONOTONIC) in nanoseconds. For measurements.
    static func nanoseconds() -> UInt64 {
        var ts = timespec()
        _ = clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
