// The purger as an ordinary user: it starts, picks a source that user may
// use (on this machine system-wide PSI, whose 2 s windows unprivileged
// triggers may use), and explains the sources it may not (cgroup v1's
// cgroup.event_control is root's; sub-2 s PSI windows need
// CAP_SYS_RESOURCE). Run as uid 65534 in a child when the suite runs as
// root, in-process otherwise.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The checks, as whoever runs them. Returns 0 or a failure code, and
/// prints what it found.
func unprivilegedPurgerChecks() -> Int32 {
    ChildLog.say("euid=\(geteuid())")
    guard let purger = try? Purger() else { ChildLog.say("Purger() threw"); return 30 }
    let s = purger.statistics()
    ChildLog.say("source=\(s.source.active?.description ?? "none")")
    for note in s.source.notes { ChildLog.say("note=\(note)") }
    guard let active = s.source.active, s.hasThread else { return 31 }
    // What it picked must really be usable by this user: the plan's first
    // entries it skipped each have a note saying why.
    let plan = Purger.detectPressureSources()
    guard let index = plan.sources.firstIndex(of: active) else { return 32 }
    if s.source.notes.filter({ $0.contains("could not be opened") }).count < index { return 33 }
    // Purging works as this user.
    guard let r = try? VolatileRegion(byteCount: 4 * page), (try? r.markVolatile(0..<r.size)) != nil else { return 34 }
    purger.register(r)
    if purger.purgeAll() != 4 * page { return 35 }

    // Sources this user may not use fall through, saying why.
    if let own = TestCgroup.own.memoryV1, Kernel.exists(own + "/cgroup.event_control") {
        let p = try? Purger(.init(pressureSources: .only([.cgroupV1(directory: own),
                                                          .memAvailable(meminfoPath: "/proc/meminfo", intervalMilliseconds: 1000)])))
        let notes = p?.statistics().source.notes ?? []
        ChildLog.say("cgroupV1Notes=\(notes)")
        if geteuid() != 0 && (p?.activeSource?.kind != .memAvailable || !notes.contains { $0.contains("not permitted") }) { return 36 }
    }
    if Kernel.exists("/proc/pressure/memory"), let oneSecond = try? PSITrigger(.some, stallMicroseconds: 100_000, windowMicroseconds: 1_000_000) {
        let p = try? Purger(.init(pressureSources: .only([
            .psi(path: "/proc/pressure/memory", systemWide: true, moderate: oneSecond, critical: nil),
            .memAvailable(meminfoPath: "/proc/meminfo", intervalMilliseconds: 1000)])))
        let notes = p?.statistics().source.notes ?? []
        ChildLog.say("psi1sNotes=\(notes)")
        if geteuid() != 0 && (p?.activeSource?.kind != .memAvailable || !notes.contains { $0.contains("multiple of 2 s") }) { return 37 }
    }
    return 0
}

@Suite("Purger, unprivileged") struct UnprivilegedPurgerTests {
    @Test func startsAndPicksAUsableSource() async throws {
        if geteuid() != 0 {
            print("running as uid \(geteuid()): checking in-process")
            #expect(unprivilegedPurgerChecks() == 0)
            return
        }
        let output = await ChildLog.capture("unprivileged-purger", prefix: "  uid 65534") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("unprivileged-purger")
                // Drop to nobody for good: groups, then gid, then uid.
                if setgroups(0, nil) != 0 || setgid(65534) != 0 || setuid(65534) != 0 { exit(40) }
                if geteuid() != 65534 || setuid(0) == 0 { exit(41) }  // and there is no way back
                exit(unprivilegedPurgerChecks())
            }
        }
        #expect(output.contains("euid=65534"))
    }
}
