// The purger's rows (issue 8): row 22, pressure onset → memory released
// under real cgroup pressure; and a section of its own: what recency
// tracking costs the mark/unmark pair, the purger's latency from an event
// to released memory without the kernel in the loop, and the cost of the
// walk a budget check makes.
import CBench
import Synchronization
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Row 22. Needs root and a memory controller; otherwise says why.
func pressureRow(_ c: Config) -> Row {
    let what = "pressure onset → volatile memory released (Purger, real cgroup pressure)"
    guard let result = pressureRounds(c.short ? 1 : 5) else {
        let why = geteuid() != 0 ? "needs root (to make a memory cgroup)" : "no memory controller to make a limited cgroup"
        return Row(what: what, vrange: "n/a", baseline: why, ratio: "—", goal: "report; ≤ 50 ms past the event", result: "n/a")
    }
    guard !result.rounds.isEmpty else {
        return Row(what: what, vrange: "failed", baseline: result.failures.joined(separator: "; "), ratio: "—",
                   goal: "≤ 50 ms past the event", result: "**missed**")
    }
    let delivery = median(result.rounds.map(\.deliveryToRelease))
    let onset = median(result.rounds.map(\.onsetToRelease))
    let kernel = median(result.rounds.map(\.onsetToDelivery))
    let failed = result.failures.isEmpty ? "" : "; \(result.failures.count) round(s) failed: \(result.failures.joined(separator: "; "))"
    return Row(what + ", event delivered → released",
               vrange: delivery, "\(fmtTime(delivery)) (onset → released \(fmtTime(onset)))",
               baseline: kernel,
               "\(result.rounds[0].source): onset → event delivered \(fmtTime(kernel)), \(result.rounds.count) rounds\(failed)",
               goal: result.failures.isEmpty ? .absoluteAtMost(50e6, "≤ 50 ms past the event") : .notYet("all rounds must pass"))
}

/// mark volatile + non-volatile of one page while `ticking` (a purger's
/// thread advancing RecencyClock every millisecond, the region registered)
/// or not; ns per pair.
private func markPairs(_ region: VolatileRegion, ticking: Bool, _ n: Int) throws -> Double {
    guard ticking else { return try markPairs(region, 0..<4096, n) }
    let purger = try Purger(.init(budget: .max, pressureSources: .none, tick: .milliseconds(1)))
    purger.register(region)
    defer { purger.stop() }
    return try markPairs(region, 0..<4096, n)
}

private final class Spinner: Sendable {
    let stop = Atomic<Bool>(false)
}

/// The purger's section.
func purgerRows(_ c: Config) throws -> [Row] {
    var rows: [Row] = []
    let region = try VolatileRegion(byteCount: 4 << 20)
    defer { region.close() }

    // 1. Recency on the mark pair: a purger ticking every 1 ms (10× its
    //    default rate) with the region registered, against no purger (the
    //    clock still: the mark loads and compares, never stores).
    let n = c.batch
    let m = try interleaved(rounds: c.smallRounds, [
        { try markPairs(region, ticking: true, n) },
        { try markPairs(region, ticking: false, n) },
    ])
    rows.append(Row("mark + unmark 1 page, purger ticking every 1 ms (recency stamps move)", vrange: m[0], fmtTime(m[0]),
                    baseline: m[1], "same, no purger (clock still): \(fmtTime(m[1]))", goal: .timeAtMost(1.1)))

    // 2. The stamp's own instructions, in C: two CAS plus load, compare
    //    and conditional store, against the two CAS alone.
    let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 24)
    words.initialize(repeating: 0, count: 24)
    defer { words.deallocate() }
    let k = try interleaved(rounds: c.smallRounds, [
        { try checked(cb_cas_pair_stamp_loop(words, words + 8, words + 16, n), "stamp") / Double(n) },
        { try checked(cb_cas_pair_loop(words, n), "cas") / Double(n) },
    ])
    rows.append(Row("recency stamp alone (C): 2 CAS + load, compare, store if moved", vrange: k[0], fmtTime(k[0]),
                    baseline: k[1], "2 × CAS on a word: \(fmtTime(k[1]))", goal: .report))

    // 3. Worst case, never reached with the purger's tick: another core
    //    writes the clock continuously, so every mark misses its cache line.
    let spinner = Spinner()
    var thread = pthread_t()
    let box = Unmanaged.passRetained(spinner).toOpaque()
    pthread_create(&thread, nil, { arg in
        let s = Unmanaged<Spinner>.fromOpaque(arg!).takeRetainedValue()
        while !s.stop.load(ordering: .relaxed) { RecencyClock.advance() }
        return nil
    }, box)
    let w = try interleaved(rounds: max(3, c.smallRounds / 4), [{ try markPairs(region, 0..<4096, n) }])
    spinner.stop.store(true, ordering: .relaxed)
    pthread_join(thread, nil)
    rows.append(Row("same, clock written nonstop by another core (worst case, not the purger's 10 Hz)",
                    vrange: w[0], fmtTime(w[0]), baseline: m[1], "no purger: \(fmtTime(m[1]))", goal: .report))

    // 4. Event → released without the kernel's part: a byte written to the
    //    purger's FIFO source (systemd's convention) until 64 MiB of volatile
    //    memory is released, against MADV_DONTNEED of the same 64 MiB.
    let fifo = "/tmp/vrange-bench-\(getpid()).fifo"
    unlink(fifo)
    if mkfifo(fifo, 0o600) == 0 {
        defer { unlink(fifo) }
        let purger = try Purger(.init(pressureSources: .only([.systemdWatch(path: fifo, write: [])]),
                                      moderateInterval: .zero, moderateFraction: 1))
        let big = try VolatileRegion(byteCount: 64 << 20)
        defer { big.close() }
        let timed = TimedRegion(big)
        purger.register(timed)
        let writer = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        defer { close(writer) }
        guard let raw = cb_map(64 << 20) else { throw BenchError("mmap") }
        defer { _ = cb_unmap(raw, 64 << 20) }
        var reactions: [Double] = []
        let e = try interleaved(rounds: c.bigRounds, [
            { () throws -> Double in
                _ = try big.markNonVolatile(0..<big.size)
                _ = cb_touch_pages(big.baseAddress, big.size, 4096)
                try big.markVolatile(0..<big.size)
                timed.purgedAt.store(0, ordering: .relaxed)
                let t0 = now()
                guard write(writer, "x", 1) == 1 else { throw BenchError("write to the FIFO") }
                while timed.purgedAt.load(ordering: .relaxed) == 0 {
                    if now() - t0 > 5_000_000_000 { throw BenchError("the purger did not react") }
                    sched_yield()
                }
                // The purger's own part: from its wake-up with the event.
                let deadline = now() + 1_000_000_000
                while purger.statistics().lastPressureEvent?.reactionNanoseconds == nil && now() < deadline { sched_yield() }
                if let e = purger.statistics().lastPressureEvent, e.reactionNanoseconds != nil {
                    reactions.append(Double(timed.purgedAt.load(ordering: .relaxed)) - Double(e.monotonicNanoseconds))
                }
                return Double(timed.purgedAt.load(ordering: .relaxed) - t0)
            },
            { () throws -> Double in
                _ = cb_touch_pages(raw, 64 << 20, 4096)
                return try checked(cb_madvise_chunked(raw, 64 << 20, 64 << 20, cb_MADV_DONTNEED), "madvise")
            },
        ])
        withExtendedLifetime(timed) {}
        rows.append(Row("FIFO event written → 64 MiB volatile released (purger thread's latency, no kernel signal)",
                        vrange: e[0], "\(fmtTime(e[0])) (thread woken → released \(fmtTime(median(reactions))))",
                        baseline: e[1], "MADV_DONTNEED 64 MiB: \(fmtTime(e[1]))", goal: .report))
    }

    // 5. The walk behind a budget check or statistics(): 1000 regions.
    let purger = try Purger(.init(pressureSources: .none))
    var regions: [VolatileRegion] = []
    for _ in 0..<1000 {
        let r = try VolatileRegion(byteCount: 64 << 10)
        try r.markVolatile(0..<r.size)
        regions.append(r)
        purger.register(r)
    }
    let walk = try interleaved(rounds: c.smallRounds, [{ () throws -> Double in
        let t0 = now()
        let v = purger.statistics().volatileBytes
        let t = Double(now() - t0)
        if v != 1000 * (64 << 10) { throw BenchError("walk saw \(v) bytes") }
        return t
    }])
    rows.append(Row("budget check: walk 1000 registered 64 KiB regions (per tick with a budget)",
                    vrange: walk[0], "\(fmtTime(walk[0])) (\(fmtTime(walk[0] / 1000)) per region)",
                    baseline: .nan, "—", goal: .report))
    withExtendedLifetime(regions) {}
    return rows
}
