// Rows whose VRange side has not landed (allocator, cache): their
// baselines still run, so that the table shows the figure to beat.
import CBench
#if canImport(Glibc)
import Glibc
#endif

func allocatorRows(_ c: Config) throws -> [Row] {
    var rows: [Row] = []
    for size in [64 << 10, 256 << 10, 1 << 20, 4 << 20] {
        let iterations = max(20, (c.short ? 2_000 : 20_000) * (64 << 10) / size)
        let m = try interleaved(rounds: c.smallRounds, [
            { try checked(cb_malloc_free_touched(size, c.pageSize, iterations), "malloc") / Double(iterations) },
            { try checked(cb_mmap_munmap_touched(size, c.pageSize, iterations), "mmap") / Double(iterations) },
        ])
        rows.append(.notYet("allocate + free \(fmtBytes(size)), touched (VolatileAllocator)",
                            baseline: "glibc malloc/free: \(fmtTime(m[0])); mmap/munmap: \(fmtTime(m[1]))",
                            goal: "≥ 1× glibc; ≥ 5× faster than mmap"))
    }
    return rows
}

/// ns per hit of a `Dictionary<Int, [UInt8]>` holding 4 KiB values, copying
/// the value out (what a cache read has to do).
@inline(never)
func dictionaryHits(_ cache: [Int: [UInt8]], into out: UnsafeMutableRawPointer, _ n: Int) -> Double {
    let keys = cache.count
    var sum: UInt8 = 0
    let t0 = now()
    for i in 0..<n {
        let key = (i &* 7919) % keys
        if let v = cache[key] {
            v.withUnsafeBytes { _ = memcpy(out, $0.baseAddress!, $0.count) }
            sum &+= out.load(as: UInt8.self)
        }
    }
    let t = Double(now() - t0)
    if sum == 1 { print("", terminator: "") }  // keep the copies observable
    return t / Double(n)
}

func cacheRow(_ c: Config) throws -> Row {
    var cache: [Int: [UInt8]] = [:]
    for k in 0..<1024 { cache[k] = [UInt8](repeating: UInt8(k & 0xff), count: 4096) }
    let out = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
    defer { out.deallocate() }
    let m = try interleaved(rounds: c.smallRounds, [{ dictionaryHits(cache, into: out, c.batch) }])
    return .notYet("cache hit, read a 4 KiB value (PurgeableCache)",
                   baseline: "Dictionary<Int,[UInt8]>, 1024 × 4 KiB: \(fmtTime(m[0]))", goal: "≤ 2× the time")
}
