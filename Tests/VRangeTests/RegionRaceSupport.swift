// Helpers of the region race, fork and lifecycle tests (issue 18): a fork
// child with a watchdog, a thread held at a hook point, and the test's
// mechanism passed to an exit test through the environment.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Forks a child that runs `body` under a watchdog: SIGALRM unblocked and
/// due after `seconds` (a hang dies of SIGALRM, never blocks the suite).
/// Returns the child's wait status.
func forkedWithAlarm(seconds: UInt32 = 10, _ body: () -> Int32) -> Int32 {
    forked {
        childWatchdog(seconds)
        return body()
    }
}

/// Unblocks SIGALRM and arms it: a hang in a child dies of SIGALRM.
func childWatchdog(_ seconds: UInt32) {
    var unblock = sigset_t()
    sigemptyset(&unblock)
    sigaddset(&unblock, SIGALRM)
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    signal(SIGALRM, SIG_DFL)
    alarm(seconds)
}

/// A wait status in words, for failure messages.
func describeStatus(_ status: Int32) -> String {
    if let code = exitCode(status) { return "exit \(code)" }
    if let sig = terminatingSignal(status) { return sig == SIGALRM ? "killed by the watchdog (SIGALRM: hung)" : "signal \(sig)" }
    return "status \(status)"
}

/// The mechanism an exit test was asked for (VRANGE_TEST_MECHANISM: 1
/// userfaultfd, 2 mprotect).
func setTestMechanism(_ m: FaultMechanism) {
    setenv("VRANGE_TEST_MECHANISM", m == .userfaultfd ? "1" : "2", 1)
}

func testMechanism() -> FaultMechanism {
    environmentInt("VRANGE_TEST_MECHANISM", 1) == 1 ? .userfaultfd : .mprotect
}

/// Ends an exit test's process: 0 when `ok`, else prints `why` and exits 1.
func finish(_ ok: Bool, _ why: @autoclosure () -> String) -> Never {
    if !ok { ChildLog.say("FAIL: \(why())") }
    _exit(ok ? 0 : 1)
}

/// Whether touching `address` in a forked child raises SIGBUS (the child
/// unblocks it; exit code 100 + the byte when the read succeeds).
func childTouchRaisesSIGBUS(_ address: UnsafeRawPointer) -> (ok: Bool, status: String) {
    let status = forkedWithAlarm {
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGBUS)
        sigaddset(&unblock, SIGSEGV)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        return 100 + Int32(vr_read_byte(address) & 1)
    }
    return (terminatingSignal(status) == SIGBUS, describeStatus(status))
}

/// The outcome of a throwing region call, as a value.
func capture<T>(_ body: () throws(VRangeError) -> T) -> Result<T, VRangeError> {
    do { return .success(try body()) } catch { return .failure(error) }
}

/// Whether touching `address` would fault (a purged page: missing and
/// registered with the userfaultfd, or protected): the kernel's own read of
/// it, a write(2) from it into a pipe, fails with EFAULT instead of raising
/// a signal. A page that reads zeros without a fault is copied.
func touchFaults(_ address: UnsafeRawPointer) -> Bool {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return false }
    defer { close(fds[0]); close(fds[1]) }
    return write(fds[1], address, 1) < 0 && errno == EFAULT
}

/// Whether this process runs under ThreadSanitizer, whose runtime does not
/// support fork() of a multithreaded process (a child spun for minutes:
/// see .ci/sanitizers): the region fork tests say so and do not run there.
let underThreadSanitizer: Bool = dlsym(nil, "__tsan_init") != nil

/// Whether a fork test may run here; says why not when not.
func forkTestsRun(_ test: String) -> Bool {
    if !underThreadSanitizer { return true }
    print("NOTE: \(test) forks a multithreaded process, which ThreadSanitizer does not support; it did not run")
    return false
}
