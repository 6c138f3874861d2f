// Rows whose VRange side has not landed (pressure): their baselines still
// run, so that the table shows the figure to beat. The Dictionary baseline of
// the cache row (Cache.swift) lives here too.
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

func pressureRow() -> Row {
    let psi = readTextFile("/proc/pressure/memory") != nil
    return .notYet("pressure onset → volatile memory released (Purger)",
                   baseline: psi ? "PSI present; period not measured" : "no PSI on this host",
                   goal: "report; ≤ 50 ms past the event")
}
