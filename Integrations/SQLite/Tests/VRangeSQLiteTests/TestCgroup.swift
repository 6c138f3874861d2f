// A memory-limited cgroup for the pressure test (root; v2 preferred, else
// v1, as the demo chooses). The library's MemoryCgroup does this for the
// demo and the library's tests, but it is `package` API, out of reach of
// this package: this is the small part the test needs.
import Foundation

struct TestCgroup {
    enum Version: String { case v1 = "cgroup v1", v2 = "cgroup v2" }
    let version: Version
    let dir: String

    /// Makes `<parent>/vrange-sqlite-<pid>-<label>` limited to `limit` bytes
    /// with no swap; the reason when none can be made here.
    static func make(label: String, limit: Int) -> Result<TestCgroup, Failure> {
        var reasons: [String] = []
        let name = "vrange-sqlite-\(getpid())-\(label)"
        if let parent = v2Parent(&reasons) {
            let cg = TestCgroup(version: .v2, dir: parent + "/" + name)
            if cg.create([("memory.max", "\(limit)"), ("memory.swap.max", "0")], &reasons) { return .success(cg) }
        }
        if let parent = v1Parent(&reasons) {
            let cg = TestCgroup(version: .v1, dir: parent + "/" + name)
            // The limit first: v1 refuses a memory+swap limit below it.
            if cg.create([("memory.limit_in_bytes", "\(limit)"), ("memory.memsw.limit_in_bytes", "\(limit)")], &reasons) {
                return .success(cg)
            }
        }
        return .failure(Failure(reason: reasons.joined(separator: "; ")))
    }

    struct Failure: Error { let reason: String }

    /// Makes the directory and writes `knobs` in order (those the kernel
    /// does not offer, such as swap limits without swap accounting, skipped).
    private func create(_ knobs: [(String, String)], _ reasons: inout [String]) -> Bool {
        Self.removeStale(in: (dir as NSString).deletingLastPathComponent, version: version)
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            reasons.append("\(version.rawValue): mkdir \(dir): errno \(errno)")
            return false
        }
        for (key, value) in knobs {
            let path = dir + "/" + key
            guard FileManager.default.fileExists(atPath: path) else { continue }
            do { try value.write(toFile: path, atomically: false, encoding: .utf8) } catch {
                reasons.append("\(version.rawValue): cannot write \(path): \(error)")
                remove()
                return false
            }
        }
        return true
    }

    /// OOM kills in it so far.
    var oomKills: Int {
        let file = version == .v1 ? "memory.oom_control" : "memory.events"
        let text = (try? String(contentsOfFile: dir + "/" + file, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line -> Int? in
            let parts = line.split(separator: " ")
            return parts.count == 2 && parts[0] == "oom_kill" ? Int(parts[1]) : nil
        }.first ?? 0
    }

    /// Removes cgroups `vrange-sqlite-<pid>-…` under `parent` whose process
    /// is gone (left by a test run that was killed).
    private static func removeStale(in parent: String, version: Version) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []
        for name in names where name.hasPrefix("vrange-sqlite-") {
            guard let pid = Int32(name.dropFirst("vrange-sqlite-".count).prefix { $0 != "-" }),
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            TestCgroup(version: version, dir: parent + "/" + name).remove()
        }
    }

    /// Kills what is left in it and removes it.
    func remove() {
        for _ in 0..<500 {
            let procs = (try? String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8)) ?? ""
            for pid in procs.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
            if rmdir(dir) == 0 || errno == ENOENT { return }
            usleep(10_000)
        }
    }

    // MARK: - Where

    /// (mount point, super options) of each cgroup / cgroup2 mount.
    private static var mounts: [(type: String, point: String, options: String)] {
        let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { return nil }
            let left = halves[0].split(separator: " "), right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 3 else { return nil }
            return (String(right[0]), String(left[4]), String(right[2]))
        }
    }

    /// The own cgroup's path in the hierarchy whose controllers field is
    /// `controllers` ("" for v2).
    private static func ownPath(_ matches: (Substring) -> Bool) -> String? {
        let text = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            if parts.count == 3 && matches(parts[1]) { return String(parts[2]) }
        }
        return nil
    }

    private static func v1Parent(_ reasons: inout [String]) -> String? {
        guard geteuid() == 0 else {
            reasons.append("cgroup v1: not root (euid \(geteuid()))")
            return nil
        }
        guard let mount = mounts.first(where: { $0.type == "cgroup" && $0.options.split(separator: ",").contains("memory") }),
              let own = ownPath({ $0.split(separator: ",").contains("memory") }) else {
            reasons.append("cgroup v1: no memory controller mounted")
            return nil
        }
        let dir = mount.point + (own == "/" ? "" : own)
        guard access(dir, W_OK) == 0 else {
            reasons.append("cgroup v1: \(dir) not writable")
            return nil
        }
        return dir
    }

    private static func v2Parent(_ reasons: inout [String]) -> String? {
        guard let mount = mounts.first(where: { $0.type == "cgroup2" }) else {
            reasons.append("cgroup v2: no cgroup2 mount")
            return nil
        }
        let own = ownPath({ $0.isEmpty }) ?? "/"
        for parent in [mount.point + (own == "/" ? "" : own), mount.point] where access(parent, W_OK) == 0 {
            let controllers = (try? String(contentsOfFile: parent + "/cgroup.controllers", encoding: .utf8)) ?? ""
            guard controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("memory") else { continue }
            let subtree = parent + "/cgroup.subtree_control"
            let enabled = ((try? String(contentsOfFile: subtree, encoding: .utf8)) ?? "").contains("memory")
            if enabled || (try? "+memory".write(toFile: subtree, atomically: false, encoding: .utf8)) != nil { return parent }
        }
        reasons.append("cgroup v2: no writable cgroup with the memory controller (root: \(geteuid() == 0))")
        return nil
    }
}
