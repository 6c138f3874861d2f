// Which pressure sources this host offers, best first, and why the others
// were left out: a plan made from the environment and the host's files
// (read through HostView, so tests can hand it real or made-up hosts).
// Opening the sources, and falling through on failure, is the purger's.

/// What detection reads of its host.
protocol HostView {
    func environment(_ name: String) -> String?
    func read(_ path: String) throws(VRangeError) -> [UInt8]
    func exists(_ path: String) -> Bool
}

/// The real host.
struct LiveHost: HostView {
    func environment(_ name: String) -> String? { Kernel.environment(name) }
    func read(_ path: String) throws(VRangeError) -> [UInt8] { try readSourceFile(path) }
    func exists(_ path: String) -> Bool { Kernel.exists(path) }
}

/// The settings detection puts into the specs it makes.
struct DetectionSettings: Sendable, Equatable {
    var psiModerate = PSITrigger.defaultModerate
    var psiCritical: PSITrigger? = PSITrigger.defaultCritical
    var memAvailableIntervalMilliseconds = 5_000
}

/// An ordered list of sources to try, and notes on what was left out.
struct DetectionPlan: Sendable, Equatable {
    var sources: [PressureSourceSpec] = []
    var notes: [String] = []
}

enum SourceDetection {
    /// The sources to try, best first:
    /// 1. `$MEMORY_PRESSURE_WATCH` (with `$MEMORY_PRESSURE_WRITE` decoded);
    ///    `/dev/null` there means the service manager turned pressure
    ///    watching off: then nothing at all is watched.
    /// 2. PSI on the process's own cgroup v2 `memory.pressure` (not at the
    ///    root of the hierarchy, which is the whole system).
    /// 3. cgroup v1 `memory.pressure_level` of its own memory cgroup, when
    ///    that cgroup (or an ancestor) has a limit below physical memory: the
    ///    limit is what gets the process OOM-killed, and system-wide PSI does
    ///    not know it.
    /// 4. PSI on `/proc/pressure/memory`.
    /// 5. cgroup v2 `memory.events` and headroom of its own cgroup.
    /// 6. cgroup v1 `memory.pressure_level` of the root memory cgroup (which
    ///    receives the system-wide reclaim events).
    /// 7. `MemAvailable` of `/proc/meminfo`, polled.
    static func plan(_ host: some HostView, _ settings: DetectionSettings = DetectionSettings()) -> DetectionPlan {
        var plan = DetectionPlan()

        // 1. systemd's convention.
        if let watch = host.environment("MEMORY_PRESSURE_WATCH"), !watch.isEmpty {
            if watch == "/dev/null" {
                plan.notes.append("$MEMORY_PRESSURE_WATCH=/dev/null: the service manager turned memory-pressure watching off; no source is watched")
                return plan
            }
            do throws(VRangeError) {
                let write = try host.environment("MEMORY_PRESSURE_WRITE").map {
                    (text: String) throws(VRangeError) -> [UInt8] in try Base64.decode(text, name: "$MEMORY_PRESSURE_WRITE")
                } ?? []
                plan.sources.append(.systemdWatch(path: watch, write: write))
            } catch {
                plan.notes.append("$MEMORY_PRESSURE_WATCH=\(watch) ignored: \(describeOpenFailure(error))")
            }
        }

        // Where the process's own cgroups are.
        var own = OwnCgroups()
        do throws(VRangeError) {
            let membership = try CgroupMembership.parse(host.read("/proc/self/cgroup"))
            let mounts = try MountInfoEntry.parse(host.read("/proc/self/mountinfo"))
            own = OwnCgroups.resolve(membership, mounts)
        } catch {
            plan.notes.append("cgroup sources skipped: \(describeOpenFailure(error))")
        }
        var physical: UInt64 = .max
        do throws(VRangeError) {
            physical = try MemInfo.parse(host.read("/proc/meminfo")).total
        } catch {
            plan.notes.append("/proc/meminfo unreadable: \(describeOpenFailure(error))")
        }

        // 2. PSI on the own cgroup v2 (a non-root cgroup has cgroup.type).
        if let dir = own.unified {
            if !host.exists(dir + "/cgroup.type") {
                plan.notes.append("PSI of the own cgroup v2 skipped: the process is in the root cgroup (\(dir)), which is the whole system")
            } else if host.exists(dir + "/memory.pressure") {
                plan.sources.append(.psi(path: dir + "/memory.pressure", systemWide: false,
                                         moderate: settings.psiModerate, critical: settings.psiCritical))
            } else {
                plan.notes.append("\(dir)/memory.pressure absent (PSI disabled, or a kernel without it)")
            }
        }

        // 3. cgroup v1 with a limit.
        var v1Limited = false
        if let dir = own.memoryV1 {
            if !host.exists(dir + "/memory.pressure_level") {
                plan.notes.append("\(dir)/memory.pressure_level absent")
            } else {
                do throws(VRangeError) {
                    let usage = try CgroupUsage.parseV1(
                        usage: host.read(dir + "/memory.usage_in_bytes"), stat: host.read(dir + "/memory.stat"),
                        physicalMemory: physical, dir: dir)
                    if usage.limit != nil {
                        v1Limited = true
                        plan.sources.append(.cgroupV1(directory: dir))
                    } else {
                        plan.notes.append("own cgroup v1 memory cgroup \(dir) has no limit: system-wide sources come first")
                    }
                } catch {
                    plan.notes.append("cgroup v1 \(dir) skipped: \(describeOpenFailure(error))")
                }
            }
        }

        // 4. System-wide PSI.
        if host.exists("/proc/pressure/memory") {
            plan.sources.append(.psi(path: "/proc/pressure/memory", systemWide: true,
                                     moderate: settings.psiModerate, critical: settings.psiCritical))
        } else {
            plan.notes.append("/proc/pressure/memory absent (a kernel without CONFIG_PSI)")
        }

        // 5. cgroup v2 memory.events.
        if let dir = own.unified, host.exists(dir + "/cgroup.type") {
            if host.exists(dir + "/memory.events") {
                plan.sources.append(.cgroupV2(directory: dir))
            } else {
                plan.notes.append("\(dir)/memory.events absent (no memory controller for this cgroup v2)")
            }
        }

        // 6. The root v1 memory cgroup: system-wide reclaim events.
        if !v1Limited, let root = own.memoryV1Mount, host.exists(root + "/memory.pressure_level") {
            plan.sources.append(.cgroupV1(directory: root))
        }

        // 7. The last resort.
        plan.sources.append(.memAvailable(meminfoPath: "/proc/meminfo",
                                          intervalMilliseconds: settings.memAvailableIntervalMilliseconds))
        return plan
    }
}
