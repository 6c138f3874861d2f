// What the parent must undo on every exit path: children to kill, cgroups to
// remove. SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken
// by one thread with sigwait(), which cleans up and exits: no work in a
// signal handler. Cgroups left by a run that was killed outright
// (SIGKILL) are removed by the next run at start (their pid is gone).
import Synchronization
import VRange
#if canImport(Glibc)
import Glibc
#endif

final class Cleanup: Sendable {
    static let shared = Cleanup()
    static let cgroupPrefix = "vrange-demo-"

    private struct State {
        var children: [Int32] = []
        var cgroups: [MemoryCgroup] = []
    }
    private let state = Mutex(State())

    /// Blocks the termination signals (before any thread starts, so every
    /// thread inherits the mask) and starts the thread that waits for them.
    /// Children get an empty mask back (see Runner).
    func install() {
        var set = Self.signals
        pthread_sigmask(SIG_BLOCK, &set, nil)
        _ = Thread {
            var set = Cleanup.signals
            var signal: Int32 = 0
            while sigwait(&set, &signal) != 0 {}
            // Holding the lock until the end: the main thread cannot make a
            // cgroup or spawn a child any more (it waits for the lock), and
            // everything it made is in the lists.
            Cleanup.shared.state.withLock { s in
                if isatty(1) == 1 { writeAll(1, "\n") }  // below the live status line
                Cleanup.killAndRemove(s.children, s.cgroups)
                writeAll(2, "VRangeDemo: interrupted (signal \(signal)): children killed, cgroups removed\n")
                _exit(128 + signal)
            }
        }
    }

    static var signals: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, s) }
        return set
    }

    /// Makes a cgroup and records it, atomically with respect to an
    /// interrupt (which then finds it, or finds no way to make it).
    func makeCgroup(_ make: () throws(VRangeError) -> MemoryCgroup) -> Result<MemoryCgroup, VRangeError> {
        state.withLock { s in
            let r = Result { () throws(VRangeError) in try make() }
            if case .success(let cg) = r { s.cgroups.append(cg) }
            return r
        }
    }

    /// Spawns a child and records its pid, atomically with respect to an
    /// interrupt. `spawn` returns the pid first.
    func spawnChild(_ spawn: () -> Result<(Int32, Int32), SpawnError>) -> Result<(Int32, Int32), SpawnError> {
        state.withLock { s in
            let r = spawn()
            if case .success(let (pid, _)) = r { s.children.append(pid) }
            return r
        }
    }

    func remove(child pid: Int32) { state.withLock { $0.children.removeAll { $0 == pid } } }

    /// Removes the cgroup (killing what is left in it) and forgets it.
    func remove(_ cgroup: MemoryCgroup) {
        if !cgroup.remove() { writeAll(2, "VRangeDemo: could not remove \(cgroup.dir)\n") }
        state.withLock { $0.cgroups.removeAll { $0 == cgroup } }
    }

    /// Kills and reaps every child, removes every cgroup.
    func runAll() {
        state.withLock { s in
            Cleanup.killAndRemove(s.children, s.cgroups)
            s.children = []
            s.cgroups = []
        }
    }

    private static func killAndRemove(_ children: [Int32], _ cgroups: [MemoryCgroup]) {
        for pid in children { kill(pid, SIGKILL) }
        for pid in children { var st: Int32 = 0; _ = waitpid(pid, &st, 0) }
        for cg in cgroups where !cg.remove() { writeAll(2, "VRangeDemo: could not remove \(cg.dir)\n") }
    }

    /// Removes cgroups of earlier runs whose process is gone; says so.
    static func removeStale() {
        for dir in MemoryCgroup.removeStale(prefix: cgroupPrefix) { say("removed a cgroup left by an earlier run: \(dir)") }
    }
}
