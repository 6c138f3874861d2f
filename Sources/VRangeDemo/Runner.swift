// One run, seen from the parent: makes its cgroup, spawns the child (this
// executable with --child), reads its lines until the pipe closes (it ended
// or was killed: what it said until then is kept), reaps it, reads the
// cgroup's verdict (OOM kills, peak) and removes the cgroup.
import VRange
#if canImport(Glibc)
import Glibc
#endif

struct RunResult {
    let kind: CacheKind
    var samples: [Sample] = []
    var events: [Event] = []
    var notes: [String] = []
    var final: Final?
    var exitCode: Int32?
    var signal: Int32?
    var oomKills = 0
    var limitHits = 0
    var cgroupPeak: Int?
    var limit: Int?

    var last: Sample { samples.last ?? Sample() }
    var survived: Bool { exitCode == 0 && final != nil }
    var killed: Bool { signal != nil }
    /// The highest memory seen: the cgroup's peak charge, else VmHWM.
    var peak: Int { cgroupPeak ?? samples.map(\.hwm).max() ?? 0 }
    /// The cgroup hit its limit, or (no cgroup) the peak RSS went over it.
    var overLimit: Bool {
        guard let limit else { return false }
        return cgroupPeak != nil ? limitHits > 0 || peak >= limit : peak > limit
    }
    var outcome: String {
        if survived { return "survived" }
        if signal == SIGKILL && oomKills > 0 { return "OOM-killed" }
        if let signal { return "killed (signal \(signal))" }
        return "failed (exit \(exitCode ?? -1))"
    }
}

/// The path of this executable.
func ownExecutable() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { fail("cannot read /proc/self/exe") }
    return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func run(_ kind: CacheKind, _ o: Options, _ mode: PressureMode, _ live: Live) -> RunResult {
    var result = RunResult(kind: kind)
    var arguments = ["--child", kind.rawValue] + o.childArguments
    var cgroup: MemoryCgroup?
    switch mode {
    case .cgroup(let version):
        switch Cleanup.shared.makeCgroup({ () throws(VRangeError) in
            try MemoryCgroup.make(version, prefix: Cleanup.cgroupPrefix, label: kind.rawValue, limit: o.limitMiB << 20)
        }) {
        case .success(let cg):
            cgroup = cg
            arguments += ["--cgroup", cg.dir]
        case .failure(let error):
            fail("cannot make a \(version.rawValue) memory cgroup: \(error)")
        }
        result.limit = o.limitMiB << 20
    case .noCgroup:
        if kind == .vrange { arguments += ["--budget", "\(PressureMode.budget(o))"] }
        result.limit = o.limitMiB << 20
    case .none:
        break
    }

    let pid: Int32, fd: Int32
    switch Cleanup.shared.spawnChild({ spawn(arguments) }) {
    case .success(let (p, f)): (pid, fd) = (p, f)
    case .failure(let error):
        Cleanup.shared.runAll()
        fail("cannot start the \(kind.rawValue) run: \(error.why)")
    }
    live.begin(kind, limit: result.limit, cgroup: cgroup?.dir)
    let started = monotonicSeconds()
    var pending: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    reading: while true {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&p, 1, 200)
        if monotonicSeconds() - started > o.longestRun + 30 {
            live.message("the \(kind.rawValue) run does not end: killing it")
            kill(pid, SIGKILL)
        }
        if ready <= 0 { continue }
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break reading }
        pending += buffer[0..<n]
        while let nl = pending.firstIndex(of: 10) {
            handle(String(decoding: pending[..<nl], as: UTF8.self), &result, live)
            pending.removeSubrange(...nl)
        }
    }
    close(fd)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    Cleanup.shared.remove(child: pid)
    if status & 0x7f == 0 { result.exitCode = (status >> 8) & 0xff } else { result.signal = status & 0x7f }
    if let cg = cgroup {
        result.oomKills = cg.oomKills
        result.limitHits = cg.limitHits
        result.cgroupPeak = cg.peakUsage
        Cleanup.shared.remove(cg)
    }
    live.end(result)
    return result
}

private func handle(_ line: String, _ r: inout RunResult, _ live: Live) {
    let body = line.dropFirst(2)
    switch line.prefix(2) {
    case "S ":
        let s = Sample(fields(body))
        r.samples.append(s)
        live.sample(s)
    case "E ":
        let e = Event(fields(body))
        r.events.append(e)
        live.event(e)
    case "D ":
        r.final = Final(fields(body))
    case "N ":
        r.notes.append(String(body))
        live.message(String(body))
    default:
        if !line.isEmpty {
            r.notes.append(line)
            live.message("child: \(line)")
        }
    }
}

/// Spawns this executable with `arguments`, its stdout and stderr on a
/// pipe; returns its pid and the pipe's read end. The child gets the
/// termination signals unblocked and at their default action.
struct SpawnError: Error {
    let why: String
}

private func spawn(_ arguments: [String]) -> Result<(Int32, Int32), SpawnError> {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else {
        return .failure(SpawnError(why: "pipe: errno \(errno)"))
    }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    var defaults = Cleanup.signals
    sigaddset(&defaults, SIGPIPE)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let path = ownExecutable()
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    // No backtracer in the children: a child that crashes should end now,
    // not hold the pipe while it symbolicates.
    var env: [UnsafeMutablePointer<CChar>?] = [strdup("SWIFT_BACKTRACE=enable=no")]
    var e = environ
    while let entry = e.pointee {
        if !String(cString: entry).hasPrefix("SWIFT_BACKTRACE=") { env.append(strdup(entry)) }
        e += 1
    }
    env.append(nil)
    defer { for v in env { free(v) } }
    var pid: Int32 = 0
    let rc = posix_spawn(&pid, path, &actions, &attributes, argv, env)
    close(fds[1])
    guard rc == 0 else {
        close(fds[0])
        return .failure(SpawnError(why: "posix_spawn \(path): \(rc)"))
    }
    return .success((pid, fds[0]))
}
