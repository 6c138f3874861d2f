// Every pressure source's files parsed from this machine's real files and
// from malformed ones (table-driven): a typed error, never a crash. Plus
// base64 for $MEMORY_PRESSURE_WRITE and the headroom arithmetic.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Whether `body` throws `.malformedFile` (and nothing else).
private func isMalformed<T>(_ body: () throws -> T) -> Bool {
    do { _ = try body(); return false } catch {
        if case .malformedFile? = error as? VRangeError { return true }
        return false
    }
}

@Suite("Pressure file formats") struct PressureFormatTests {
    // MARK: - Real files of this machine

    @Test func realMemInfo() throws {
        let info = try MemInfo.parse(Kernel.readFile("/proc/meminfo"))
        #expect(info.total > 256 << 20)
        #expect(info.available > 0 && info.available <= info.total)
    }

    @Test func realPSIFiles() throws {
        guard Kernel.exists("/proc/pressure/memory") else {
            print("NOTE: no /proc/pressure/memory on this host (kernel without PSI): real PSI parse not run")
            #expect(!Kernel.exists("/proc/pressure"))
            return
        }
        let r = try PSIReading.parse(Kernel.readFile("/proc/pressure/memory"), path: "/proc/pressure/memory")
        #expect(r.fullTotal != nil)
        for other in ["/proc/pressure/cpu", "/proc/pressure/io"] where Kernel.exists(other) {
            _ = try PSIReading.parse(Kernel.readFile(other), path: other)
        }
    }

    @Test func realCgroupFiles() throws {
        let membership = try CgroupMembership.parse(Kernel.readFile("/proc/self/cgroup"))
        let mounts = try MountInfoEntry.parse(Kernel.readFile("/proc/self/mountinfo"))
        #expect(!mounts.isEmpty)
        let own = OwnCgroups.resolve(membership, mounts)
        print("own cgroups: v2 \(own.unified ?? "none") (mount \(own.unifiedMount ?? "none")), v1 memory \(own.memoryV1 ?? "none") (mount \(own.memoryV1Mount ?? "none"))")
        if let dir = own.memoryV1 {
            let physical = try MemInfo.parse(Kernel.readFile("/proc/meminfo")).total
            let usage = try CgroupUsage.parseV1(
                usage: Kernel.readFile(dir + "/memory.usage_in_bytes"), stat: Kernel.readFile(dir + "/memory.stat"),
                physicalMemory: physical, dir: dir)
            #expect(usage.usage > 0)
        } else {
            print("NOTE: no cgroup v1 memory controller here: v1 files not parsed")
        }
        if let dir = own.unified {
            if Kernel.exists(dir + "/memory.pressure") {
                _ = try PSIReading.parse(Kernel.readFile(dir + "/memory.pressure"), path: dir + "/memory.pressure")
            }
            if Kernel.exists(dir + "/memory.events") {
                _ = try CgroupV2Events.parse(Kernel.readFile(dir + "/memory.events"), path: dir + "/memory.events")
                _ = try CgroupV2Source.readUsage(dir)
            } else {
                print("NOTE: \(dir) has no memory.events (no memory controller in cgroup v2 here): parsed from the samples below only")
            }
        }
    }

    // MARK: - Samples from kernels and malformed variants

    @Test func memInfoSamplesAndMalformed() throws {
        let good = "MemTotal:       24684040 kB\nMemFree:        24554332 kB\nMemAvailable:   24453484 kB\nHugePages_Total:       0\n"
        #expect(try MemInfo.parse(bytes(good)) == MemInfo(total: 24684040 * 1024, available: 24453484 * 1024))
        let malformed: [(String, String)] = [
            ("", "empty"),
            ("MemTotal: 100 kB\n", "no MemAvailable (Linux < 3.14)"),
            ("MemAvailable: 100 kB\n", "no MemTotal"),
            ("MemTotal 100 kB\nMemAvailable: 50 kB\n", "no colon"),
            ("MemTotal: abc kB\nMemAvailable: 50 kB\n", "not a number"),
            ("MemTotal: -5 kB\nMemAvailable: 50 kB\n", "negative"),
            ("MemTotal: 100 MB\nMemAvailable: 50 kB\n", "unknown unit"),
            ("MemTotal: 100 kB extra\nMemAvailable: 50 kB\n", "trailing text"),
            ("MemTotal:\nMemAvailable: 50 kB\n", "no value"),
            ("MemTotal: 0 kB\nMemAvailable: 0 kB\n", "zero total"),
            ("MemTotal: 10 kB\nMemAvailable: 50 kB\n", "available > total"),
            ("MemTotal: 99999999999999999999 kB\nMemAvailable: 50 kB\n", "overflowing"),
            ("MemTotal: 18014398509481984 kB\nMemAvailable: 50 kB\n", "overflowing once scaled"),
        ]
        for (text, why) in malformed {
            #expect(isMalformed { try MemInfo.parse(bytes(text)) }, "\(why)")
        }
        #expect(isMalformed { try MemInfo.parse([0xff, 0xfe, 0x0a]) }, "not UTF-8")
    }

    @Test func psiSamplesAndMalformed() throws {
        let good = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n"
        #expect(try PSIReading.parse(bytes(good), path: "p") == PSIReading(someTotal: 123456, fullTotal: 42, someAverage10: 1.5))
        // cpu.pressure of old kernels: no full line.
        #expect(try PSIReading.parse(bytes("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"), path: "p").fullTotal == nil)
        let malformed: [(String, String)] = [
            ("", "empty"),
            ("full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n", "no some line"),
            ("some avg10=0.00 avg60=0.00 avg300=0.00\n", "no total"),
            ("some avg10=0.00 total=abc\n", "total not a number"),
            ("some avg10=x total=1\n", "avg10 not a number"),
            ("some total=1\n", "no avg10"),
            ("some avg10=0.00 avg60 total=1\n", "field without ="),
            ("sometimes avg10=0.00 total=1\n", "unknown line"),
            ("some =1 avg10=0.00 total=1\n", "empty field name"),
        ]
        for (text, why) in malformed {
            #expect(isMalformed { try PSIReading.parse(bytes(text), path: "p") }, "\(why)")
        }
    }

    @Test func cgroupMembershipSamplesAndMalformed() throws {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/ad9c715e\n3:cpuset:/\n0::/\n"
        #expect(try CgroupMembership.parse(bytes(v1)) == CgroupMembership(unified: "/", memoryV1: "/process_api/ad9c715e"))
        let combined = "5:cpu,memory,io:/a/b\n"
        #expect(try CgroupMembership.parse(bytes(combined)).memoryV1 == "/a/b")
        let v2 = "0::/system.slice/app.service\n"
        #expect(try CgroupMembership.parse(bytes(v2)) == CgroupMembership(unified: "/system.slice/app.service", memoryV1: nil))
        #expect(try CgroupMembership.parse(bytes("0::/a:b\n")).unified == "/a:b")  // ':' inside a path
        let malformed: [(String, String)] = [
            ("0:/\n", "two fields"),
            ("x::/\n", "id not a number"),
            ("-1::/\n", "negative id"),
            ("0::relative\n", "relative path"),
            ("4:memory\n", "no path"),
        ]
        for (text, why) in malformed {
            #expect(isMalformed { try CgroupMembership.parse(bytes(text)) }, "\(why)")
        }
    }

    @Test func mountInfoSamplesAndMalformed() throws {
        let text = """
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
        50 23 0:40 /docker/abc /sys/fs/cgroup/my\\040dir rw master:2 - cgroup2 cgroup2 rw,nsdelegate

        """
        let m = try MountInfoEntry.parse(bytes(text))
        #expect(m.count == 3)
        #expect(m[0] == MountInfoEntry(root: "/", mountPoint: "/sys/fs/cgroup/memory", fileSystemType: "cgroup", superOptions: ["rw", "memory"]))
        #expect(m[1].fileSystemType == "cgroup2")
        #expect(m[2].mountPoint == "/sys/fs/cgroup/my dir")
        #expect(m[2].root == "/docker/abc")
        #expect(MountInfoEntry.unescape("a\\011b\\134c\\9") == "a\tb\\c\\9")
        let malformed: [(String, String)] = [
            ("35 31 0:32 / /mnt rw cgroup cgroup rw\n", "no separator"),
            ("35 31 / - cgroup cgroup rw\n", "too few fields before"),
            ("35 31 0:32 / /mnt rw - cgroup\n", "too few fields after"),
        ]
        for (text, why) in malformed {
            #expect(isMalformed { try MountInfoEntry.parse(bytes(text)) }, "\(why)")
        }
    }

    @Test func ownCgroupsResolveThroughMountRoots() throws {
        let mounts = try MountInfoEntry.parse(bytes("""
        35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
        41 31 0:38 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
        """))
        let own = OwnCgroups.resolve(
            CgroupMembership(unified: "/docker/abc/app", memoryV1: "/process_api/x"), mounts)
        #expect(own.unified == "/sys/fs/cgroup/app")
        #expect(own.memoryV1 == "/sys/fs/cgroup/memory/process_api/x")
        #expect(own.memoryV1Mount == "/sys/fs/cgroup/memory")
        #expect(OwnCgroups.resolve(CgroupMembership(unified: "/docker/abc", memoryV1: nil), mounts).unified == "/sys/fs/cgroup")
        // A cgroup outside what this namespace's mount shows: not reachable.
        #expect(OwnCgroups.resolve(CgroupMembership(unified: "/elsewhere", memoryV1: nil), mounts).unified == nil)
        #expect(OwnCgroups.resolve(CgroupMembership(unified: "/", memoryV1: "/"), mounts).memoryV1 == "/sys/fs/cgroup/memory")
    }

    @Test func cgroupV2SamplesAndMalformed() throws {
        let events = "low 0\nhigh 3\nmax 1\noom 0\noom_kill 0\noom_group_kill 0\n"
        let e = try CgroupV2Events.parse(bytes(events), path: "e")
        #expect(e == CgroupV2Events(high: 3, max: 1, oom: 0, oomKill: 0))
        #expect(CgroupV2Events(high: 4, max: 1, oom: 0, oomKill: 0).level(since: e) == .moderate)
        #expect(CgroupV2Events(high: 4, max: 2, oom: 0, oomKill: 0).level(since: e) == .critical)
        #expect(CgroupV2Events(high: 3, max: 1, oom: 1, oomKill: 0).level(since: e) == .critical)
        #expect(e.level(since: e) == nil)
        for (text, why) in [("low 0\nmax 1\n", "no high"), ("high 1\n", "no max"), ("high x\nmax 1\n", "bad number"),
                            ("high\nmax 1\n", "no value"), ("high 1 2\nmax 1\n", "extra field")] {
            #expect(isMalformed { try CgroupV2Events.parse(bytes(text), path: "e") }, "\(why)")
        }
        let stat = bytes("anon 1000\nfile 5000\ninactive_file 3000\nactive_file 2000\n")
        let u = try CgroupUsage.parseV2(current: bytes("90000\n"), high: bytes("max\n"), max: bytes("100000\n"), stat: stat, dir: "d")
        #expect(u == CgroupUsage(usage: 90000, limit: 100000, inactiveFile: 3000))
        #expect(try CgroupUsage.parseV2(current: bytes("1\n"), high: bytes("80000\n"), max: bytes("100000\n"), stat: stat, dir: "d").limit == 80000)
        #expect(try CgroupUsage.parseV2(current: bytes("1\n"), high: bytes("max\n"), max: bytes("max\n"), stat: stat, dir: "d").limit == nil)
        let bad: [([UInt8], [UInt8], [UInt8], [UInt8], String)] = [
            (bytes("abc\n"), bytes("max\n"), bytes("max\n"), stat, "current not a number"),
            (bytes("1\n"), bytes("unlimited\n"), bytes("max\n"), stat, "high neither a number nor max"),
            (bytes("1\n"), bytes("max\n"), bytes("1 2\n"), stat, "two values"),
            (bytes("max\n"), bytes("max\n"), bytes("max\n"), stat, "current cannot be max"),
            (bytes("1\n"), bytes("max\n"), bytes("max\n"), bytes("anon 1\n"), "no inactive_file"),
            (bytes(""), bytes("max\n"), bytes("max\n"), stat, "empty current"),
        ]
        for (c, h, m, s, why) in bad {
            #expect(isMalformed { try CgroupUsage.parseV2(current: c, high: h, max: m, stat: s, dir: "d") }, "\(why)")
        }
    }

    @Test func cgroupV1SamplesAndMalformed() throws {
        let stat = bytes("cache 100\nhierarchical_memory_limit 268435456\ntotal_inactive_file 4096\n")
        let u = try CgroupUsage.parseV1(usage: bytes("200000000\n"), stat: stat, physicalMemory: 1 << 34, dir: "d")
        #expect(u == CgroupUsage(usage: 200000000, limit: 268435456, inactiveFile: 4096))
        let unlimited = bytes("hierarchical_memory_limit 9223372036854771712\ntotal_inactive_file 0\n")
        #expect(try CgroupUsage.parseV1(usage: bytes("5\n"), stat: unlimited, physicalMemory: 1 << 34, dir: "d").limit == nil)
        for (usage, s, why) in [
            (bytes("x\n"), stat, "usage not a number"),
            (bytes("1\n"), bytes("total_inactive_file 0\n"), "no hierarchical_memory_limit"),
            (bytes("1\n"), bytes("hierarchical_memory_limit 5\n"), "no total_inactive_file"),
            (bytes("1\n"), bytes("hierarchical_memory_limit\n"), "key without value"),
        ] {
            #expect(isMalformed { try CgroupUsage.parseV1(usage: usage, stat: s, physicalMemory: 1 << 34, dir: "d") }, "\(why)")
        }
    }

    @Test func headroomThresholds() {
        let t = HeadroomThresholds()
        #expect(t.level(available: 30, total: 100) == nil)
        #expect(t.level(available: 25, total: 100) == .moderate)
        #expect(t.level(available: 16, total: 100) == .moderate)
        #expect(t.level(available: 15, total: 100) == .critical)
        #expect(t.level(available: 0, total: 100) == .critical)
        #expect(t.level(available: 0, total: 0) == nil)
        // limit − usage + inactive file cache.
        #expect(t.level(limit: 1000, usage: 1000, reclaimable: 300) == nil)
        #expect(t.level(limit: 1000, usage: 1000, reclaimable: 250) == .moderate)
        #expect(t.level(limit: 1000, usage: 900, reclaimable: 0) == .critical)
        #expect(t.level(limit: 1000, usage: 1200, reclaimable: 100) == .critical)  // over the limit
        #expect(t.level(limit: 1000, usage: 10, reclaimable: 5000) == nil)         // clamped
    }

    @Test func base64() throws {
        let cases: [(String, [UInt8])] = [
            ("", []), ("Zg==", bytes("f")), ("Zm8=", bytes("fo")), ("Zm9v", bytes("foo")), ("Zm9vYg", bytes("foob")),
            ("c29tZSAyMDAwMDAgMjAwMDAwMAA=", bytes("some 200000 2000000") + [0]),
            ("c29tZSAy\nMDAwMDAg MjAwMDAwMAA=", bytes("some 200000 2000000") + [0]),  // whitespace ignored
            ("+/8=", [0xfb, 0xff]),
        ]
        for (text, expected) in cases { #expect(try Base64.decode(text, name: "v") == expected, "\(text)") }
        for bad in ["Z", "Zg=a", "Zg===", "Zm9v=", "Z$==", "Zh==", "Zm9=", "===="] {
            #expect(isMalformed { try Base64.decode(bad, name: "v") }, "\(bad)")
        }
    }

    @Test func errnoMeaningsForFallThrough() {
        #expect(describe(SystemError(call: "read(/proc/pressure/memory)", errno: EOPNOTSUPP)).contains("compiled in but disabled"))
        #expect(describe(SystemError(call: "write(x)", errno: EINVAL)).contains("multiple of 2 s"))
        #expect(describe(SystemError(call: "open(x)", errno: EACCES)).contains("not permitted"))
        #expect(describe(SystemError(call: "read(x)", errno: ENODEV)).contains("gone"))
    }
}
