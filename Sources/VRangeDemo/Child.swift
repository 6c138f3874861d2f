// A run, in a child process of its own: joins its cgroup, builds its cache
// (plain or VRange, with a purger), starts the viewers and the competing
// allocation, and reports a sample every --sample-ms and every pressure
// event to the parent on stdout (see Protocol.swift) until its time is up
// (with --until-filled: and its cache and competitor are full) or the
// kernel kills it.
import VRange
#if canImport(Glibc)
import Glibc
#endif

func runChild(_ o: Options, kind: CacheKind) -> Never {
    let parent = getppid()
    alarm(UInt32(o.longestRun) + 60)  // a watchdog: never outlive a hung parent for long
    let cgroup = o.cgroup.map { MemoryCgroup(version: readText($0 + "/memory.current") != nil ? .v2 : .v1, dir: $0) }
    if let cgroup {
        do { try cgroup.add() } catch {
            emit("N cannot join the cgroup \(cgroup.dir): \(error)")
            exit(3)
        }
    }
    let shape = mapShape(tileCount: o.tileCount)
    let work = TileWork(renderer: TileRenderer(side: o.tileSide, octaves: o.octaves, columns: shape.columns),
                        tileCount: shape.columns * shape.rows)
    let cache: TileCache
    var purger: Purger?
    switch kind {
    case .plain:
        cache = PlainTileCache(costLimit: o.cacheMiB << 20)
    case .vrange:
        let c = VRangeTileCache(costLimit: o.cacheMiB << 20, work: work)
        cache = c
        // Moderate events acted on every second (default 5 s): the
        // competitor's waves are a few seconds long.
        var config = Purger.Configuration(moderateInterval: .seconds(1))
        if o.noPressure { config.pressureSources = .none } else { config.budget = o.budget }
        do { purger = try Purger(config) } catch { emit("N Purger: \(error)"); exit(4) }
        purger!.register(c.cache.allocator)
        let source = purger!.activeSource?.description
        emit("N purger: \(source.map { "watching \($0)" } ?? "no pressure source")\(o.budget.map { ", byte budget \(mib($0))" } ?? "")")
        for note in purger!.statistics().source.notes { emit("N purger note: \(note)") }
    }

    let start = monotonicSeconds(), deadline = start + o.duration
    let end = RunEnd()
    let competitor = Competitor(peak: o.noPressure ? 0 : o.competitorMiB << 20, scenario: o.scenario)
    var threads = [Thread { competitor.run(start: start, end: end) }]
    for v in 0..<o.threads {
        threads.append(Thread {
            var viewer = Viewer(index: v, columns: shape.columns, rows: shape.rows)
            while end.isAhead {
                for key in viewer.next() where cache.serve(key, work) {
                    work.counters.hits.add(1, ordering: .relaxed)
                }
                work.counters.frames.add(1, ordering: .relaxed)
            }
        })
    }

    var lastEvent: UInt64 = 0
    func sample() {
        let status = readText("/proc/self/status") ?? ""
        var s = Sample()
        s.t = monotonicSeconds() - start
        s.rss = statusBytes(status, "VmRSS")
        s.hwm = statusBytes(status, "VmHWM")
        s.cgroup = cgroup?.usage ?? 0
        s.cache = cache.residentBytes
        s.competitor = competitor.bytes.load(ordering: .relaxed)
        let c = work.counters
        s.served = c.served.load(ordering: .relaxed); s.hits = c.hits.load(ordering: .relaxed)
        s.frames = c.frames.load(ordering: .relaxed); s.renders = c.renders.load(ordering: .relaxed)
        s.rebuilds = c.rebuilds.load(ordering: .relaxed); s.wrong = c.wrong.load(ordering: .relaxed)
        if let purger {
            let st = purger.statistics()
            s.volatile = st.volatileBytes
            s.purged = st.purgedBytes
            // Events handled since the last sample, in order; a pending one
            // waits for the next sample.
            for e in st.recentPressureEvents.sorted(by: { $0.monotonicNanoseconds < $1.monotonicNanoseconds })
            where e.monotonicNanoseconds > lastEvent {
                if e.outcome == .pending { break }
                lastEvent = e.monotonicNanoseconds
                guard case .purged(let bytes) = e.outcome else { continue }
                emit(Event(t: Double(e.monotonicNanoseconds) / 1e9 - start, level: e.level.description,
                           reactionMicroseconds: e.reactionNanoseconds.map { Int($0 / 1000) }, purged: bytes,
                           source: e.source.description).line)
            }
        }
        emit(s.line)
    }
    let period = Double(o.sampleMilliseconds) / 1000
    var next = start + period
    // The run ends at its deadline; with --until-filled it goes on until the
    // cache was handed its cost limit in tiles and the competitor is at its
    // peak (state, not the machine's speed, decides when it is over).
    func filled() -> Bool {
        let c = work.counters
        let handed = (c.renders.load(ordering: .relaxed) + c.rebuilds.load(ordering: .relaxed)) * o.tileBytes
        return handed >= o.cacheMiB << 20 && competitor.bytes.load(ordering: .relaxed) >= competitor.peakBytes
    }
    while true {
        let now = monotonicSeconds()
        if now >= deadline, !(o.untilFilled && now < start + o.longestRun && !filled()) { break }
        let wait = next - monotonicSeconds()
        if wait > 0 { usleep(UInt32(wait * 1e6)) }
        next += period
        if getppid() != parent { exit(5) }  // the parent is gone: nobody to report to
        sample()
    }
    end.finish()
    for t in threads { t.join() }
    sample()
    if let st = purger?.statistics() {
        let sources = [o.budget.map { "byte budget \(mib($0))" }, st.source.active?.description].compactMap { $0 }
        emit(Final(events: st.pressureEvents, debounced: st.debouncedEvents,
                   source: sources.isEmpty ? "none" : sources.joined(separator: " + ")).line)
    } else {
        emit(Final(events: 0, debounced: 0, source: "none").line)
    }
    withExtendedLifetime(purger) {}
    exit(0)
}
