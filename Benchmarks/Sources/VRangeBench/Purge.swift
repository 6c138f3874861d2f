// Purge and repopulate of the large range, against raw MADV_DONTNEED (same
// chunking), punch-hole, UFFDIO_ZEROPAGE and plain page faults.
import CBench
import VRange

/// The library discards in runs of at most this many bytes (16384 pages,
/// VolatilityMap.discardRuns' maxRun), so the raw baseline uses the same.
let purgeChunk = 64 << 20

func purgeRows(_ c: Config, _ region: VolatileRegion) throws -> [Row] {
    var rows: [Row] = []
    let size = region.size, ps = c.pageSize, all = 0..<size
    guard let raw = cb_map(size) else { throw BenchError("mmap of \(fmtBytes(size)) failed") }
    defer { _ = cb_unmap(raw, size) }

    // MARK: purge
    // Every round writes every page first, so that there is memory to free.
    // Through a Purger (victim selection included), as issue 8 asks.
    let purger = try Purger(.init(pressureSources: .none))
    purger.register(region)
    defer { _ = purger.unregister(region) }
    let vrangePurge = { () throws -> Double in
        _ = try region.markNonVolatile(all)
        _ = cb_touch_pages(region.baseAddress, size, ps)
        try region.markVolatile(all)
        let t0 = now()
        let freed = purger.purgeAll()
        let t = Double(now() - t0)
        if freed != size { throw BenchError("purgeAll freed \(freed) of \(size) bytes") }
        return t
    }
    let rawPurge = { (chunk: Int) throws -> Double in
        _ = cb_touch_pages(raw, size, ps)
        return try checked(cb_madvise_chunked(raw, size, chunk, cb_MADV_DONTNEED), "madvise(MADV_DONTNEED)")
    }
    var fd: Int32 = -1
    var shared: UnsafeMutableRawPointer?
    let memfdError = cb_memfd_map(size, &fd, &shared)
    defer { if memfdError == 0 { _ = cb_unmap(shared, size); _ = cb_close(fd) } }
    let punch = { () throws -> Double in
        _ = cb_touch_pages(shared, size, ps)
        return try checked(cb_punch_chunked(fd, size, purgeChunk), "fallocate(PUNCH_HOLE)")
    }
    var contenders: [() throws -> Double] = [vrangePurge, { try rawPurge(purgeChunk) }, { try rawPurge(size) }]
    if memfdError == 0 { contenders.append(punch) }
    let p = try interleaved(rounds: c.bigRounds, contenders)
    rows.append(Row("purge \(c.bigLabel) volatile, written (Purger.purgeAll)",
                    vrange: p[0], fmtBulk(p[0], bytes: size),
                    baseline: p[1], "MADV_DONTNEED per 64 MiB: \(fmtBulk(p[1], bytes: size))",
                    goal: .throughputAtLeast(0.9)))
    rows.append(Row("same, against MADV_DONTNEED in one call (reference)",
                    vrange: p[0], fmtBulk(p[0], bytes: size),
                    baseline: p[2], "MADV_DONTNEED, one call: \(fmtBulk(p[2], bytes: size))", goal: .report))
    rows.append(try filePurgeRow(c))  // row 8: Files.swift

    // MARK: repopulate
    var uffd: Int32 = -1
    let uffdError = cb_uffd_open(&uffd)
    let registered = uffdError == 0 ? cb_map(size) : nil
    defer {
        if let registered { _ = cb_unmap(registered, size) }
        if uffdError == 0 { _ = cb_close(uffd) }
    }
    let canZeroPage = registered != nil && cb_uffd_register(uffd, registered, size) == 0

    let vrangeRepopulate = { (thenWrite: Bool) throws -> Double in
        try region.markVolatile(all)
        try region.purgeAll()
        let t0 = now()
        let r = try region.markNonVolatile(all)
        if thenWrite { _ = cb_touch_pages(region.baseAddress, size, ps) }
        let t = Double(now() - t0)
        if r.purgedBytes != size { throw BenchError("repopulated \(r.purgedBytes) of \(size) bytes") }
        return t
    }
    let rawZeroPage = { () throws -> Double in
        _ = cb_madvise(registered, size, cb_MADV_DONTNEED)
        return try checked(cb_uffd_zeropage(uffd, registered, size), "UFFDIO_ZEROPAGE")
    }
    let rawFault = { () throws -> Double in
        _ = cb_madvise(raw, size, cb_MADV_DONTNEED)
        return Double(cb_touch_pages(raw, size, ps))
    }
    var rc: [() throws -> Double] = [{ try vrangeRepopulate(false) }, rawFault, { try vrangeRepopulate(true) }]
    if canZeroPage { rc.append(rawZeroPage) }
    let q = try interleaved(rounds: c.bigRounds, rc)
    let perPage = { (ns: Double) in "\(fmtTime(ns)) (\(fmtTime(ns / Double(c.bigPages)))/page)" }
    if canZeroPage {
        rows.append(Row("mark non-volatile of purged \(c.bigLabel) (repopulate)", vrange: q[0], perPage(q[0]),
                        baseline: q[3], "UFFDIO_ZEROPAGE, one ioctl: \(perPage(q[3]))", goal: .timeAtMost(1.25)))
    } else {
        rows.append(Row(what: "mark non-volatile of purged \(c.bigLabel) (repopulate)", vrange: perPage(q[0]),
                        baseline: "userfaultfd unavailable", ratio: "—", goal: "≤ 1.25× the time", result: "n/a"))
    }
    rows.append(Row("same, against raw write faults", vrange: q[0], perPage(q[0]),
                    baseline: q[1], "write 1 byte/page, fresh: \(perPage(q[1]))", goal: .timeAtMost(1.25)))
    rows.append(Row("repopulate, then write every page (end to end)", vrange: q[2], perPage(q[2]),
                    baseline: q[1], "write 1 byte/page, fresh: \(perPage(q[1]))", goal: .report))
    return rows
}
