// Row 22: pressure onset → volatile memory released, measured for real.
// The parent (root) makes a memory-limited cgroup (v1, else v2 with the
// memory controller) and re-executes this program as a child that joins it,
// holds page cache and volatile memory, starts a Purger with automatic
// detection (it picks the cgroup's own signal) and allocates past the
// limit. The child reports, per round: pressure onset (the cgroup first hit
// its limit), the first event delivered to the purger, and the first
// memory released.
import CBench
import Synchronization
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// One round's figures (nanoseconds, monotonic).
struct PressureRound {
    var onsetToRelease: Double
    var deliveryToRelease: Double
    var onsetToDelivery: Double
    var source: String
    var purgedMiB: Int
}

private func writeText(_ path: String, _ text: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    if fd < 0 { return false }
    defer { close(fd) }
    return text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) } == text.utf8.count
}

private func firstLineInt(_ path: String) -> Int? {
    (readTextFile(path) ?? "").split(separator: "\n").first.flatMap { Int($0) }
}

private func keyValue(_ path: String, _ key: String) -> Int {
    for line in (readTextFile(path) ?? "").split(separator: "\n") {
        let f = line.split(separator: " ")
        if f.count == 2, f[0] == key { return Int(f[1]) ?? 0 }
    }
    return 0
}

/// A region that records when the purger first released memory from it.
final class TimedRegion: PurgeableMemory, Sendable {
    let region: VolatileRegion
    let purgedAt = Atomic<UInt64>(0)
    init(_ region: VolatileRegion) { self.region = region }
    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) { region.forEachPurgeUnit(body) }
    func purge(unit id: Int) -> Int {
        let released = region.purge(unit: id)
        if released > 0 { _ = purgedAt.compareExchange(expected: 0, desired: now(), ordering: .relaxed) }
        return released
    }
}

/// `VRangeBench --pressure-child DIR v1|v2`: the child's side; prints
/// lines onset=, delivered=, released=, source=, purgedMiB= and exits 0, or
/// prints "error=…" and exits 1.
func pressureChildMain(dir: String, version: String) -> Never {
    alarm(60)
    func fail(_ why: String) -> Never { print("error=\(why)"); exit(1) }
    let mib = 1 << 20
    if !writeText(dir + "/cgroup.procs", "\(getpid())") { fail("cannot join \(dir)") }
    // 64 MiB of clean page cache, then 160 MiB volatile, then 160 MiB more.
    let file = "/tmp/vrange-bench-\(getpid())-cache"
    let fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    if fd < 0 { fail("cannot create \(file)") }
    unlink(file)
    let chunk = [UInt8](repeating: 0x33, count: mib)
    for _ in 0..<64 where write(fd, chunk, mib) != mib { fail("write") }
    fsync(fd)
    guard let purger = try? Purger() else { fail("Purger()") }
    guard let source = purger.activeSource, source.path.hasPrefix(dir) else {
        fail("the purger does not watch the cgroup: \(purger.activeSource?.description ?? "nothing")")
    }
    var timed: [TimedRegion] = []
    for _ in 0..<10 {
        guard let r = try? VolatileRegion(byteCount: 16 * mib) else { fail("region") }
        memset(r.baseAddress, 7, r.size)
        try? r.markVolatile(0..<r.size)
        timed.append(TimedRegion(r))
        purger.register(timed.last!)
        RecencyClock.advance()
    }
    let hitsFile = version == "v1" ? dir + "/memory.failcnt" : dir + "/memory.events"
    func hits() -> Int { version == "v1" ? firstLineInt(hitsFile) ?? 0 : keyValue(hitsFile, "high") + keyValue(hitsFile, "max") }
    let hits0 = hits()
    var onset: UInt64 = 0
    var competitor: [UnsafeMutableRawPointer] = []
    for _ in 0..<160 {
        let t = now()
        guard let p = cb_map(mib) else { fail("mmap") }
        _ = cb_touch_pages(p, mib, 4096)
        competitor.append(p)
        if onset == 0 && hits() != hits0 { onset = t }
    }
    let s = purger.statistics()
    guard let first = s.recentPressureEvents.first(where: { if case .purged = $0.outcome { return true } else { return false } })
    else { fail("no reaction (events: \(s.pressureEvents))") }
    let released: UInt64 = timed.map { $0.purgedAt.load(ordering: .relaxed) }.filter { $0 > 0 }.min() ?? 0
    if onset == 0 || released == 0 { fail("onset \(onset), released \(released)") }
    print("onset=\(onset)\ndelivered=\(first.monotonicNanoseconds)\nreleased=\(released)\nsource=\(source.kind)\npurgedMiB=\(s.purgedBytes / mib)")
    withExtendedLifetime((competitor, timed, purger)) {}
    exit(0)
}


/// Where a memory-limited cgroup can be made, or why not.
private func cgroupParent() -> (dir: String, version: String)? {
    guard geteuid() == 0 else { return nil }
    let membership = readTextFile("/proc/self/cgroup") ?? ""
    for line in membership.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        if parts.count == 3, parts[1].split(separator: ",").contains("memory") {
            let dir = "/sys/fs/cgroup/memory" + (parts[2] == "/" ? "" : String(parts[2]))
            if access(dir + "/memory.pressure_level", F_OK) == 0 { return (dir, "v1") }
        }
    }
    // cgroup v2 at /sys/fs/cgroup (the usual mount), memory delegated at the root.
    let root = "/sys/fs/cgroup"
    if (readTextFile(root + "/cgroup.controllers") ?? "").contains("memory"),
       (readTextFile(root + "/cgroup.subtree_control") ?? "").contains("memory") || writeText(root + "/cgroup.subtree_control", "+memory") {
        return (root, "v2")
    }
    return nil
}

/// Runs `rounds` rounds of the real-pressure scenario in children; nil
/// with the reason when this host cannot (not root, no memory controller).
func pressureRounds(_ rounds: Int) -> (rounds: [PressureRound], failures: [String])? {
    guard let (parent, version) = cgroupParent() else { return nil }
    var out: [PressureRound] = []
    var failures: [String] = []
    var exe = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &exe, exe.count - 1)
    guard n > 0 else { return nil }
    let program = String(decoding: exe[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    for round in 0..<rounds {
        let dir = parent + "/vrange-bench-\(getpid())-\(round)"
        mkdir(dir, 0o755)
        defer {
            for _ in 0..<500 {
                for pid in (readTextFile(dir + "/cgroup.procs") ?? "").split(separator: "\n") { kill(pid_t(pid) ?? 0, SIGKILL) }
                if rmdir(dir) == 0 || errno == ENOENT { break }
                usleep(10_000)
            }
        }
        let limit = 256 << 20
        guard writeText(dir + (version == "v1" ? "/memory.limit_in_bytes" : "/memory.max"), "\(limit)") else {
            failures.append("cannot set the limit of \(dir)")
            continue
        }
        if version == "v2" { _ = writeText(dir + "/memory.high", "\(limit * 7 / 8)") }
        guard let pipe = popen("'\(program)' --pressure-child '\(dir)' \(version)", "r") else { continue }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), pipe) != nil {
            text += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        let status = pclose(pipe)
        let oomKills = version == "v1" ? keyValue(dir + "/memory.oom_control", "oom_kill") : keyValue(dir + "/memory.events", "oom_kill")
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
        }
        guard status == 0, oomKills == 0, let onset = fields["onset"].flatMap(Double.init),
              let delivered = fields["delivered"].flatMap(Double.init), let released = fields["released"].flatMap(Double.init)
        else {
            failures.append("round \(round): status \(status), OOM kills \(oomKills), \(text.trimmingSpaces())")
            continue
        }
        out.append(PressureRound(
            onsetToRelease: released - onset, deliveryToRelease: released - delivered, onsetToDelivery: delivered - onset,
            source: fields["source"] ?? "?", purgedMiB: Int(fields["purgedMiB"] ?? "") ?? 0))
    }
    return (out, failures)
}
