// Extremes table of the cache and the purger core (issue 18, class 4): every
// public numeric parameter of PurgeableCache, PurgeableValueCache,
// CacheStatistics, Purger and Purger.Configuration at 0, 1, -1, .min, .max
// and its overflow boundaries. Row = parameter × value; expected = a typed
// error or the documented clamp, never a trap, hang or spin. Each row runs
// in a process of its own (an exit test, alarm 20 s), so that a trap fails
// that row only.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Durations at their extremes.
enum ExtremeDuration {
    static let min = Duration(secondsComponent: .min, attosecondsComponent: 0)
    static let max = Duration(secondsComponent: .max, attosecondsComponent: 999_999_999_999_999_999)
    /// Whole milliseconds overflow only when the attoseconds are added.
    static let millisecondsEdge = Duration(secondsComponent: .max / 1000, attosecondsComponent: 999_000_000_000_000_000)
}

/// One parameter at one value, and its check (nil: as documented).
enum ExtremeRow: String, CaseIterable, Codable, Sendable {
    // PurgeableCache(costLimit:) (and PurgeableValueCache's): clamped to ≥ 0.
    case costLimit0, costLimit1, costLimitMinus1, costLimitMin, costLimitMax
    case valueCacheCostLimitMin, valueCacheCostLimitMax
    // PurgeableCache(shards:): clamped to 1...maxShards, a power of two.
    case shards0, shards1, shardsMinus1, shardsMin, shardsMax, shardsMaxShardsPlus1, shardsHalfMaxPlus1
    case valueCacheShardsMax, valueCacheShardsMin
    // setBytes(cost:): < 0 counts as 0; sums saturate at Int.max.
    case cost0, cost1, costMinus1, costMin, costMax, costMaxTwice
    // An entry that alone exceeds the limit is not kept; the eviction total
    // does not overflow at limit .max - 1 with two entries of half of it.
    case costAboveLimit, costHalfMaxTwiceUnderLimitMaxMinus1
    // setBytes byte counts: 0 (stored, empty) and 1.
    case bytes0, bytes1
    // copyBytes(into:) destinations of 0 and 1 bytes.
    case copyInto0, copyInto1
    // CacheStatistics: lookups and hitRatio with counters at the extremes.
    case statisticsCountersMax, statisticsCountersMin, statisticsCountersMinus1
    // Purger.purge(bytes:): < 0 is .invalidSize.
    case purgeBytes0, purgeBytes1, purgeBytesMinus1, purgeBytesMin, purgeBytesMax
    // Units reporting volatile bytes at the extremes (PurgeUnit is public).
    case unitBytesMaxTwice, unitBytesMin
    // Configuration.budget: < 0 is .invalidConfiguration.
    case budget0, budget1, budgetMinus1, budgetMin, budgetMax
    // Configuration durations: tick, memAvailableInterval,
    // cgroupHeadroomInterval need ≥ 1 ms; moderateInterval ≥ 0.
    case tick0, tick1ns, tick1ms, tickMinus1ns, tickMin, tickMax, tickMillisecondsEdge, tickSecondsInt64Max
    case memAvailableInterval0, memAvailableIntervalMin, memAvailableIntervalMax, memAvailableIntervalMillisecondsEdge
    case cgroupHeadroomInterval0, cgroupHeadroomIntervalMin, cgroupHeadroomIntervalMax, cgroupHeadroomIntervalMillisecondsEdge
    case moderateInterval0, moderateIntervalMinus1ns, moderateIntervalMin, moderateIntervalMax
    // Configuration fractions (Double): NaN, ±infinity, 0, 1, -1.
    case moderateFraction0, moderateFraction1, moderateFractionMinus1, moderateFractionNaN, moderateFractionInfinity, moderateFractionTiny
    case availableFractionsNaN, availableFractionsMinus1, availableFractions1, availableFractionsInfinity
    // PressureSourceSpec.memAvailable(intervalMilliseconds:).
    case memAvailableSpec0, memAvailableSpec1, memAvailableSpecMinus1, memAvailableSpecMin, memAvailableSpecMax
    // PSITrigger(stallMicroseconds:windowMicroseconds:).
    case psiStall0, psiStallMinus1, psiStallMin, psiStallMax, psiWindow0, psiWindowMin, psiWindowMax

    /// Runs the row; a description of what went wrong, or nil.
    func run() -> String? {
        switch self {
        case .costLimit0: return costLimit(0, expect: 0)
        case .costLimit1: return costLimit(1, expect: 1)
        case .costLimitMinus1: return costLimit(-1, expect: 0)
        case .costLimitMin: return costLimit(.min, expect: 0)
        case .costLimitMax: return costLimit(.max, expect: .max)
        case .valueCacheCostLimitMin:
            let c = PurgeableValueCache<Int, String>(costLimit: .min)
            return c.bytes.costLimit == 0 ? nil : "costLimit \(c.bytes.costLimit)"
        case .valueCacheCostLimitMax:
            let c = PurgeableValueCache<Int, String>(costLimit: .max)
            try! c.setValue("x", forKey: 1)
            return c.value(forKey: 1) == "x" ? nil : "value lost"
        case .shards0: return shards(0, expect: 1)
        case .shards1: return shards(1, expect: 1)
        case .shardsMinus1: return shards(-1, expect: 1)
        case .shardsMin: return shards(.min, expect: 1)
        case .shardsMax: return shards(.max, expect: PurgeableCache<Int>.maxShards)
        case .shardsMaxShardsPlus1: return shards(PurgeableCache<Int>.maxShards + 1, expect: PurgeableCache<Int>.maxShards)
        case .shardsHalfMaxPlus1: return shards(Int.max / 2 + 1, expect: PurgeableCache<Int>.maxShards)
        case .valueCacheShardsMax:
            let c = PurgeableValueCache<Int, String>(shards: .max)
            return c.bytes.shards.count == PurgeableCache<Int>.maxShards ? nil : "\(c.bytes.shards.count) shards"
        case .valueCacheShardsMin:
            let c = PurgeableValueCache<Int, String>(shards: .min)
            return c.bytes.shards.count == 1 ? nil : "\(c.bytes.shards.count) shards"
        case .cost0: return cost(0, expect: 0)
        case .cost1: return cost(1, expect: 1)
        case .costMinus1: return cost(-1, expect: 0)
        case .costMin: return cost(.min, expect: 0)
        case .costMax: return cost(.max, expect: .max)
        case .costMaxTwice:
            let c = extremesCache()
            try! c.setBytes([1], forKey: 1, cost: .max)
            try! c.setBytes([2], forKey: 2, cost: .max)
            try! c.setBytes([3], forKey: 3, cost: 1)
            guard c.statistics.totalCost == .max, c.count == 3 else { return "\(c.statistics)" }
            c.removeValue(forKey: 1)
            c.removeValue(forKey: 2)
            return c.statistics.totalCost == 1 ? nil : "after removals: \(c.statistics)"
        case .costAboveLimit:
            let c = extremesCache(costLimit: 10)
            try! c.setBytes([1], forKey: 1, cost: 5)
            try! c.setBytes([2], forKey: 2, cost: 11)
            let s = c.statistics
            return c.contains(1) && !c.contains(2) && s.totalCost == 5 && s.evictions == 1 ? nil : "\(s)"
        case .costHalfMaxTwiceUnderLimitMaxMinus1:
            let half = Int.max / 2 + 1
            let c = extremesCache(costLimit: .max - 1)
            try! c.setBytes([1], forKey: 1, cost: half)
            try! c.setBytes([2], forKey: 2, cost: half)  // the sum exceeds Int.max
            let s = c.statistics
            return !c.contains(1) && c.contains(2) && s.totalCost == half && s.evictions == 1 ? nil : "\(s)"
        case .bytes0:
            let c = extremesCache()
            try! c.setBytes([], forKey: 1)
            return c.bytes(forKey: 1) == [] && c.statistics.totalCost == 0 ? nil : "\(String(describing: c.bytes(forKey: 1)))"
        case .bytes1:
            let c = extremesCache()
            try! c.setBytes([7], forKey: 1)
            return c.bytes(forKey: 1) == [7] ? nil : "\(String(describing: c.bytes(forKey: 1)))"
        case .copyInto0, .copyInto1:
            let c = extremesCache()
            try! c.setBytes([7, 8], forKey: 1)
            var d = [UInt8](repeating: 0, count: self == .copyInto0 ? 0 : 1)
            let n = d.withUnsafeMutableBytes { c.copyBytes(forKey: 1, into: $0) }
            return n == 2 && d == (self == .copyInto0 ? [] : [7]) ? nil : "returned \(String(describing: n)), copied \(d)"
        case .statisticsCountersMax, .statisticsCountersMin, .statisticsCountersMinus1:
            let v = self == .statisticsCountersMax ? Int.max : self == .statisticsCountersMin ? Int.min : -1
            var s = CacheStatistics()
            s.hits = v; s.misses = v; s.purgedMisses = v
            let lookups = s.lookups, ratio = s.hitRatio
            let expected = v == .max ? Int.max : v == .min ? Int.min : -3
            return lookups == expected && !ratio.isNaN ? nil : "lookups \(lookups), hitRatio \(ratio)"
        case .purgeBytes0: return purgeBytes(0, expect: .success(0))
        case .purgeBytes1: return purgeBytes(1, expect: .success(4096))
        case .purgeBytesMinus1: return purgeBytes(-1, expect: .failure(.invalidSize(-1)))
        case .purgeBytesMin: return purgeBytes(.min, expect: .failure(.invalidSize(.min)))
        case .purgeBytesMax: return purgeBytes(.max, expect: .success(8192))
        case .unitBytesMaxTwice, .unitBytesMin:
            let v = self == .unitBytesMaxTwice ? Int.max : Int.min
            let p = try! Purger(.init(pressureSources: .none))
            let m = ExtremeUnits(bytes: v)
            p.register(m)
            let released = p.purgeAll()
            let s = p.statistics()
            let want = v == .max ? Int.max : 0
            return released == want && s.volatileBytes == want && s.purgedBytes == want ? nil : "released \(released), \(s.volatileBytes) volatile, \(s.purgedBytes) purged"
        case .budget0: return configuration(.init(budget: 0, pressureSources: .none), valid: true)
        case .budget1: return configuration(.init(budget: 1, pressureSources: .none), valid: true)
        case .budgetMinus1: return configuration(.init(budget: -1, pressureSources: .none), valid: false)
        case .budgetMin: return configuration(.init(budget: .min, pressureSources: .none), valid: false)
        case .budgetMax: return configuration(.init(budget: .max, pressureSources: .none), valid: true)
        case .tick0: return configuration(withTick(.zero), valid: false)
        case .tick1ns: return configuration(withTick(.nanoseconds(1)), valid: false)
        case .tick1ms: return configuration(withTick(.milliseconds(1)), valid: true)
        case .tickMinus1ns: return configuration(withTick(.nanoseconds(-1)), valid: false)
        case .tickMin: return configuration(withTick(ExtremeDuration.min), valid: false)
        case .tickMax: return configuration(withTick(ExtremeDuration.max), valid: true, noSpin: true)
        case .tickMillisecondsEdge: return configuration(withTick(ExtremeDuration.millisecondsEdge), valid: true, noSpin: true)
        case .tickSecondsInt64Max: return configuration(withTick(.seconds(Int64.max)), valid: true, noSpin: true)
        case .memAvailableInterval0: return configuration(.init(pressureSources: .none, memAvailableInterval: .zero), valid: false)
        case .memAvailableIntervalMin: return configuration(.init(pressureSources: .none, memAvailableInterval: ExtremeDuration.min), valid: false)
        case .memAvailableIntervalMax: return configuration(.init(pressureSources: .none, memAvailableInterval: ExtremeDuration.max), valid: true)
        case .memAvailableIntervalMillisecondsEdge:
            return configuration(.init(pressureSources: .none, memAvailableInterval: ExtremeDuration.millisecondsEdge), valid: true)
        case .cgroupHeadroomInterval0: return configuration(.init(pressureSources: .none, cgroupHeadroomInterval: .zero), valid: false)
        case .cgroupHeadroomIntervalMin: return configuration(.init(pressureSources: .none, cgroupHeadroomInterval: ExtremeDuration.min), valid: false)
        case .cgroupHeadroomIntervalMax: return configuration(.init(pressureSources: .none, cgroupHeadroomInterval: ExtremeDuration.max), valid: true)
        case .cgroupHeadroomIntervalMillisecondsEdge:
            return configuration(.init(pressureSources: .none, cgroupHeadroomInterval: ExtremeDuration.millisecondsEdge), valid: true)
        case .moderateInterval0: return moderateInterval(.zero, valid: true)
        case .moderateIntervalMinus1ns: return moderateInterval(.nanoseconds(-1), valid: false)
        case .moderateIntervalMin: return moderateInterval(ExtremeDuration.min, valid: false)
        case .moderateIntervalMax: return moderateInterval(ExtremeDuration.max, valid: true)
        case .moderateFraction0: return configuration(.init(pressureSources: .none, moderateFraction: 0), valid: false)
        case .moderateFraction1: return configuration(.init(pressureSources: .none, moderateFraction: 1), valid: true)
        case .moderateFractionMinus1: return configuration(.init(pressureSources: .none, moderateFraction: -1), valid: false)
        case .moderateFractionNaN: return configuration(.init(pressureSources: .none, moderateFraction: .nan), valid: false)
        case .moderateFractionInfinity: return configuration(.init(pressureSources: .none, moderateFraction: .infinity), valid: false)
        case .moderateFractionTiny: return configuration(.init(pressureSources: .none, moderateFraction: .leastNonzeroMagnitude), valid: true)
        case .availableFractionsNaN:
            return configuration(.init(pressureSources: .none, moderateAvailableFraction: .nan, criticalAvailableFraction: .nan), valid: false)
        case .availableFractionsMinus1:
            return configuration(.init(pressureSources: .none, moderateAvailableFraction: -1, criticalAvailableFraction: -1), valid: false)
        case .availableFractions1:
            return configuration(.init(pressureSources: .none, moderateAvailableFraction: 1, criticalAvailableFraction: 1), valid: false)
        case .availableFractionsInfinity:
            return configuration(.init(pressureSources: .none, moderateAvailableFraction: .infinity, criticalAvailableFraction: 0), valid: false)
        case .memAvailableSpec0: return memAvailableSpec(0, valid: false)
        case .memAvailableSpec1: return memAvailableSpec(1, valid: true)
        case .memAvailableSpecMinus1: return memAvailableSpec(-1, valid: false)
        case .memAvailableSpecMin: return memAvailableSpec(.min, valid: false)
        case .memAvailableSpecMax: return memAvailableSpec(.max, valid: true)
        case .psiStall0: return psi(stall: 0, window: 2_000_000)
        case .psiStallMinus1: return psi(stall: -1, window: 2_000_000)
        case .psiStallMin: return psi(stall: .min, window: 2_000_000)
        case .psiStallMax: return psi(stall: .max, window: 2_000_000)
        case .psiWindow0: return psi(stall: 1, window: 0)
        case .psiWindowMin: return psi(stall: 1, window: .min)
        case .psiWindowMax: return psi(stall: 1, window: .max)
        }
    }
}

/// Purgeable memory with two units that report `bytes` volatile bytes each.
final class ExtremeUnits: PurgeableMemory, Sendable {
    let bytes: Int
    init(bytes: Int) { self.bytes = bytes }
    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        for id in 0..<2 { body(PurgeUnit(id: id, priority: .normal, lastUsed: 0, volatileBytes: bytes)) }
    }
    func purge(unit id: Int) -> Int { bytes }
}

func extremesCache(costLimit: Int = .max, shards: Int = 4) -> PurgeableCache<Int> {
    let a = try! VolatileAllocator(options: .init(releaseDelay: .seconds(600)))
    return PurgeableCache(costLimit: costLimit, allocator: a, shards: shards)
}

private func costLimit(_ limit: Int, expect: Int) -> String? {
    let c = extremesCache(costLimit: limit)
    guard c.costLimit == expect else { return "costLimit \(c.costLimit), expected \(expect)" }
    try! c.setBytes([1], forKey: 1, cost: 1)
    try! c.setBytes([], forKey: 2, cost: 0)
    // Cost 1 is kept unless the limit is 0; cost 0 always.
    guard c.contains(1) == (expect >= 1), c.contains(2) else { return "contains 1: \(c.contains(1)), 2: \(c.contains(2))" }
    return nil
}

private func shards(_ n: Int, expect: Int) -> String? {
    let c = extremesCache(shards: n)
    guard c.shards.count == expect else { return "\(c.shards.count) shards, expected \(expect)" }
    try! c.setBytes([9], forKey: 9)
    return c.bytes(forKey: 9) == [9] ? nil : "value lost"
}

private func cost(_ cost: Int, expect: Int) -> String? {
    let c = extremesCache()
    try! c.setBytes([1], forKey: 1, cost: cost)
    try! c.setBytes([2], forKey: 2, cost: 0)
    let s = c.statistics
    return s.totalCost == expect && c.bytes(forKey: 1) == [1] ? nil : "\(s)"
}

private func purgeBytes(_ n: Int, expect: Result<Int, VRangeError>) -> String? {
    let p = try! Purger(.init(pressureSources: .none))
    let m = ExtremeUnits(bytes: 4096)
    p.register(m)
    let r = Result { () throws(VRangeError) in try p.purge(bytes: n) }
    return r == expect ? nil : "\(r), expected \(expect)"
}

private func withTick(_ tick: Duration) -> Purger.Configuration {
    .init(budget: 1 << 40, pressureSources: .none, tick: tick)
}

private func moderateInterval(_ d: Duration, valid: Bool) -> String? {
    if let failure = configuration(.init(pressureSources: .none, moderateInterval: d), valid: valid) { return failure }
    guard valid else { return nil }
    // Debouncing with it neither traps nor misreports.
    let p = try! Purger(.init(pressureSources: .none, moderateInterval: d))
    p.reportPressure(.moderate)
    p.reportPressure(.moderate)
    let s = p.statistics()
    return s.pressureEvents == 2 ? nil : "\(s.pressureEvents) events"
}

private func memAvailableSpec(_ ms: Int, valid: Bool) -> String? {
    let spec = PressureSourceSpec.memAvailable(meminfoPath: "/nonexistent/meminfo", intervalMilliseconds: ms)
    return configuration(.init(pressureSources: .only([spec])), valid: valid)
}

private func psi(stall: Int, window: Int) -> String? {
    do {
        let t = try PSITrigger(.some, stallMicroseconds: stall, windowMicroseconds: window)
        return "accepted stall \(t.stallMicroseconds) window \(t.windowMicroseconds)"
    } catch {
        if case .invalidConfiguration = error { return nil }
        return "threw \(error)"
    }
}

/// Starts a purger with `c`: valid ones start (and, with `noSpin`, their
/// thread does not spin on the recency clock), invalid ones throw
/// `.invalidConfiguration`.
private func configuration(_ c: Purger.Configuration, valid: Bool, noSpin: Bool = false) -> String? {
    do {
        let p = try Purger(c)
        defer { p.stop() }
        guard valid else { return "accepted" }
        if noSpin {
            let before = RecencyClock.now
            var ts = timespec(tv_sec: 0, tv_nsec: 200_000_000)
            nanosleep(&ts, nil)
            let advanced = RecencyClock.now &- before
            if advanced > 100 { return "the purger's thread spun: the recency clock advanced \(advanced) times in 200 ms" }
        }
        return nil
    } catch {
        guard case .invalidConfiguration = error else { return "threw \(error)" }
        return valid ? "refused: \(error)" : nil
    }
}

@Suite("extremes table: cache and purger") struct CacheAndPurgerExtremesTable {
    @Test("a numeric parameter at an extreme: typed error or documented clamp, no trap, hang or spin", arguments: ExtremeRow.allCases)
    func extreme(_ row: ExtremeRow) async {
        let report = "/tmp/vrange-extremes-\(getpid())-\(row.rawValue).txt"
        await #expect(processExitsWith: .success) { [row] in
            alarm(20)  // a hang dies of SIGALRM
            if let failure = row.run() {
                // For the parent to show: what the row saw.
                let path = "/tmp/vrange-extremes-\(getppid())-\(row.rawValue).txt"
                let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                var bytes = Array(failure.utf8)
                _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
                _exit(1)
            }
            _exit(0)
        }
        if let seen = readText(report) {
            Issue.record("\(row): \(seen)")
            unlink(report)
        }
    }
}
