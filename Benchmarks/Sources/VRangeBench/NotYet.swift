// The Dictionary baseline of the cache row (Cache.swift). Every row of the
// table has its VRange side now.
import CBench
#if canImport(Glibc)
import Glibc
#endif

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
