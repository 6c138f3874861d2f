// Test support for the interleaving hooks (CVRange.h): arming rules that
// make a thread yield, or publish a flag and wait for another, at a point of
// the library, so that a race test forces the interleaving it is about on
// any number of cores. Rules are process-wide: every test that arms them
// holds `hookLock` for its whole duration.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

let hookLock = Mutex<Int>(0)

/// Flags of the hooks' shared word.
enum Flag {
    static let a: UInt64 = 1 << 0
    static let b: UInt64 = 1 << 1
    static let c: UInt64 = 1 << 2
    static let d: UInt64 = 1 << 3
    static let e: UInt64 = 1 << 4
}

/// Whether this build has the hook points (debug builds do). Says so when not.
func hooksAvailable(_ test: String) -> Bool {
    if vr_test_hooks_available() != 0 { return true }
    print("NOTE: \(test) needs the test-only interleaving hooks, which only debug builds (swift test's default) compile in; it did not run")
    return false
}

/// Whether a hook test of a kernel-driven region can run here: the hooks
/// and userfaultfd. Says which is missing when not.
func kernelDrivenHooksAvailable(_ test: String) -> Bool {
    guard hooksAvailable(test) else { return false }
    if userfaultfdAvailable { return true }
    print("NOTE: \(test): userfaultfd unavailable: kernel-driven mode cannot run here; it did not run")
    return false
}

/// Runs `body` with the hooks to itself, then disarms every rule.
func withHooks(_ body: () throws -> Void) rethrows {
    try hookLock.withLock { _ in
        vr_test_hook_reset()
        defer { vr_test_hook_reset() }
        try body()
    }
}

/// Arms rule `index`: at `point` (with `arg`, 0 any; on thread `tid`, 0 any),
/// yield `yields` times, set `set`, then wait for any of `waitAny`.
func arm(
    _ index: Int32, _ point: Int32, arg: UInt = 0, tid: pid_t = 0, yields: Int32 = 0,
    set: UInt64 = 0, waitAny: UInt64 = 0, deadlineMs: Int32 = 10_000, times: Int32 = -1
) {
    vr_test_hook_arm(index, point, arg, tid, yields, set, waitAny, deadlineMs, times)
}

/// The address of page `p` of `r`, as a hook argument.
func hookArg(_ r: VolatileRegion, page p: Int) -> UInt {
    UInt(bitPattern: Int(bitPattern: r.baseAddress + p * page))
}

/// The address of the map word holding page `p` of `r`, as a hook argument.
func hookArg(_ r: VolatileRegion, wordOf p: Int) -> UInt {
    UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(r.map.words + p / VolatilityMap.pagesPerWord)))
}

/// Waits until any flag of `any` is set; false after `seconds`.
func waitForFlags(_ any: UInt64, seconds: Double = 10) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while vr_test_hook_flags() & any == 0 {
        if monotonicSeconds() > deadline { return false }
        sched_yield()
    }
    return true
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The calling thread's id, for rules that apply to one thread.
func currentTID() -> pid_t { vr_gettid() }

/// Amplification for free-running race tests: a yield at each critical
/// window of the map, the handler and the access path, on every thread.
func armAmplifiers(firstRule: Int32 = 8) {
    let points: [Int32] = [
        Int32(VR_HOOK_MAP_BEFORE_CAS), Int32(VR_HOOK_MAP_LOCKED), Int32(VR_HOOK_HANDLER_BEFORE_FILL),
        Int32(VR_HOOK_HANDLER_BEFORE_RECORD), Int32(VR_HOOK_ACCESS_AFTER_PRECHECK),
        Int32(VR_HOOK_UNMARK_CLEARED), Int32(VR_HOOK_DIRTY_PAGE), Int32(VR_HOOK_DISCARD),
    ]
    for (i, p) in points.enumerated() { arm(firstRule + Int32(i), p, yields: 1) }
}
