// Optimistic access that hits a purged page, against a bare SIGBUS round
// trip (fault, handler doing UFFDIO_ZEROPAGE, return).
import CBench
import VRange

/// ns per bare SIGBUS round trip. The baseline installs its own handler
/// around the reads and puts back the previous one (VRange's) afterwards.
func bareSigbus() throws -> Double {
    var e: Int32 = 0
    let ns = cb_sigbus_roundtrips(&e)
    if ns == 0 { throw BenchError("bare SIGBUS round trip failed (errno \(e))") }
    return Double(ns) / Double(cb_sigbus_pages())
}

func accessRows(_ c: Config, sigbusReady: Int32) throws -> [Row] {
    var rows: [Row] = []
    let ps = c.pageSize, n = c.faultPages
    let region = try VolatileRegion(byteCount: n * ps)
    defer { region.close() }
    let all = 0..<region.size

    guard sigbusReady == 0 else {
        let why = "userfaultfd unavailable (errno \(sigbusReady))"
        return [Row(what: "optimistic access that hits a purged page", vrange: "n/a", baseline: why,
                    ratio: "—", goal: "≤ 2× the time", result: "n/a")]
    }

    // (b) The fault path: the map says volatile, the page is gone (reclaimed
    // by the kernel in kernel-driven mode: discarded here behind the
    // library's back, as reclaim does). The read faults, the handler records
    // the page purged and maps a zero page, the access returns .purged and
    // discards the page again.
    func faultPath(_ kd: VolatileRegion) -> () throws -> Double {
        {
            _ = try kd.markNonVolatile(all)
            try kd.markVolatile(all)
            _ = cb_madvise(kd.baseAddress, kd.size, cb_MADV_DONTNEED)
            var purged = 0
            let t0 = now()
            for i in 0..<n {
                let r = try kd.withVolatileAccess((i * ps)..<((i + 1) * ps)) { cb_read_byte($0.baseAddress!) }
                if case .purged = r { purged += 1 }
            }
            let t = Double(now() - t0)
            if purged != n { throw BenchError("\(n - purged) faulting accesses did not report .purged") }
            return t / Double(n)
        }
    }
    if let kd = try? VolatileRegion(byteCount: n * ps, options: .init(kernelDriven: true)) {
        defer { kd.close() }
        let f = try interleaved(rounds: c.bigRounds * 3, [faultPath(kd), bareSigbus])
        rows.append(Row("optimistic access that hits a purged page (fault path)", vrange: f[0], fmtTime(f[0]),
                        baseline: f[1], "bare SIGBUS round trip: \(fmtTime(f[1]))", goal: .timeAtMost(2)))
        // The handler finds the faulting region by address (plain loads per
        // slot) and touches only that slot's counter: with 4000 other
        // regions registered before it (the last slot scanned), little more.
        let others = try (0..<4000).map { _ in try VolatileRegion(byteCount: ps) }
        let last = try VolatileRegion(byteCount: n * ps, options: .init(kernelDriven: true))
        let many = try interleaved(rounds: c.bigRounds * 3, [faultPath(last), faultPath(kd)])
        rows.append(Row("same, the region behind 4000 others in the handler's table", vrange: many[0], fmtTime(many[0]),
                        baseline: many[1], "the region first in the table: \(fmtTime(many[1]))", goal: .report))
        last.close()
        others.forEach { $0.close() }
    } else {
        rows.append(Row(what: "optimistic access that hits a purged page (fault path)", vrange: "n/a",
                        baseline: "no userfaultfd: no kernel-driven region", ratio: "—", goal: "≤ 2× the time", result: "n/a"))
    }

    // (a) The page is already known purged: the map answers, the body never runs.
    try region.markVolatile(0..<ps)
    try region.purge(0..<ps)
    let known = { () throws -> Double in
        let t0 = now()
        for _ in 0..<c.batch {
            let r = try region.withVolatileAccess(0..<ps) { cb_read_byte($0.baseAddress!) }
            if case .intact = r { throw BenchError("a purged page read as intact") }
        }
        return Double(now() - t0) / Double(c.batch)
    }
    let k = try interleaved(rounds: c.smallRounds, [known, bareSigbus])
    rows.append(Row("optimistic access of a page already known purged", vrange: k[0], fmtTime(k[0]),
                    baseline: k[1], "bare SIGBUS round trip: \(fmtTime(k[1]))", goal: .timeAtMost(2)))
    return rows
}
