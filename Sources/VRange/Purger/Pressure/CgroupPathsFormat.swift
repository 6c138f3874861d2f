// Where the process's own cgroups are: /proc/self/cgroup (membership) and
// /proc/self/mountinfo (where each hierarchy is mounted), parsed apart from
// reading them.

/// The process's cgroup memberships (/proc/self/cgroup).
struct CgroupMembership: Sendable, Equatable {
    /// Path in the cgroup v2 (unified) hierarchy: the "0::/path" line.
    var unified: String?
    /// Path in the cgroup v1 hierarchy that has the memory controller.
    var memoryV1: String?

    /// Parses lines "hierarchy-ID:controller-list:path" (the path may itself
    /// contain ':').
    ///
    /// - Throws: `.malformedFile` for a line with fewer than three fields, a
    ///   non-numeric hierarchy ID, or a path that is not absolute.
    static func parse(_ bytes: [UInt8], path: String = "/proc/self/cgroup") throws(VRangeError) -> CgroupMembership {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .malformedFile(path: path, reason: "not UTF-8 text")
        }
        var out = CgroupMembership()
        for line in text.split(separator: "\n") where !line.isEmpty {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            func fail(_ reason: String) -> VRangeError {
                .malformedFile(path: path, reason: "\"\(line.prefix(80))\": \(reason)")
            }
            guard parts.count == 3 else { throw fail("not id:controllers:path") }
            guard let id = Int(parts[0]), id >= 0 else { throw fail("hierarchy id is not a number") }
            guard parts[2].hasPrefix("/") else { throw fail("path is not absolute") }
            let controllers = parts[1].split(separator: ",")
            if id == 0 && parts[1].isEmpty {
                out.unified = String(parts[2])
            } else if controllers.contains("memory") {
                out.memoryV1 = String(parts[2])
            }
        }
        return out
    }
}

/// One line of /proc/self/mountinfo, the fields the purger needs.
struct MountInfoEntry: Sendable, Equatable {
    /// The directory of the mounted filesystem that appears at `mountPoint`.
    var root: String
    var mountPoint: String
    var fileSystemType: String
    /// Per-superblock options (for cgroup v1: the controllers, e.g. "rw,memory").
    var superOptions: [String]

    /// Parses /proc/self/mountinfo ("36 35 98:0 /root /mnt opts [tags…] -
    /// fstype source superopts"), decoding the octal escapes (\040 …) of
    /// paths.
    ///
    /// - Throws: `.malformedFile` for a line without the " - " separator or
    ///   with too few fields.
    static func parse(_ bytes: [UInt8], path: String = "/proc/self/mountinfo") throws(VRangeError) -> [MountInfoEntry] {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .malformedFile(path: path, reason: "not UTF-8 text")
        }
        var out: [MountInfoEntry] = []
        for line in text.split(separator: "\n") where !line.isEmpty {
            let fields = line.split(separator: " ")
            func fail(_ reason: String) -> VRangeError {
                .malformedFile(path: path, reason: "\"\(line.prefix(80))\": \(reason)")
            }
            guard let dash = fields.firstIndex(of: "-") else { throw fail("no \" - \" separator") }
            guard dash >= 6 else { throw fail("fewer than 6 fields before \" - \"") }
            guard fields.count >= dash + 3 else { throw fail("fewer than 3 fields after \" - \"") }
            out.append(MountInfoEntry(
                root: unescape(fields[3]), mountPoint: unescape(fields[4]),
                fileSystemType: String(fields[dash + 1]),
                superOptions: fields[dash + 3].split(separator: ",").map(String.init)))
        }
        return out
    }

    /// Decodes mountinfo's octal escapes (\040 space, \011 tab, \012, \134).
    static func unescape(_ s: Substring) -> String {
        guard s.contains("\\") else { return String(s) }
        var bytes: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "\\"), i + 3 < u.count, let v = octal(u[(i + 1)...(i + 3)]) {
                bytes.append(v)
                i += 4
            } else {
                bytes.append(u[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func octal(_ digits: ArraySlice<UInt8>) -> UInt8? {
        guard digits.count == 3 else { return nil }
        var v: UInt32 = 0
        for d in digits {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "7") else { return nil }
            v = v * 8 + UInt32(d - UInt8(ascii: "0"))
        }
        return v <= 255 ? UInt8(v) : nil
    }
}

/// The process's own cgroup directories, found from its membership and the
/// mounts it can see.
package struct OwnCgroups: Sendable, Equatable {
    /// Its cgroup v2 directory (nil when no cgroup2 mount shows it).
    package var unified: String?
    /// The directory where the cgroup2 hierarchy is mounted.
    package var unifiedMount: String?
    /// Its cgroup v1 memory cgroup directory.
    package var memoryV1: String?
    /// The directory where the v1 memory hierarchy is mounted (its root
    /// memory cgroup, which receives the system-wide reclaim events).
    package var memoryV1Mount: String?

    /// Joins membership and mounts: a cgroup at `path` in a hierarchy mounted
    /// with root `r` at `m` lives at `m + path.dropFirst(r)`. A path outside
    /// the mount's root is invisible here (another namespace) and left nil.
    static func resolve(_ membership: CgroupMembership, _ mounts: [MountInfoEntry]) -> OwnCgroups {
        func locate(_ path: String?, in mount: MountInfoEntry?) -> String? {
            guard let path, let mount else { return nil }
            let root = mount.root == "/" ? "" : mount.root
            guard path == root || path.hasPrefix(root + "/") || root.isEmpty else { return nil }
            let rest = path.dropFirst(root.count)
            let joined = mount.mountPoint + (rest == "/" ? "" : rest)
            return joined.isEmpty ? "/" : joined
        }
        let v2 = mounts.first { $0.fileSystemType == "cgroup2" }
        let v1 = mounts.first { $0.fileSystemType == "cgroup" && $0.superOptions.contains("memory") }
        return OwnCgroups(
            unified: locate(membership.unified, in: v2), unifiedMount: v2?.mountPoint,
            memoryV1: locate(membership.memoryV1, in: v1),
            memoryV1Mount: v1?.root == "/" ? v1?.mountPoint : nil)
    }
}
