// Shared volatile files (issue 7): purge of a memfd against raw punch-hole,
// file-level and mapping-level lock + unlock of one page against the
// anonymous pair, two processes locking and unlocking pages of one map word,
// and the sidecar's metadata at 1, 8 and 32 mappers.
import CBench
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Row 8: VolatileFile.purgeAll() of a file whose every page is written and
/// marked volatile, against fallocate(PUNCH_HOLE) per 64 MiB of a plain
/// memfd written the same way; interleaved in the same rounds.
func filePurgeRow(_ c: Config) throws -> Row {
    let size = c.bigBytes, ps = c.pageSize
    let file = try VolatileFile(byteCount: size)
    defer { file.close() }
    let m = try file.map()
    var fd: Int32 = -1
    var shared: UnsafeMutableRawPointer?
    let memfdError = cb_memfd_map(size, &fd, &shared)
    guard memfdError == 0 else { throw BenchError("memfd unavailable (errno \(memfdError))") }
    defer { _ = cb_unmap(shared, size); _ = cb_close(fd) }
    let all = 0..<size
    let vrange = { () throws -> Double in
        try m.markNonVolatile(all)
        _ = cb_touch_pages(m.baseAddress, size, ps)
        try m.markVolatile(all)  // the one mapper's vote: it no longer pins
        try file.markVolatile(all)
        let t0 = now()
        let freed = try file.purgeAll()
        let t = Double(now() - t0)
        if freed != size { throw BenchError("VolatileFile.purgeAll freed \(freed) of \(size) bytes") }
        return t
    }
    let punch = { () throws -> Double in
        _ = cb_touch_pages(shared, size, ps)
        return try checked(cb_punch_chunked(fd, size, purgeChunk), "fallocate(PUNCH_HOLE)")
    }
    let p = try interleaved(rounds: c.bigRounds, [vrange, punch])
    return Row("purge \(c.bigLabel) of a memfd (VolatileFile)", vrange: p[0], fmtBulk(p[0], bytes: size),
               baseline: p[1], "punch-hole per 64 MiB: \(fmtBulk(p[1], bytes: size))", goal: .throughputAtLeast(0.9))
}

/// mark volatile + mark non-volatile (intact) of `range`, `n` times, through
/// `lock`/`unlock`; ns per pair.
@inline(never)
func pairs(_ n: Int, _ lock: () throws -> Void, _ unlock: () throws -> NonVolatileResult) throws -> Double {
    let t0 = now()
    for _ in 0..<n {
        try lock()
        if try unlock().wasPurged { throw BenchError("an intact range came back purged") }
    }
    return Double(now() - t0) / Double(n)
}

func fileMarkRows(_ c: Config) throws -> [Row] {
    let ps = c.pageSize
    let region = try VolatileRegion(byteCount: 4 << 20)
    defer { region.close() }
    let file = try VolatileFile(byteCount: 4 << 20)
    defer { file.close() }
    let m = try file.map()
    let one = 0..<ps
    let r = try interleaved(rounds: c.smallRounds, [
        { try pairs(c.batch, { try region.markVolatile(one) }, { try region.markNonVolatile(one) }) },
        { try pairs(c.batch, { try file.markVolatile(one) }, { try file.markNonVolatile(one) }) },
        { try pairs(c.batch, { try m.markVolatile(one) }, { try m.markNonVolatile(one) }) },
    ])
    return [
        Row("file mark volatile + non-volatile, 1 page (VolatileFile)", vrange: r[1], fmtTime(r[1]),
            baseline: r[0], "anonymous region pair: \(fmtTime(r[0]))", goal: .timeAtMost(2)),
        Row("mapping vote + pin, 1 page (FileMapping)", vrange: r[2], fmtTime(r[2]),
            baseline: r[0], "anonymous region pair: \(fmtTime(r[0]))", goal: .timeAtMost(2)),
    ]
}

/// Two processes (this one and a fork child, each with its own mapping,
/// pinned to CPUs 0 and 1) doing vote + pin pairs on distinct pages of one
/// map word — one contended cache line of the sidecar — against this
/// process alone.
func fileContentionRow(_ c: Config) throws -> Row {
    let file = try VolatileFile(byteCount: 4 << 20)
    defer { file.close() }
    let n = c.threadIterations
    let solo = try interleaved(rounds: max(3, c.bigRounds / 2), [{ () throws -> Double in
        let m = try file.map()
        defer { m.close() }
        let page = 0..<c.pageSize
        return try pairs(n, { try m.markVolatile(page) }, { try m.markNonVolatile(page) })
    }])[0]
    var both: [Double] = []
    for _ in 0..<max(3, c.bigRounds / 2) {
        var go: [Int32] = [-1, -1], done: [Int32] = [-1, -1]
        guard pipe(&go) == 0, pipe(&done) == 0 else { throw BenchError("pipe failed") }
        let child = fork()
        if child == 0 {
            _ = cb_pin_to_cpu(1)
            guard let m = try? file.map() else { _exit(2) }
            var b: UInt8 = 0
            _ = read(go[0], &b, 1)
            let page = c.pageSize..<(2 * c.pageSize)  // same map word as page 0
            let ns = (try? pairs(n, { try m.markVolatile(page) }, { try m.markNonVolatile(page) })) ?? -1
            var out = ns
            _ = write(done[1], &out, 8)
            _exit(0)
        }
        _ = cb_pin_to_cpu(0)
        let m = try file.map()
        var b: UInt8 = 1
        _ = write(go[1], &b, 1)
        let mine = try pairs(n, { try m.markVolatile(0..<c.pageSize) }, { try m.markNonVolatile(0..<c.pageSize) })
        var theirs = 0.0
        _ = read(done[0], &theirs, 8)
        var status: Int32 = 0
        waitpid(child, &status, 0)
        _ = cb_unpin()
        m.close()
        for fd in go + done { close(fd) }
        guard theirs > 0 else { throw BenchError("child failed (status \(status))") }
        // Aggregate pairs per ns of both processes.
        both.append(1 / mine + 1 / theirs)
    }
    let aggregate = median(both)  // pairs per ns
    return Row("vote + pin, 2 processes on one map word (cross-process contention)",
               vrange: aggregate * 1e9, "2 processes: \(String(format2: aggregate * 1e3, digits: 1)) M pairs/s",
               baseline: 1e9 / solo, "1 process: \(String(format2: 1e3 / solo, digits: 1)) M pairs/s", goal: .scalingReport)
}

/// Sidecar bytes in memory at 1, 8 and 32 mappers of a file of the large
/// size: the library's accounting, and st_blocks of the sidecar measured
/// after that many mappings each voted and pinned every page.
func fileMetadataRows(_ c: Config) throws -> [Row] {
    var rows: [Row] = []
    let size = c.bigBytes
    for mappers in [1, 8, 32] {
        let file = try VolatileFile(byteCount: size)
        var maps: [FileMapping] = []
        for _ in 0..<mappers {
            let m = try file.map()
            try m.markVolatile(0..<size)
            try m.markNonVolatile(0..<size)
            maps.append(m)
        }
        var st = stat()
        fstat(file.descriptors.sidecar, &st)
        let measured = Int(st.st_blocks) * 512
        let accounted = file.metadataBytes(mappers: mappers)
        maps.forEach { $0.close() }
        file.close()
        let pct = 100 * Double(accounted) / Double(size)
        rows.append(Row("shared-file metadata, \(fmtBytes(size)) file, \(mappers) mapper\(mappers == 1 ? "" : "s")",
                        vrange: pct / 100,
                        "\(fmtBytes(accounted)) = \(String(format2: pct, digits: 3)) % (measured: \(fmtBytes(measured)))",
                        baseline: .nan, "managed: \(fmtBytes(size))",
                        goal: mappers == 8 ? .absoluteAtMost(0.002, "≤ 0.2 % at 8 mappers") : .report))
    }
    return rows
}
