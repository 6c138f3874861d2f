// Pressure sources opened for real on this machine: PSI triggers accepted by
// the kernel, a watched cgroup removed under the purger (POLLERR or the
// v1 eventfds) with fall-through to the next source, systemd's convention
// through a FIFO and through the environment, MemAvailable from a file the
// test controls, and files that are not what they claim.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Fake memory of `units` units of 1000 bytes, oldest first.
private func fakeMemory(_ units: Int, log: PurgeLog = PurgeLog()) -> FakeMemory {
    FakeMemory("m", log: log, units: Dictionary(uniqueKeysWithValues: (0..<units).map {
        ($0, FakeMemory.Unit(priority: .normal, lastUsed: UInt64($0), bytes: 1000))
    }))
}

private let meminfoFallback = PressureSourceSpec.memAvailable(meminfoPath: "/proc/meminfo", intervalMilliseconds: 1000)

@Suite("Pressure sources, live", .serialized) struct PressureSourceTests {
    @Test func psiTriggersAreAcceptedHere() throws {
        guard Kernel.exists("/proc/pressure/memory") else {
            print("NOT RUN: no /proc/pressure/memory (kernel without PSI)")
            #expect(!Kernel.exists("/proc/pressure"))
            return
        }
        let spec = PressureSourceSpec.psi(path: "/proc/pressure/memory", systemWide: true,
                                          moderate: .defaultModerate, critical: .defaultCritical)
        let purger = try testPurger(.init(pressureSources: .only([spec, meminfoFallback])))
        let s = purger.statistics()
        #expect(s.source.active == spec, "notes: \(s.source.notes)")
        #expect(s.source.notes.isEmpty, "both triggers accepted: \(s.source.notes)")
    }

    @Test func notAPSIFileFallsThrough() throws {
        let bogus = temporaryFile("hello\n")
        defer { unlink(bogus) }
        let purger = try testPurger(.init(pressureSources: .only([
            .psi(path: bogus, systemWide: false, moderate: .defaultModerate, critical: nil),
            .psi(path: "/nonexistent/memory.pressure", systemWide: false, moderate: .defaultModerate, critical: nil),
            .cgroupV1(directory: "/nonexistent"),
            .cgroupV2(directory: "/nonexistent"),
            meminfoFallback,
        ])))
        let s = purger.statistics()
        #expect(s.source.active == meminfoFallback)
        #expect(s.source.notes.count == 4)
        #expect(s.source.notes[0].contains("malformed"))
        #expect(s.source.notes[1].contains("absent"))
        for note in s.source.notes { print("  note: \(note)") }
    }

    @Test func memAvailableFromAFileTheTestControls() throws {
        let file = temporaryFile("MemTotal: 1000000 kB\nMemAvailable: 500000 kB\n", name: "vrange-meminfo")
        defer { unlink(file) }
        let spec = PressureSourceSpec.memAvailable(meminfoPath: file, intervalMilliseconds: 5)
        let purger = try testPurger(.init(pressureSources: .only([spec]), moderateInterval: .zero, tick: .seconds(60)))
        let log = PurgeLog()
        let m = fakeMemory(8, log: log)
        purger.register(m)
        defer { withExtendedLifetime(m) {} }  // registration is weak
        #expect(purger.statistics().source.active == spec)
        // 50 % available: ten reads and no event (a bounded wait for a negative).
        #expect(!waitUntil(seconds: 0.05) { purger.statistics().pressureEvents > 0 })
        rewrite(file, "MemTotal: 1000000 kB\nMemAvailable: 200000 kB\n")       // 20 %: moderate
        #expect(waitUntil { log.all.count >= 4 })
        let e = try #require(purger.statistics().lastPressureEvent)
        #expect(e.level == .moderate)
        #expect(e.source == .memAvailable && e.sourcePath == file)
        rewrite(file, "MemTotal: 1000000 kB\nMemAvailable: 100000 kB\n")       // 10 %: critical
        #expect(waitUntil { log.all.count == 8 })
        #expect(waitUntil { purger.statistics().purges[.criticalPressure] != nil })
    }

    @Test func realMemInfoIsReReadThroughOneDescriptor() throws {
        // /proc/meminfo is a seq_file: every timer tick re-reads it with
        // pread from 0 on the descriptor opened at start. A failed read would
        // make the source vanish.
        let spec = PressureSourceSpec.memAvailable(meminfoPath: "/proc/meminfo", intervalMilliseconds: 1)
        let purger = try testPurger(.init(pressureSources: .only([spec])))
        #expect(!waitUntil(seconds: 0.05) { purger.activeSource != spec })  // ~50 reads, bounded wait
        #expect(purger.statistics().source.sourcesLost == 0)
    }

    @Test func systemdFIFO() throws {
        let path = "/tmp/vrange-test-\(getpid())-pressure.fifo"
        unlink(path)
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let spec = PressureSourceSpec.systemdWatch(path: path, write: [])
        let purger = try testPurger(.init(pressureSources: .only([spec])))
        let log = PurgeLog()
        let memory = fakeMemory(4, log: log)  // registration is weak: keep it
        purger.register(memory)
        #expect(purger.activeSource == spec)
        let writer = open(path, O_WRONLY | O_NONBLOCK)
        #expect(writer >= 0)
        #expect(write(writer, "x", 1) == 1)
        #expect(waitUntil { purger.statistics().lastPressureEvent?.outcome == .purged(bytes: 2000) })
        let s = purger.statistics()
        #expect(s.pressureEvents == 1)
        #expect(s.lastPressureEvent?.source == .systemdWatch)
        #expect(s.lastPressureEvent?.level == .moderate)
        #expect(log.all == ["m.0", "m.1"])  // half, oldest first
        close(writer)
        withExtendedLifetime(memory) {}
    }

    @Test func systemdEnvironmentEndToEnd() async throws {
        guard Kernel.exists("/proc/pressure/memory") else {
            print("NOT RUN: no /proc/pressure/memory to point $MEMORY_PRESSURE_WATCH at")
            return
        }
        // In a child, so that the environment of the other tests is untouched.
        await #expect(processExitsWith: .success) {
            setenv("MEMORY_PRESSURE_WATCH", "/proc/pressure/memory", 1)
            setenv("MEMORY_PRESSURE_WRITE", "c29tZSAyMDAwMDAgMjAwMDAwMAA=", 1)  // "some 200000 2000000\0"
            let p = try! Purger()
            let expected = PressureSourceSpec.systemdWatch(path: "/proc/pressure/memory",
                                                           write: Array("some 200000 2000000".utf8) + [0])
            if p.activeSource != expected { print("watching \(String(describing: p.activeSource))"); exit(1) }
            setenv("MEMORY_PRESSURE_WATCH", "/dev/null", 1)
            let off = try! Purger()
            if off.activeSource != nil || off.statistics().hasThread { exit(2) }
            exit(0)
        }
    }

    @Test func removedCgroupV2FallsThroughOnPOLLERR() throws {
        guard geteuid() == 0, let parent = TestCgroup.own.unified else {
            print("NOT RUN: PSI of a removed cgroup v2: \(geteuid() != 0 ? "not root" : "no cgroup2 mount")")
            #expect(geteuid() != 0 || TestCgroup.own.unifiedMount == nil)
            return
        }
        TestCgroup.removeStale()
        let cg = try TestCgroup.plain(under: parent, version: .v2, label: "psi-gone")
        defer { cg.remove() }
        guard Kernel.exists(cg.dir + "/memory.pressure") else {
            print("NOT RUN: \(cg.dir) has no memory.pressure (PSI disabled)")
            return
        }
        let spec = PressureSourceSpec.psi(path: cg.dir + "/memory.pressure", systemWide: false,
                                          moderate: .defaultModerate, critical: .defaultCritical)
        // The replacement: MemAvailable from a file that says "critical", so
        // that its timer must run for the test to pass.
        let meminfo = temporaryFile("MemTotal: 1000000 kB\nMemAvailable: 100000 kB\n", name: "vrange-meminfo")
        defer { unlink(meminfo) }
        let fallback = PressureSourceSpec.memAvailable(meminfoPath: meminfo, intervalMilliseconds: 5)
        let purger = try testPurger(.init(pressureSources: .only([spec, fallback]), tick: .seconds(60)))
        #expect(purger.activeSource == spec)
        #expect(cg.remove())
        #expect(waitUntil { purger.activeSource == fallback })
        #expect(waitUntil { purger.statistics().lastPressureEvent?.source == .memAvailable })
        let s = purger.statistics()
        #expect(s.source.sourcesLost == 1)
        #expect(s.source.notes.contains { $0.contains("vanished") && $0.contains("POLLERR") }, "\(s.source.notes)")
        #expect(s.source.notes.last == "now watching \(fallback)")
        #expect(s.lastPressureEvent?.level == .critical)
        #expect(s.hasThread)
    }

    @Test func removedCgroupV1FallsThrough() throws {
        if cannotRun("removal of a watched cgroup v1", .v1) { return }
        TestCgroup.removeStale()
        let cg = try TestCgroup.plain(under: try #require(TestCgroup.own.memoryV1), version: .v1, label: "v1-gone")
        defer { cg.remove() }
        let spec = PressureSourceSpec.cgroupV1(directory: cg.dir)
        let purger = try testPurger(.init(pressureSources: .only([spec, meminfoFallback])))
        #expect(purger.activeSource == spec, "\(purger.statistics().source.notes)")
        #expect(cg.remove())
        #expect(waitUntil { purger.activeSource == meminfoFallback })
        // (Calm /proc/meminfo: no event expected from the replacement here.)
        let s = purger.statistics()
        #expect(s.source.sourcesLost == 1)
        #expect(s.source.notes.contains { $0.contains("vanished") && $0.contains("removed") }, "\(s.source.notes)")
        #expect(s.pressureEvents == 0)  // the removal's signal is not mistaken for pressure
    }

    @Test func cgroupV2EventsSourceOpens() throws {
        if cannotRun("cgroup v2 memory.events source on a real cgroup", .v2) { return }
        let cg = try TestCgroup.make(.v2, label: "events", limit: 64 << 20)
        defer { cg.remove() }
        let spec = PressureSourceSpec.cgroupV2(directory: cg.dir)
        let purger = try testPurger(.init(pressureSources: .only([spec])))
        #expect(purger.activeSource == spec, "\(purger.statistics().source.notes)")
        #expect(cg.remove())
        #expect(waitUntil { purger.activeSource == nil })
        #expect(purger.statistics().source.sourcesLost == 1)
    }
}
