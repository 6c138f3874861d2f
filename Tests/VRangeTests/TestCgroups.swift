// Child cgroups for the purger's tests, v1 and v2: created under the test
// process's own cgroup (v1 memory) or where the memory controller can be
// delegated (v2), named vrange-test-<pid>-<label> so that leftovers of a
// crashed run (whose pid is gone) are found and removed, and removed again
// after each test, also when it fails.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

struct TestCgroup {
    enum Version: String { case v1 = "cgroup v1", v2 = "cgroup v2" }
    let version: Version
    let dir: String

    static let prefix = "vrange-test-"

    /// The test process's own cgroups, from the real /proc files.
    static var own: OwnCgroups {
        guard let membership = try? CgroupMembership.parse(Kernel.readFile("/proc/self/cgroup")),
              let mounts = try? MountInfoEntry.parse(Kernel.readFile("/proc/self/mountinfo")) else { return OwnCgroups() }
        return OwnCgroups.resolve(membership, mounts)
    }

    /// Why a memory-limited cgroup of `version` cannot be made here, or nil
    /// when it can (root and the controller are there).
    static func unavailable(_ version: Version) -> String? {
        if geteuid() != 0 { return "not root (euid \(geteuid())): creating cgroups needs root" }
        switch version {
        case .v1:
            guard let dir = own.memoryV1 else { return "no cgroup v1 memory controller mounted" }
            return access(dir, W_OK) == 0 ? nil : "own memory cgroup \(dir) not writable"
        case .v2:
            guard own.unifiedMount != nil else { return "no cgroup2 mount" }
            return v2Parent() == nil ? "no memory controller in the cgroup v2 hierarchy (controllers at the root: \(v2RootControllers.isEmpty ? "none" : v2RootControllers))" : nil
        }
    }

    static var v2RootControllers: String {
        guard let root = own.unifiedMount else { return "" }
        return (readText(root + "/cgroup.controllers") ?? "").split(separator: "\n").first.map(String.init) ?? ""
    }

    /// A v2 directory under which a child gets the memory controller: the
    /// own cgroup or, failing that (a cgroup with processes cannot delegate
    /// controllers), the hierarchy's root.
    static func v2Parent() -> String? {
        for parent in [own.unified, own.unifiedMount].compactMap({ $0 }) {
            let controllers = (readText(parent + "/cgroup.controllers") ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard controllers.contains("memory") else { continue }
            let subtree = readText(parent + "/cgroup.subtree_control") ?? ""
            if subtree.contains("memory") { return parent }
            if (try? Kernel.writeFile(parent + "/cgroup.subtree_control", "+memory")) != nil { return parent }
        }
        return nil
    }

    /// Makes a memory-limited cgroup (`limit` bytes; v2 also sets
    /// memory.high to the same, so that its events fire).
    static func make(_ version: Version, label: String, limit: Int) throws -> TestCgroup {
        removeStale()
        let parent: String
        switch version {
        case .v1: parent = try #require(own.memoryV1)
        case .v2: parent = try #require(v2Parent())
        }
        let cg = try plain(under: parent, version: version, label: label)
        do {
            switch version {
            case .v1:
                try Kernel.writeFile(cg.dir + "/memory.limit_in_bytes", "\(limit)")
            case .v2:
                try Kernel.writeFile(cg.dir + "/memory.max", "\(limit)")
                try? Kernel.writeFile(cg.dir + "/memory.swap.max", "0")
            }
        } catch {
            cg.remove()
            throw error
        }
        return cg
    }

    /// Makes an empty cgroup under `parent` (no limit).
    static func plain(under parent: String, version: Version, label: String) throws -> TestCgroup {
        let dir = parent + "/" + prefix + "\(getpid())-\(label)"
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw SystemError(call: "mkdir(\(dir))", errno: errno)
        }
        return TestCgroup(version: version, dir: dir)
    }

    /// Moves process `pid` (0: the caller) into the cgroup.
    func add(pid: pid_t = 0) throws {
        try Kernel.writeFile(dir + "/cgroup.procs", "\(pid == 0 ? getpid() : pid)")
    }

    /// OOM kills in the cgroup so far.
    var oomKills: Int {
        let file = version == .v1 ? "/memory.oom_control" : "/memory.events"
        let values = (try? KeyValueFormat.parse(Kernel.readFile(dir + file), path: file)) ?? [:]
        return Int(values["oom_kill"] ?? 0)
    }

    /// The processes in it.
    var processes: [pid_t] {
        (readText(dir + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }

    /// Kills what is left in it and removes it, retrying while the kernel
    /// finishes tearing it down (EBUSY) for up to 5 s. Returns whether it
    /// is gone.
    @discardableResult
    func remove() -> Bool {
        waitUntil(seconds: 5) {
            for pid in processes { kill(pid, SIGKILL) }
            return rmdir(dir) == 0 || errno == ENOENT
        }
    }

    /// Removes cgroups left by earlier runs whose process is gone.
    static func removeStale() {
        let own = self.own
        for parent in [own.memoryV1, own.unified, own.unifiedMount].compactMap({ $0 }) {
            guard let d = opendir(parent) else { continue }
            var stale: [String] = []
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard name.hasPrefix(prefix), let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }) else { continue }
                if kill(pid, 0) != 0 && errno == ESRCH { stale.append(parent + "/" + name) }
            }
            closedir(d)
            for dir in stale {
                let version: Version = dir.hasPrefix(own.memoryV1 ?? "\u{0}") ? .v1 : .v2
                if TestCgroup(version: version, dir: dir).remove() { print("removed a stale test cgroup: \(dir)") }
            }
        }
    }
}

/// Prints why a test cannot run here and checks, from data other than what
/// decided it, that the reason really holds (so that a broken check cannot
/// turn into a silent pass). Returns true when the test must stop.
func cannotRun(_ what: String, _ version: TestCgroup.Version) -> Bool {
    guard let reason = TestCgroup.unavailable(version) else { return false }
    print("NOT RUN: \(what): \(reason)")
    let status = readText("/proc/self/status") ?? ""
    let effectiveUID = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }
        .map { $0.split(whereSeparator: { $0 == "\t" || $0 == " " }) }.flatMap { $0.count > 2 ? Int($0[2]) : nil }
    if reason.hasPrefix("not root") {
        #expect(effectiveUID != 0, "reason 'not root' but /proc/self/status says uid 0")
    } else if version == .v2 {
        let controllers = TestCgroup.own.unifiedMount.flatMap { readText($0 + "/cgroup.controllers") } ?? ""
        #expect(!controllers.contains("memory") || effectiveUID != 0, "cgroup v2 has a memory controller: \(controllers)")
    } else {
        #expect(!(readText("/proc/self/cgroup") ?? "").contains(":memory:") || effectiveUID != 0,
                "a v1 memory cgroup exists and we are root")
    }
    return true
}
