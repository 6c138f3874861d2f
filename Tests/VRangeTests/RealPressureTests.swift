// Real memory pressure (issue 8's acceptance): a child process in a new
// memory-limited cgroup holds volatile memory well past the limit's
// headroom plus non-volatile canary pages, then a competing allocation in
// the same cgroup creates pressure. The purger, started with automatic
// detection inside the child, must purge the volatile memory in reaction to
// the cgroup's own signal (v1: memory.pressure_level; v2: PSI of the cgroup
// or memory.events), every canary byte must survive and nothing may be
// OOM-killed. The cgroup is removed afterwards, also on failure.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Sizes of the scenario (MiB), tunable from the environment.
struct PressureScenario {
    var limit = environmentInt("VRANGE_PRESSURE_LIMIT_MIB", 256)
    /// Clean page cache the child writes first: every real process has some,
    /// and it is what the cgroup's reclaim scans while it reports pressure.
    var cache = environmentInt("VRANGE_PRESSURE_CACHE_MIB", 64)
    var regions = 10
    var regionSize = environmentInt("VRANGE_PRESSURE_REGION_MIB", 16)
    var canary = 8
    var competitor = environmentInt("VRANGE_PRESSURE_COMPETITOR_MIB", 160)
}

/// A region that records when the purger first released memory from it.
final class TimedRegion: PurgeableMemory, Sendable {
    let region: VolatileRegion
    let index: Int
    let purgedAt = Atomic<UInt64>(0)
    init(_ region: VolatileRegion, index: Int) {
        self.region = region
        self.index = index
    }
    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) { region.forEachPurgeUnit(body) }
    func purge(unit id: Int) -> Int {
        let released = region.purge(unit: id)
        if released > 0 { _ = purgedAt.compareExchange(expected: 0, desired: Kernel.monotonicNanoseconds(), ordering: .relaxed) }
        return released
    }
}

/// The child's body. Exit codes: 0 all checks passed; 10+ setup; 20+ checks.
func realPressureChild() -> Never {
    ChildLog.redirect("real-pressure")
    alarm(90)  // a watchdog: a hang is a failure (SIGALRM), never a stuck suite
    func fail(_ code: Int32, _ why: String) -> Never {
        ChildLog.say("FAIL \(code): \(why)")
        exit(code)
    }
    var s = PressureScenario()
    s.cache = environmentInt("VRANGE_PRESSURE_CHILD_CACHE_MIB", s.cache)
    let mib = 1 << 20
    guard let dir = Kernel.environment("VRANGE_PRESSURE_CGROUP"),
          let version = Kernel.environment("VRANGE_PRESSURE_VERSION") else { fail(10, "environment not set") }
    do { try Kernel.writeFile(dir + "/cgroup.procs", "\(getpid())") } catch { fail(11, "joining \(dir): \(error)") }

    // 1. Page cache charged to the cgroup: a file written and synced.
    let file = "/tmp/vrange-test-\(getpid())-cache"
    let fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    if fd < 0 { fail(12, "cannot create \(file)") }
    unlink(file)  // the pages stay cached while fd is open
    let chunk = [UInt8](repeating: 0x33, count: mib)
    for _ in 0..<s.cache { if write(fd, chunk, mib) != mib { fail(13, "write to \(file)") } }
    fsync(fd)

    // 2. The purger, detecting its source as any program would.
    let purger: Purger
    do { purger = try Purger() } catch { fail(14, "Purger(): \(error)") }
    let stats0 = purger.statistics()
    ChildLog.say("source=\(stats0.source.active?.description ?? "none")")
    for note in stats0.source.notes { ChildLog.say("note=\(note)") }
    let expected: [PressureSourceKind] = version == "v1" ? [.cgroupV1PressureLevel] : [.psiCgroup, .cgroupV2Events]
    guard let active = stats0.source.active, expected.contains(active.kind), active.path.hasPrefix(dir) else {
        fail(15, "the purger does not watch the cgroup's own signal")
    }

    // 3. Volatile memory, oldest first, and non-volatile canaries.
    var timed: [TimedRegion] = []
    for i in 0..<s.regions {
        guard let r = try? VolatileRegion(byteCount: s.regionSize * mib) else { fail(16, "region") }
        for p in stride(from: 0, to: r.size, by: page) { (r.baseAddress + p).storeBytes(of: UInt64(i + 1) &* 0x0101_0101_0101_0101 ^ UInt64(p), as: UInt64.self) }
        _ = try? r.markVolatile(0..<r.size)
        let t = TimedRegion(r, index: i)
        timed.append(t)
        purger.register(t)
        RecencyClock.advance()
    }
    guard let canary = try? VolatileRegion(byteCount: s.canary * mib) else { fail(17, "canary region") }
    for i in 0..<canary.size { canary.bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
    purger.register(canary)  // registered, but never marked volatile
    let usage0 = readText(dir + (version == "v1" ? "/memory.usage_in_bytes" : "/memory.current")) ?? "?"
    ChildLog.say("usageBeforeMiB=\((Int(usage0.split(separator: "\n").first ?? "") ?? 0) / mib)")
    ChildLog.say("volatileMiB=\(purger.statistics().volatileBytes / mib)")

    // 4. The competing allocation: 1 MiB at a time, touched. Onset of
    //    pressure: the start of the first chunk after which the cgroup had
    //    hit its limit (v1 memory.failcnt moved; v2 memory.events high/max).
    func limitHits() -> UInt64 {
        if version == "v1" { return UInt64((readText(dir + "/memory.failcnt") ?? "0").split(separator: "\n").first ?? "0") ?? 0 }
        let e = (try? KeyValueFormat.parse(Kernel.readFile(dir + "/memory.events"), path: "memory.events")) ?? [:]
        return (e["high"] ?? 0) + (e["max"] ?? 0)
    }
    let hits0 = limitHits()
    var onset: UInt64 = 0
    var competitor: [UnsafeMutableRawPointer] = []
    let started = Kernel.monotonicNanoseconds()
    for _ in 0..<s.competitor {
        let t = Kernel.monotonicNanoseconds()
        guard let p = try? Kernel.mapAnonymous(length: mib) else { fail(18, "mmap") }
        try? Kernel.advise(p, length: mib, .noHugePage)
        for off in stride(from: 0, to: mib, by: page) { p.storeBytes(of: 1, toByteOffset: off, as: UInt8.self) }
        competitor.append(p)
        if onset == 0 && limitHits() != hits0 { onset = t }
    }
    let finished = Kernel.monotonicNanoseconds()
    ChildLog.say("competitorMiB=\(s.competitor) competitorMs=\((finished - started) / 1_000_000)")

    // 5. What the purger did.
    let st = purger.statistics()
    let moderate = st.purges[.moderatePressure] ?? PurgeTally()
    let critical = st.purges[.criticalPressure] ?? PurgeTally()
    ChildLog.say("purgedMiB=\(st.purgedBytes / mib) moderate=\(moderate.purges)x/\(moderate.bytes / mib)MiB critical=\(critical.purges)x/\(critical.bytes / mib)MiB")
    ChildLog.say("events=\(st.pressureEvents) debounced=\(st.debouncedEvents) lastLevel=\(st.lastPressureEvent?.level.description ?? "-") lastSource=\(st.lastPressureEvent?.source.description ?? "-")")
    let firstRelease: UInt64 = timed.map { $0.purgedAt.load(ordering: .relaxed) }.filter { $0 > 0 }.min() ?? 0
    ChildLog.say("reactionLastUs=\((st.lastPressureEvent?.reactionNanoseconds ?? 0) / 1000) reactionMaxUs=\((st.maxReactionNanoseconds ?? 0) / 1000)")
    if onset > 0 && firstRelease > 0 {
        ChildLog.say("onsetToReleaseUs=\(firstRelease >= onset ? (firstRelease - onset) / 1000 : 0) (release \(firstRelease >= onset ? "after" : "before") onset)")
    }
    ChildLog.say("limitHits=\(limitHits() - hits0)")

    if st.purgedBytes < 64 * mib { fail(20, "only \(st.purgedBytes / mib) MiB purged") }
    if st.purges[.request] != nil || st.purges[.requestAll] != nil || st.purges[.budget] != nil {
        fail(21, "purges for another cause than pressure")
    }
    if st.lastPressureEvent.map({ expected.contains($0.source) }) != true { fail(22, "last event from another source") }

    // 6. Every canary byte intact; each volatile region either intact (its
    //    pattern) or purged (zeros), purged oldest first.
    for i in 0..<canary.size where canary.bytes[i] != UInt8(truncatingIfNeeded: i &* 31 &+ 7) {
        fail(23, "canary byte \(i) changed")
    }
    ChildLog.say("canaryBytesChecked=\(canary.size)")
    var intact = 0, purged = 0
    for t in timed {
        guard let result = try? t.region.markNonVolatile(0..<t.region.size) else { fail(24, "markNonVolatile") }
        let lost = Set(result.purgedRanges.flatMap { stride(from: $0.lowerBound, to: $0.upperBound, by: page) })
        for p in stride(from: 0, to: t.region.size, by: page) {
            let v = (t.region.baseAddress + p).load(as: UInt64.self)
            let want: UInt64 = lost.contains(p) ? 0 : UInt64(t.index + 1) &* 0x0101_0101_0101_0101 ^ UInt64(p)
            if v != want { fail(25, "region \(t.index) page \(p / page): \(v) != \(want)") }
        }
        if lost.isEmpty { intact += 1 } else { purged += 1 }
    }
    let order = timed.filter { $0.purgedAt.load(ordering: .relaxed) > 0 }
        .sorted { $0.purgedAt.load(ordering: .relaxed) < $1.purgedAt.load(ordering: .relaxed) }.map(\.index)
    ChildLog.say("regionsPurged=\(purged) regionsIntact=\(intact) purgeOrder=\(order)")
    if order != Array(0..<order.count) { fail(26, "not purged least recently used first: \(order)") }
    withExtendedLifetime((competitor, purger, timed, canary)) {}
    close(fd)
    exit(0)
}

@Suite("Real memory pressure", .serialized) struct RealPressureTests {
    /// With 64 MiB of page cache (the cgroup reaches its limit and reclaims
    /// while the purger reacts) and with none (nothing reclaimable: the
    /// purger must act before the limit, or the first allocation past it is
    /// OOM-killed).
    @Test(arguments: [64, 0]) func cgroupV1(cacheMiB: Int) async throws { try await run(.v1, cacheMiB: cacheMiB) }
    @Test(arguments: [64, 0]) func cgroupV2(cacheMiB: Int) async throws { try await run(.v2, cacheMiB: cacheMiB) }

    func run(_ version: TestCgroup.Version, cacheMiB: Int) async throws {
        if cannotRun("real-pressure test on \(version.rawValue)", version) { return }
        var s = PressureScenario()
        if getenv("VRANGE_PRESSURE_CACHE_MIB") == nil { s.cache = cacheMiB }
        setenv("VRANGE_PRESSURE_CHILD_CACHE_MIB", "\(s.cache)", 1)
        let cg = try TestCgroup.make(version, label: "pressure", limit: s.limit << 20)
        defer { #expect(cg.remove(), "the test cgroup \(cg.dir) could not be removed") }
        if version == .v2 {
            // memory.high below memory.max: the kernel throttles there and
            // PSI/memory.events report it before the hard limit.
            try Kernel.writeFile(cg.dir + "/memory.high", "\((s.limit << 20) * 7 / 8)")
        }
        setenv("VRANGE_PRESSURE_CGROUP", cg.dir, 1)
        setenv("VRANGE_PRESSURE_VERSION", version == .v1 ? "v1" : "v2", 1)
        print("\(version.rawValue) real-pressure test in \(cg.dir): limit \(s.limit) MiB, cache \(s.cache) MiB, volatile \(s.regions) × \(s.regionSize) MiB, canary \(s.canary) MiB, competitor \(s.competitor) MiB")
        let output = await ChildLog.capture("real-pressure", prefix: "  child") {
            await #expect(processExitsWith: .success) { realPressureChild() }
        }
        #expect(cg.oomKills == 0, "OOM kills in the cgroup")
        #expect(output.contains("canaryBytesChecked="))
    }
}
