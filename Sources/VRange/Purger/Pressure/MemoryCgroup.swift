// Memory-limited child cgroups, v1 and v2, for the demo and the tests (the
// library itself never creates cgroups; `package` keeps this out of the
// public API). Made under the process's own memory cgroup (v1) or where the
// v2 memory controller can be delegated, named <prefix><pid>-<label> so that
// leftovers of a crashed run (whose pid is gone) are found and removed.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A memory cgroup this process made (v1 or v2), with what the demo and the
/// tests read of it. Needs root, or a delegated v2 subtree.
package struct MemoryCgroup: Sendable, Equatable {
    /// Which hierarchy it lives in.
    package enum Version: String, Sendable {
        case v1 = "cgroup v1"
        case v2 = "cgroup v2"
    }

    package let version: Version
    /// Its directory.
    package let dir: String

    package init(version: Version, dir: String) {
        self.version = version
        self.dir = dir
    }

    /// The calling process's own cgroups, from the real /proc files (empty
    /// when they cannot be read).
    package static var own: OwnCgroups {
        guard let membership = try? CgroupMembership.parse(readSourceFile("/proc/self/cgroup")),
              let mounts = try? MountInfoEntry.parse(readSourceFile("/proc/self/mountinfo")) else { return OwnCgroups() }
        return OwnCgroups.resolve(membership, mounts)
    }

    /// Why a memory-limited cgroup of `version` cannot be made here, or nil
    /// when it can (root, or a writable delegated v2 subtree, and the
    /// controller).
    package static func unavailable(_ version: Version) -> String? {
        switch version {
        case .v1:
            if geteuid() != 0 { return "not root (euid \(geteuid())): creating cgroup v1 memory cgroups needs root" }
            guard let dir = own.memoryV1 else { return "no cgroup v1 memory controller mounted" }
            return access(dir, W_OK) == 0 ? nil : "own memory cgroup \(dir) not writable"
        case .v2:
            guard own.unifiedMount != nil else { return "no cgroup2 mount" }
            if v2Parent() != nil { return nil }
            if geteuid() != 0 { return "not root (euid \(geteuid())) and no delegated cgroup v2 subtree with the memory controller" }
            let controllers = v2RootControllers
            return "no memory controller in the cgroup v2 hierarchy (controllers at the root: \(controllers.isEmpty ? "none" : controllers))"
        }
    }

    /// The controllers available at the root of the cgroup2 hierarchy.
    package static var v2RootControllers: String {
        guard let root = own.unifiedMount else { return "" }
        return firstLine(root + "/cgroup.controllers") ?? ""
    }

    /// A writable v2 directory under which a child gets the memory
    /// controller: the own cgroup or, failing that (a cgroup with processes
    /// cannot delegate controllers), the hierarchy's root. Enables the
    /// controller in its cgroup.subtree_control when needed.
    package static func v2Parent() -> String? {
        for parent in [own.unified, own.unifiedMount].compactMap({ $0 }) where access(parent, W_OK) == 0 {
            let controllers = (firstLine(parent + "/cgroup.controllers") ?? "").split(separator: " ")
            guard controllers.contains("memory") else { continue }
            if (firstLine(parent + "/cgroup.subtree_control") ?? "").split(separator: " ").contains("memory") { return parent }
            if (try? Kernel.writeFile(parent + "/cgroup.subtree_control", "+memory")) != nil { return parent }
        }
        return nil
    }

    /// Makes a cgroup with a memory limit of `limit` bytes and no swap
    /// (v1: memory.limit_in_bytes, and memory.memsw.limit_in_bytes where swap
    /// is accounted; v2: memory.max, memory.swap.max 0 and, when given,
    /// memory.high). Stale cgroups of earlier runs with the same prefix are
    /// removed first.
    ///
    /// - Throws: `.unsupported` when the hierarchy or controller is missing;
    ///   `.system` when a directory or knob cannot be written (the cgroup is
    ///   removed again then).
    package static func make(_ version: Version, prefix: String, label: String, limit: Int,
                             high: Int? = nil) throws(VRangeError) -> MemoryCgroup {
        _ = removeStale(prefix: prefix)
        let parent: String
        switch version {
        case .v1:
            guard let p = own.memoryV1 else { throw .unsupported("no cgroup v1 memory controller mounted") }
            parent = p
        case .v2:
            guard let p = v2Parent() else { throw .unsupported(unavailable(.v2) ?? "no cgroup v2 memory controller") }
            parent = p
        }
        let cg = try plain(under: parent, version: version, prefix: prefix, label: label)
        do throws(SystemError) {
            switch version {
            case .v1:
                try Kernel.writeFile(cg.dir + "/memory.limit_in_bytes", "\(limit)")
                if Kernel.exists(cg.dir + "/memory.memsw.limit_in_bytes") {
                    try Kernel.writeFile(cg.dir + "/memory.memsw.limit_in_bytes", "\(limit)")
                }
            case .v2:
                try Kernel.writeFile(cg.dir + "/memory.max", "\(limit)")
                if let high { try Kernel.writeFile(cg.dir + "/memory.high", "\(high)") }
                if Kernel.exists(cg.dir + "/memory.swap.max") { try Kernel.writeFile(cg.dir + "/memory.swap.max", "0") }
            }
        } catch {
            cg.remove()
            throw .system(error)
        }
        return cg
    }

    /// Makes an empty cgroup `<prefix><pid>-<label>` under `parent` (no
    /// limit); an existing one of that name is reused.
    ///
    /// - Throws: `.system` naming the mkdir.
    package static func plain(under parent: String, version: Version, prefix: String,
                              label: String) throws(VRangeError) -> MemoryCgroup {
        let dir = parent + "/" + prefix + "\(getpid())-\(label)"
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw .system(SystemError(call: "mkdir(\(dir))", errno: errno))
        }
        return MemoryCgroup(version: version, dir: dir)
    }

    /// Moves process `pid` (0: the caller) into the cgroup.
    ///
    /// - Throws: `.system` when cgroup.procs refuses it.
    package func add(pid: Int32 = 0) throws(VRangeError) {
        do { try Kernel.writeFile(dir + "/cgroup.procs", "\(pid == 0 ? getpid() : pid)") } catch { throw .system(error) }
    }

    /// OOM kills in the cgroup so far (v1 memory.oom_control, v2
    /// memory.events `oom_kill`).
    package var oomKills: Int { Int(value(version == .v1 ? "memory.oom_control" : "memory.events", key: "oom_kill") ?? 0) }

    /// Times the cgroup hit its limit (v1 memory.failcnt plus
    /// memory.memsw.failcnt: with both limits equal the memory+swap counter
    /// is charged first and fails first; v2 memory.events `max`).
    package var limitHits: Int {
        guard version == .v1 else { return Int(value("memory.events", key: "max") ?? 0) }
        return ["/memory.failcnt", "/memory.memsw.failcnt"].reduce(0) { $0 + (Int(firstLine(dir + $1) ?? "") ?? 0) }
    }

    /// Bytes charged now (v1 memory.usage_in_bytes, v2 memory.current).
    package var usage: Int? { Int(firstLine(dir + (version == .v1 ? "/memory.usage_in_bytes" : "/memory.current")) ?? "") }

    /// The most bytes ever charged (v1 memory.max_usage_in_bytes, v2
    /// memory.peak where the kernel has it).
    package var peakUsage: Int? {
        Int(firstLine(dir + (version == .v1 ? "/memory.max_usage_in_bytes" : "/memory.peak")) ?? "")
    }

    /// The processes in it.
    package var processes: [Int32] {
        guard let bytes = try? readSourceFile(dir + "/cgroup.procs") else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) }
    }

    /// Kills (SIGKILL) what is left in it and removes it, retrying while
    /// the kernel finishes tearing it down (EBUSY) for up to `seconds`.
    /// Returns whether it is gone.
    @discardableResult
    package func remove(seconds: Double = 5) -> Bool {
        let deadline = Kernel.monotonicNanoseconds() + UInt64(seconds * 1e9)
        while true {
            for pid in processes { kill(pid, SIGKILL) }
            if rmdir(dir) == 0 || errno == ENOENT { return true }
            if Kernel.monotonicNanoseconds() >= deadline { return false }
            Kernel.sleep(nanoseconds: 2_000_000)
        }
    }

    /// Removes cgroups named `<prefix><pid>-…` whose process `pid` is gone
    /// (left by a run that was killed), under the own v1 memory cgroup and
    /// the v2 directories where this process makes them. Returns the
    /// directories removed.
    package static func removeStale(prefix: String) -> [String] {
        let own = self.own
        var removed: [String] = []
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
                let version: Version = dir.hasPrefix((own.memoryV1 ?? "\u{0}") + "/") ? .v1 : .v2
                if MemoryCgroup(version: version, dir: dir).remove() { removed.append(dir) }
            }
        }
        return removed
    }

    /// A "key value" line's value in one of its files.
    private func value(_ file: String, key: String) -> UInt64? {
        guard let bytes = try? readSourceFile(dir + "/" + file),
              let values = try? KeyValueFormat.parse(bytes, path: file) else { return nil }
        return values[key]
    }
}

/// The first line of a small file, nil when it cannot be read.
private func firstLine(_ path: String) -> String? {
    guard let bytes = try? readSourceFile(path) else { return nil }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init)
}
