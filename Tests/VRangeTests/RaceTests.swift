// The central race (DESIGN.md §2): purge vs markNonVolatile, and purge vs
// optimistic access, on real threads and real mappings, with content checks.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` plain, or amplified: with the hooks to itself and a yield
/// armed at every critical window (MAP_BEFORE_CAS, MAP_LOCKED, the
/// handler's fill and record, the access pre-check, the unmark's clearing,
/// the settling pass and the discard). Hooks exist in debug builds only.
func racing(amplified: Bool, _ name: String, _ body: () throws -> Void) throws {
    guard amplified else { return try body() }
    guard hooksAvailable(name) else { return }
    try withHooks {
        armAmplifiers()
        try body()
        print("\(name): amplified, \(vr_test_hook_count(Int32(VR_HOOK_MAP_BEFORE_CAS))) CAS windows and \(vr_test_hook_count(Int32(VR_HOOK_HANDLER_BEFORE_FILL))) fills widened")
    }
}

@Suite("Races", .serialized) struct RaceTests {
    /// One thread marks ranges volatile and back, checking every byte; two
    /// others purge random ranges as fast as they can, and a fourth reads
    /// optimistically (more threads than the CI machine has cores). No byte
    /// of a page that is non-volatile is ever lost, and every report is exact.
    @Test(arguments: mechanisms, [false, true])
    func purgeVersusMarkNonVolatile(_ m: FaultMechanism, amplified: Bool) throws {
        try racing(amplified: amplified, "purgeVersusMarkNonVolatile(\(m))") {
            try purgeVersusMarkNonVolatileRounds(m, rounds: environmentInt("VRANGE_RACE_ROUNDS", 3000) / (amplified ? 3 : 1))
        }
    }

    func purgeVersusMarkNonVolatileRounds(_ m: FaultMechanism, rounds: Int) throws {
        let pages = 96
        let r = try region(pages: pages, m)
        let seed = testSeed("purgeVersusMarkNonVolatile(\(m))")
        let done = Atomic<Bool>(false)
        let purges = Atomic<Int>(0)
        let purgers = (0..<2).map { k in
            TestThread {
                var g = SeededGenerator(seed: seed ^ 0xDEAD ^ UInt64(k))
                while !done.load(ordering: .relaxed) {
                    let lo = Int.random(in: 0..<pages, using: &g)
                    let hi = Int.random(in: (lo + 1)...pages, using: &g)
                    if let n = try? r.purge((lo * page)..<(hi * page)), n > 0 { purges.add(1, ordering: .relaxed) }
                }
            }
        }
        let reader = TestThread {
            var g = SeededGenerator(seed: seed ^ 0xBEEF)
            while !done.load(ordering: .relaxed) {
                let lo = Int.random(in: 0..<pages, using: &g)
                _ = try? r.withVolatileAccess(bytes(lo..<min(pages, lo + 4))) { $0[8] &+ $0[$0.count - 8] }
            }
        }
        var g = SeededGenerator(seed: seed)
        var intact = 0, purged = 0
        for round in 0..<rounds {
            let lo = Int.random(in: 0..<pages, using: &g)
            let hi = Int.random(in: (lo + 1)...min(pages, lo + 40), using: &g)
            let tag = UInt8(truncatingIfNeeded: round % 255 + 1)
            for p in lo..<hi { fill(r, page: p, tag: tag) }
            try r.markVolatile(bytes(lo..<hi))
            for _ in 0..<(round % 5) { sched_yield() }
            let result = try r.markNonVolatile(bytes(lo..<hi))
            let seen = expectTruthfulUnmark(r, result, pages: lo..<hi, tag: tag, "seed \(seed) round \(round)")
            let lost = seen.lost
            intact += seen.intact
            purged += lost.count
            // Non-volatile now: the purger keeps running and must not touch them.
            for _ in 0..<3 { sched_yield() }
            for p in lo..<hi where !lost.contains(p) {
                #expect(holds(r, page: p, tag: tag), "seed \(seed) round \(round) page \(p): lost while non-volatile")
            }
        }
        done.store(true, ordering: .relaxed)
        purgers.forEach { $0.join() }
        reader.join()
        print("race purge/markNonVolatile (\(m)): \(intact) pages intact, \(purged) purged, \(purges.load(ordering: .relaxed)) effective purges, \(rounds) rounds")
        #expect(intact > 0 && purged > 0, "both outcomes must occur, or the race was not exercised")
        #expect(r.protectFailures == 0 && r.repopulateFailures == 0)
    }

    /// Optimistic reads racing with purges: an access reported intact saw
    /// exactly the bytes that were written; none crashes. Even rounds race
    /// freely; on odd rounds the purger purges only when the body asks and the
    /// body waits for it, so the fault path inside the body (zero-fill,
    /// resume, report purged) is certainly exercised.
    @Test(arguments: mechanisms, [false, true])
    func purgeVersusOptimisticAccess(_ m: FaultMechanism, amplified: Bool) throws {
        try racing(amplified: amplified, "purgeVersusOptimisticAccess(\(m))") {
            try purgeVersusOptimisticAccessRounds(m, rounds: environmentInt("VRANGE_RACE_ROUNDS", 3000) / (amplified ? 3 : 1))
        }
    }

    func purgeVersusOptimisticAccessRounds(_ m: FaultMechanism, rounds: Int) throws {
        let pages = 32
        let r = try region(pages: pages, m)
        let done = Atomic<Bool>(false)
        let onRequest = Atomic<Bool>(false)      // the mode main asks for
        let onRequestSeen = Atomic<Bool>(false)  // the mode the purger is in
        let requested = Atomic<Int>(0)
        let served = Atomic<Int>(0)
        let purger = TestThread {
            while !done.load(ordering: .relaxed) {
                let mode = onRequest.load(ordering: .acquiring)
                onRequestSeen.store(mode, ordering: .releasing)
                if !mode {
                    _ = try? r.purgeAll()
                } else if requested.load(ordering: .acquiring) > served.load(ordering: .relaxed) {
                    let n = requested.load(ordering: .acquiring)
                    _ = try? r.purgeAll()
                    served.store(n, ordering: .releasing)
                } else {
                    sched_yield()
                }
            }
        }
        // A second reader, so that accesses fault and restore pages while
        // others read them (and threads outnumber the CI machine's cores).
        let reader = TestThread {
            while !done.load(ordering: .relaxed) {
                _ = try? r.withVolatileAccess(bytes(0..<pages)) { buffer in
                    (0..<pages).reduce(0) { $0 &+ Int(buffer[$1 * page + 100]) }
                }
            }
        }
        var intact = 0, purged = 0, purgedInsideBody = 0, faultedInBody = 0
        for round in 0..<rounds {
            let controlled = round % 2 == 1
            onRequest.store(controlled, ordering: .releasing)
            while onRequestSeen.load(ordering: .acquiring) != controlled { sched_yield() }
            let tag = UInt8(truncatingIfNeeded: round % 255 + 1)
            _ = try r.markNonVolatile(bytes(0..<pages))
            for p in 0..<pages { fill(r, page: p, tag: tag) }
            try r.markVolatile(bytes(0..<pages))
            var sawZeros = false
            let result = try r.withVolatileAccess(bytes(0..<pages)) { buffer -> Bool in
                if controlled {
                    purgedInsideBody += 1
                    let ticket = requested.add(1, ordering: .acquiringAndReleasing).newValue
                    while served.load(ordering: .acquiring) < ticket { sched_yield() }
                }
                var ok = true
                for p in 0..<pages {
                    let word = buffer.load(fromByteOffset: p * page + 64, as: UInt64.self)
                    if word == 0 { sawZeros = true }
                    ok = ok && word == UInt64(tag) &* 0x0101_0101_0101_0101 ^ 64
                }
                return ok
            }
            if controlled {
                #expect(sawZeros && result == .purged, "round \(round): a purge inside the body must fault, read zeros and report purged")
                if sawZeros { faultedInBody += 1 }
            }
            switch result {
            case .intact(let ok):
                intact += 1
                #expect(ok, "round \(round): access reported intact but read wrong bytes")
            case .purged:
                purged += 1
            }
        }
        done.store(true, ordering: .relaxed)
        purger.join()
        reader.join()
        print("race purge/optimistic access (\(m)): \(intact) intact, \(purged) purged of \(rounds); \(faultedInBody) of \(purgedInsideBody) purges inside the body faulted there")
        #expect(purgedInsideBody == rounds / 2, "every controlled round ran its body")
        #expect(intact > 0, "free rounds never finished intact: the race was one-sided")
        #expect(r.protectFailures == 0 && r.repopulateFailures == 0)
    }
}
