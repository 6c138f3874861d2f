// Which source an automatic purger picks, on this machine and on made-up
// hosts (cgroup v2 container, cgroup v1 with a limit, systemd unit, no PSI,
// broken files): the order of DESIGN.md §7 and a note for each source left
// out.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// A host made of a dictionary of files and an environment.
struct FakeHost: HostView {
    var env: [String: String] = [:]
    var files: [String: String] = [:]
    /// Files that exist but fail to read with this errno.
    var failing: [String: Int32] = [:]
    /// Paths that exist without contents (directories, write-only files).
    var present: Set<String> = []

    func environment(_ name: String) -> String? { env[name] }
    func read(_ path: String) throws(VRangeError) -> [UInt8] {
        if let e = failing[path] { throw .system(SystemError(call: "open(\(path))", errno: e)) }
        guard let text = files[path] else { throw .system(SystemError(call: "open(\(path))", errno: ENOENT)) }
        return Array(text.utf8)
    }
    func exists(_ path: String) -> Bool { files[path] != nil || failing[path] != nil || present.contains(path) }

    static let meminfo = "MemTotal: 16777216 kB\nMemAvailable: 8388608 kB\n"

    /// A cgroup v2 host (the 16-core machine's kind), the process in `cgroup`.
    static func v2(cgroup: String, memoryController: Bool = true, psi: Bool = true) -> FakeHost {
        var h = FakeHost()
        h.files["/proc/meminfo"] = meminfo
        h.files["/proc/self/cgroup"] = "0::\(cgroup)\n"
        h.files["/proc/self/mountinfo"] = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
        let dir = cgroup == "/" ? "/sys/fs/cgroup" : "/sys/fs/cgroup" + cgroup
        if cgroup != "/" { h.present.insert(dir + "/cgroup.type") }
        if psi {
            h.files["/proc/pressure/memory"] = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            h.files[dir + "/memory.pressure"] = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        }
        if memoryController && cgroup != "/" { h.files[dir + "/memory.events"] = "high 0\nmax 0\n" }
        return h
    }

    /// A cgroup v1 host (the CI machine's kind), the process in memory cgroup
    /// `cgroup` with `limit` (nil: none).
    static func v1(cgroup: String, limit: UInt64?) -> FakeHost {
        var h = FakeHost()
        h.files["/proc/meminfo"] = meminfo
        h.files["/proc/self/cgroup"] = "4:memory:\(cgroup)\n0::/\n"
        h.files["/proc/self/mountinfo"] = """
        35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
        41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw

        """
        h.files["/proc/pressure/memory"] = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        let dir = "/sys/fs/cgroup/memory" + (cgroup == "/" ? "" : cgroup)
        for d in Set([dir, "/sys/fs/cgroup/memory"]) { h.present.insert(d + "/memory.pressure_level") }
        h.files[dir + "/memory.usage_in_bytes"] = "1000000\n"
        h.files[dir + "/memory.stat"] = "hierarchical_memory_limit \(limit ?? 9223372036854771712)\ntotal_inactive_file 0\n"
        return h
    }
}

private func kinds(_ plan: DetectionPlan) -> [PressureSourceKind] { plan.sources.map(\.kind) }

@Suite("Source detection") struct SourceDetectionTests {
    @Test func thisMachine() throws {
        let plan = SourceDetection.plan(LiveHost())
        print("detected here: \(plan.sources.map(\.description))")
        for note in plan.notes { print("  note: \(note)") }
        #expect(plan.sources.last?.kind == .memAvailable)
        if Kernel.exists("/proc/pressure/memory") { #expect(kinds(plan).contains(.psiSystem)) }
        // And a purger opens the first one it can.
        let purger = try Purger()
        let s = purger.statistics()
        print("automatic purger here watches: \(s.source.active?.description ?? "nothing")")
        #expect(s.source.active != nil)
        #expect(s.hasThread)
        #expect(plan.sources.contains(s.source.active!))
    }

    @Test func cgroupV2Container() {
        let plan = SourceDetection.plan(FakeHost.v2(cgroup: "/system.slice/app.service"))
        #expect(kinds(plan) == [.psiCgroup, .psiSystem, .cgroupV2Events, .memAvailable])
        #expect(plan.sources[0].path == "/sys/fs/cgroup/system.slice/app.service/memory.pressure")
        #expect(plan.sources[0] == .psi(path: "/sys/fs/cgroup/system.slice/app.service/memory.pressure", systemWide: false,
                                        moderate: .defaultModerate, critical: .defaultCritical))
    }

    @Test func cgroupV2RootIsTheWholeSystem() {
        let plan = SourceDetection.plan(FakeHost.v2(cgroup: "/"))
        #expect(kinds(plan) == [.psiSystem, .memAvailable])
        #expect(plan.notes.contains { $0.contains("root cgroup") })
    }

    @Test func cgroupV2WithoutPSI() {
        let plan = SourceDetection.plan(FakeHost.v2(cgroup: "/a", psi: false))
        #expect(kinds(plan) == [.cgroupV2Events, .memAvailable])
        #expect(plan.notes.contains { $0.contains("memory.pressure absent") })
        #expect(plan.notes.contains { $0.contains("/proc/pressure/memory absent") })
    }

    @Test func cgroupV2WithoutMemoryController() {
        let plan = SourceDetection.plan(FakeHost.v2(cgroup: "/a", memoryController: false))
        #expect(kinds(plan) == [.psiCgroup, .psiSystem, .memAvailable])
        #expect(plan.notes.contains { $0.contains("no memory controller") })
    }

    @Test func cgroupV1WithALimitComesBeforeSystemPSI() {
        let plan = SourceDetection.plan(FakeHost.v1(cgroup: "/process_api/x", limit: 256 << 20))
        #expect(kinds(plan) == [.cgroupV1PressureLevel, .psiSystem, .memAvailable])
        #expect(plan.sources[0].path == "/sys/fs/cgroup/memory/process_api/x")
    }

    @Test func cgroupV1WithoutALimitUsesTheRootAfterPSI() {
        let plan = SourceDetection.plan(FakeHost.v1(cgroup: "/process_api/x", limit: nil))
        #expect(kinds(plan) == [.psiSystem, .cgroupV1PressureLevel, .memAvailable])
        #expect(plan.sources[1].path == "/sys/fs/cgroup/memory")
        #expect(plan.notes.contains { $0.contains("has no limit") })
    }

    @Test func systemdConventionComesFirst() {
        var host = FakeHost.v2(cgroup: "/system.slice/app.service")
        host.env["MEMORY_PRESSURE_WATCH"] = "/sys/fs/cgroup/system.slice/app.service/memory.pressure"
        host.env["MEMORY_PRESSURE_WRITE"] = "c29tZSAyMDAwMDAgMjAwMDAwMAA="
        let plan = SourceDetection.plan(host)
        #expect(plan.sources.first == .systemdWatch(path: "/sys/fs/cgroup/system.slice/app.service/memory.pressure",
                                                    write: Array("some 200000 2000000".utf8) + [0]))
        #expect(kinds(plan).dropFirst() == [.psiCgroup, .psiSystem, .cgroupV2Events, .memAvailable])
    }

    @Test func systemdWatchWithoutWrite() {
        var host = FakeHost.v2(cgroup: "/")
        host.env["MEMORY_PRESSURE_WATCH"] = "/run/pressure.fifo"
        #expect(SourceDetection.plan(host).sources.first == .systemdWatch(path: "/run/pressure.fifo", write: []))
    }

    @Test func systemdDevNullTurnsWatchingOff() {
        var host = FakeHost.v2(cgroup: "/a")
        host.env["MEMORY_PRESSURE_WATCH"] = "/dev/null"
        let plan = SourceDetection.plan(host)
        #expect(plan.sources.isEmpty)
        #expect(plan.notes.contains { $0.contains("/dev/null") })
    }

    @Test func malformedSystemdWriteIsNotedAndSkipped() {
        var host = FakeHost.v2(cgroup: "/")
        host.env["MEMORY_PRESSURE_WATCH"] = "/sys/fs/cgroup/memory.pressure"
        host.env["MEMORY_PRESSURE_WRITE"] = "not base64!"
        let plan = SourceDetection.plan(host)
        #expect(kinds(plan) == [.psiSystem, .memAvailable])
        #expect(plan.notes.contains { $0.contains("$MEMORY_PRESSURE_WRITE") && $0.contains("ignored") })
    }

    @Test func brokenHostFilesAreNotedNeverFatal() {
        let cases: [(String, (inout FakeHost) -> Void, [PressureSourceKind])] = [
            ("malformed /proc/self/cgroup", { $0.files["/proc/self/cgroup"] = "garbage\n" }, [.psiSystem, .memAvailable]),
            ("unreadable mountinfo", { $0.failing["/proc/self/mountinfo"] = EACCES; $0.files["/proc/self/mountinfo"] = nil },
             [.psiSystem, .memAvailable]),
            ("malformed v1 memory.stat", { $0.files["/sys/fs/cgroup/memory/x/memory.stat"] = "hierarchical_memory_limit x\n" },
             [.psiSystem, .cgroupV1PressureLevel, .memAvailable]),
            ("unreadable meminfo", { $0.failing["/proc/meminfo"] = EIO; $0.files["/proc/meminfo"] = nil },
             [.cgroupV1PressureLevel, .psiSystem, .memAvailable]),
            ("no PSI", { $0.files["/proc/pressure/memory"] = nil }, [.cgroupV1PressureLevel, .memAvailable]),
        ]
        for (why, change, expected) in cases {
            var host = FakeHost.v1(cgroup: "/x", limit: 256 << 20)
            change(&host)
            let plan = SourceDetection.plan(host)
            #expect(kinds(plan) == expected, "\(why)")
            #expect(!plan.notes.isEmpty, "\(why): a note says what was skipped")
        }
    }
}
