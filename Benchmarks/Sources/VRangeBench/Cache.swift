// Row 18: a PurgeableCache hit of a 4 KiB value, copied out, against a
// Dictionary<Int, [UInt8]> cache doing the same (lookup + memcpy).
import CBench
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// ns per hit of a PurgeableCache<Int> holding 4 KiB values, copying each
/// value out (the same work as `dictionaryHits`).
@inline(never)
func purgeableCacheHits(_ cache: PurgeableCache<Int>, keys: Int, into out: UnsafeMutableRawBufferPointer, _ n: Int) throws -> Double {
    var sum: UInt8 = 0
    let t0 = now()
    for i in 0..<n {
        let key = (i &* 7919) % keys
        guard cache.copyBytes(forKey: key, into: out) == 4096 else { throw BenchError("cache entry \(key) missing") }
        sum &+= out[0]
    }
    let t = Double(now() - t0)
    if sum == 1 { print("", terminator: "") }
    return t / Double(n)
}

func cacheRow(_ c: Config) throws -> Row {
    var dict: [Int: [UInt8]] = [:]
    let cache = PurgeableCache<Int>()
    for k in 0..<1024 {
        let value = [UInt8](repeating: UInt8(k & 0xff), count: 4096)
        dict[k] = value
        try cache.setBytes(value, forKey: k)
    }
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 64)
    defer { out.deallocate() }
    let m = try interleaved(rounds: c.smallRounds, [
        { try purgeableCacheHits(cache, keys: 1024, into: out, c.batch) },
        { dictionaryHits(dict, into: out.baseAddress!, c.batch) },
    ])
    return Row("cache hit, read a 4 KiB value (PurgeableCache.copyBytes)", vrange: m[0], fmtTime(m[0]),
               baseline: m[1], "Dictionary<Int,[UInt8]>, 1024 × 4 KiB: \(fmtTime(m[1]))", goal: .timeAtMost(2))
}
