// A chaos participant of kind "cache": an allocator-backed PurgeableCache
// and PurgeableBuffers of this process, purged at random by this process
// (as its purger would), while the test SIGKILLs participants at random.
// Checks, by what it knows for sure: every value the cache serves equals
// its deterministic rebuild; a buffer written while locked, unlocked,
// maybe purged and locked again holds its bytes except in the ranges its
// lock reported purged, which read zero. Counts go to the shared ledger
// (operations, strong checks, bytes verified, buffers found purged as
// pagesLost, purges, typed errors).
#if DEBUG
@testable import VRange
#else
import VRange
#endif
import VRangeChaosLedger
#if canImport(Glibc)
import Glibc
#endif

final class CacheChaos {
    let ledger: ChaosLedger?
    let index: Int
    var random: SplitMix64
    var violations = 0

    init(ledger: ChaosLedger?, index: Int, seed: UInt64) {
        self.ledger = ledger
        self.index = index
        random = SplitMix64(seed: seed)
    }

    func count(_ c: ChaosCounter, _ n: Int = 1) { ledger?.count(c, index, n) }
    func violation(_ s: String) {
        violations += 1
        reportViolation("cache participant \(index) (pid \(getpid())): \(s)", in: ledger)
    }

    /// The value of `key`: 4 to 32 KiB, a pattern of the key.
    static func value(_ key: Int) -> [UInt8] {
        (0..<(4096 * (1 + key % 8))).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ key &* 7 &+ 1) }
    }

    func run(until deadline: UInt64) -> String {
        count(.starts)
        let cache = PurgeableCache<Int>(costLimit: 1 << 20) { key in Self.value(key) }
        var ops = 0
        while monotonicNow() < deadline {
            ops += 1
            count(.operations)
            switch random.next() % 10 {
            case 0...4:
                let key = Int(random.next() % 48)
                do {
                    let v = try cache.fetchBytes(forKey: key)
                    check(v == Self.value(key), bytes: v.count, "fetch of key \(key) served other bytes")
                } catch {
                    count(.typedErrors)
                    violation("fetch of key \(key) threw \(error)")
                }
            case 5:
                let key = Int(random.next() % 48)
                if let ok = cache.withBytes(forKey: key, { Array($0) == Self.value(key) }) {
                    check(ok, bytes: 4096, "a read in place of key \(key) saw other bytes")
                }
            case 6, 7:
                purgeSome(cache.allocator)
            default:
                buffer(cache.allocator)
            }
        }
        count(.finishes)
        return "ok ops=\(ops) violations=\(violations) typed=0"
    }

    func check(_ ok: Bool, bytes: Int, _ what: String) {
        count(.strongChecks)
        count(.bytesVerified, bytes)
        if !ok { violation(what) }
    }

    func purgeSome(_ a: VolatileAllocator) {
        var purged = 0
        a.forEachPurgeUnit { unit in
            if random.next() % 2 == 0 { purged += a.purge(unit: unit.id) }
        }
        count(.purges)
        count(.pagesPurged, purged / 4096)
    }

    /// Allocate, write, unlock, maybe purge, lock: check against the report.
    func buffer(_ a: VolatileAllocator) {
        let size = 1 + Int(random.next() % 100_000)
        let tag = UInt8(truncatingIfNeeded: random.next() | 1)
        guard var b = try? a.allocate(byteCount: size) else {
            count(.typedErrors)
            violation("allocate(\(size)) failed")
            return
        }
        _ = b.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: tag) }
        b.unlock()
        if random.next() % 2 == 0 { purgeSome(a) }
        let result = b.lock()
        if result.wasPurged { count(.pagesLost) }
        let ok = b.withUnsafeBytes { bytes -> Bool in
            var lost = [Bool](repeating: false, count: bytes.count)
            for r in result.purgedRanges { for i in r where i < bytes.count { lost[i] = true } }
            for i in 0..<bytes.count where bytes[i] != (lost[i] ? 0 : tag) { return false }
            return true
        }
        check(ok, bytes: size, "a buffer of \(size) B locked again disagrees with its report \(result.purgedRanges)")
        b.free()
    }
}
