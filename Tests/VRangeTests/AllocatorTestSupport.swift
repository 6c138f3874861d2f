// Helpers of the allocator's table tests (fork, lifecycle, extremes): a
// buffer handed between threads, a child process with a watchdog, and the
// one-line verdicts an exit test prints.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// A buffer that threads hand over (one user at a time, as the test orders).
final class BufferSlot: @unchecked Sendable {
    private var buffer: PurgeableBuffer?

    init(_ b: consuming PurgeableBuffer) { buffer = .some(b) }

    /// Runs `body` on the buffer, moved out for the duration (a fork child
    /// made meanwhile finds the slot empty: the buffer is the held thread's).
    @discardableResult
    func with<R>(_ body: (inout PurgeableBuffer) -> R) -> R {
        var b = buffer.take()!
        let r = body(&b)
        buffer = .some(b)
        return r
    }

    var isEmpty: Bool { buffer == nil }

    /// Moves the buffer out (the slot is empty from then on).
    func take() -> PurgeableBuffer { buffer.take()! }

    /// Frees the buffer (if the slot holds one).
    func free() { buffer = nil }
}

/// An allocator reference that one thread drops (the last strong one).
final class AllocatorSlot: @unchecked Sendable {
    var allocator: VolatileAllocator?
    init(_ a: VolatileAllocator) { allocator = a }
}

/// Runs `child` in a forked child with a watchdog: the child's result (its
/// exit status), or nil when it had to be killed after `seconds` (a hang).
func forkedWithWatchdog(seconds: Double = 10, _ child: () -> Int32) -> Int32? {
    let pid = fork()
    if pid == 0 {
        vr_test_hook_reset()  // the parent's rules are not the child's
        childWatchdog(UInt32(seconds) + 5)  // a backstop: the parent kills it first
        _exit(child())
    }
    var status: Int32 = 0
    let deadline = monotonicSeconds() + seconds
    while true {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { return status }
        if r < 0 && errno != EINTR { return -1 }
        if monotonicSeconds() > deadline {
            kill(pid, SIGKILL)
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            return nil
        }
        usleep(2_000)
    }
}

/// Says a child's status in words.
func describeStatus(_ status: Int32?) -> String {
    guard let status else { return "hung (killed by the watchdog after the bound)" }
    if let code = exitCode(status) { return "exited \(code)" }
    if let sig = terminatingSignal(status) { return "killed by signal \(sig)" }
    return "status \(status)"
}
