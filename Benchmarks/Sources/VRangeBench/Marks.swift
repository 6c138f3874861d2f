// Marking: volatile + non-volatile (intact) of 1 page, 64 KiB and the large
// range, against one madvise on the same bytes and two bare CAS on a word.
import CBench
import VRange

/// mark volatile + mark non-volatile of `range`, `n` times; ns per pair.
/// Traps if a pair ever reports a purge: the figure is for the intact path.
@inline(never)
func markPairs(_ region: VolatileRegion, _ range: Range<Int>, _ n: Int) throws -> Double {
    let t0 = now()
    for _ in 0..<n {
        try region.markVolatile(range)
        let r = try region.markNonVolatile(range)
        if r.wasPurged { throw BenchError("an intact range came back purged") }
    }
    return Double(now() - t0) / Double(n)
}

func markRows(_ c: Config) throws -> [Row] {
    var rows: [Row] = []
    let ps = c.pageSize
    let region = try VolatileRegion(byteCount: 4 << 20)
    defer { region.close() }
    guard let raw = cb_map(4 << 20) else { throw BenchError("mmap failed") }
    defer { _ = cb_unmap(raw, 4 << 20) }
    // Populate the raw pages, as the region's are (madvise walks them).
    _ = cb_touch_pages(raw, 4 << 20, ps)
    let word = UnsafeMutablePointer<UInt64>.allocate(capacity: 8)
    word.initialize(repeating: 0, count: 8)
    defer { word.deallocate() }

    // The floor: a race-safe mark and unmark need one atomic
    // read-modify-write each, so two bare CAS on a word (four on two words)
    // bound the pair from below on any CPU. The goal is stated against it.
    func floorRow(_ what: String, _ pair: Double, _ floor: Double, _ floorText: String) -> Row {
        Row(what, vrange: pair, "\(fmtTime(pair)) (+\(fmtTime(pair - floor)) beyond the CAS)",
            baseline: floor, "\(floorText): \(fmtTime(floor))", goal: .timeAtMost(1.25))
    }

    // 1 page.
    let onePage = 0..<ps
    let m1 = try interleaved(rounds: c.smallRounds, [
        { try markPairs(region, onePage, c.batch) },
        { try checked(cb_madvise_loop(raw, ps, cb_MADV_NORMAL, c.batch), "madvise") / Double(c.batch) },
        { try checked(cb_cas_pair_loop(word, c.batch), "cas") / Double(c.batch) },
    ])
    rows.append(floorRow("mark volatile + non-volatile (intact), 1 page, against two bare CAS", m1[0], m1[2], "2 × CAS on a word"))
    rows.append(Row("same, against madvise (reference)", vrange: m1[0], fmtTime(m1[0]),
                    baseline: m1[1], "madvise(MADV_NORMAL), 4 KiB: \(fmtTime(m1[1]))", goal: .report))

    // 64 KiB: 16 pages, one map word.
    let sixteen = 0..<(64 << 10)
    let m64 = try interleaved(rounds: c.smallRounds, [
        { try markPairs(region, sixteen, c.batch) },
        { try checked(cb_cas_pair_loop(word, c.batch), "cas") / Double(c.batch) },
        { try checked(cb_madvise_loop(raw, 64 << 10, cb_MADV_NORMAL, c.batch), "madvise") / Double(c.batch) },
    ])
    rows.append(floorRow("same, 64 KiB range (16 pages, one map word)", m64[0], m64[1], "2 × CAS on a word"))
    rows.append(Row("same, 64 KiB, against madvise (reference)", vrange: m64[0], fmtTime(m64[0]),
                    baseline: m64[2], "madvise(MADV_NORMAL), 64 KiB: \(fmtTime(m64[2]))", goal: .report))

    // 2 pages across a map-word boundary (pages 31 and 32): two words.
    let spanning = (31 * ps)..<(33 * ps)
    let m2 = try interleaved(rounds: c.smallRounds, [
        { try markPairs(region, spanning, c.batch) },
        { try checked(cb_cas_pair2_loop(word, c.batch), "cas") / Double(c.batch) },
    ])
    // Issue 12's goal is the one-word pair; a range spanning words is a
    // report row (four CAS and the multi-word loop), as BENCHMARKS.md has
    // stated it since it was added.
    rows.append(Row("same, 2 pages spanning two map words", vrange: m2[0],
                    "\(fmtTime(m2[0])) (+\(fmtTime(m2[0] - m2[1])) beyond the CAS)",
                    baseline: m2[1], "2 × CAS on each of two words: \(fmtTime(m2[1]))", goal: .report))

    // Kernel-driven mode: marking volatile also issues MADV_FREE, and marking
    // non-volatile dirties each page: a syscall by design. Reported, no goal.
    if let kd = try? VolatileRegion(byteCount: 4 << 20, options: .init(kernelDriven: true)) {
        defer { kd.close() }
        let mk = try interleaved(rounds: c.smallRounds, [
            { try markPairs(kd, onePage, c.batch / 4) },
            { try checked(cb_madvise_loop(raw, ps, cb_MADV_NORMAL, c.batch / 4), "madvise") / Double(c.batch / 4) },
        ])
        rows.append(Row("same, 1 page, kernel-driven region (MADV_FREE on mark)", vrange: mk[0], fmtTime(mk[0]),
                        baseline: mk[1], "madvise(MADV_NORMAL), 4 KiB: \(fmtTime(mk[1]))", goal: .report))
    }
    return rows
}

/// mark + unmark of the whole large region, in ns per page.
func largeMarkRow(_ c: Config, _ region: VolatileRegion) throws -> Row {
    let pages = Double(c.bigPages)
    let all = 0..<region.size
    let r = try interleaved(rounds: c.smallRounds, warmup: 2, [
        { try markPairs(region, all, 1) / pages },
    ])
    return Row("mark + unmark, \(c.bigLabel) range, per page", vrange: r[0],
               "\(fmtTime(r[0])) per page (\(fmtTime(r[0] * pages)) in all)",
               baseline: .nan, "—", goal: .absoluteAtMost(1.0, "≤ 1 ns per page"))
}
