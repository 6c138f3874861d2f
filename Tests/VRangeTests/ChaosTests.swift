// Cross-process chaos: N real processes (VRangeTestPeer, `chaos` command)
// share one VolatileFile and mark, vote, pin, purge, access, map and unmap
// at random (every fourth runs an allocator-backed cache instead), writing canaries to the pages they own while they pin them;
// this process SIGKILLs one of them at random moments and starts a
// replacement, until the time is up. Then: every participant still running
// must finish within a deadline (no deadlock), and DESIGN.md §1c's
// invariants must hold, checked from the sidecar and by a final pinning
// pass: no page left locked, no slot of a dead process counting (every slot
// free, its marks zero), no non-volatile canary byte lost (the
// participants' own checks, counted in the ledger), every page a pin
// reports purged reads zero and every other page holds zeros or its owner's
// last canary.
//
// Seeded (the seed is printed; VRANGE_SEED replays the participants'
// choices and the kill schedule; kill instants are real time). Bounded for
// CI; for hours:
//   VRANGE_CHAOS_SECONDS=3600 swift test --filter ChaosTests   (or .ci/chaos 3600)
// VRANGE_CHAOS_PROCESSES (default 8) sets N.
import Synchronization
import Testing
@testable import VRange
import VRangeChaosLedger
#if canImport(Glibc)
import Glibc
#endif

@Suite("Chaos", .serialized) struct ChaosTests {
    /// Kinds of participant a chaos run mixes (each a `chaos KIND` of the
    /// peer): every fourth participant runs an allocator-backed cache of its
    /// own under random purges (its pages of the file stay untouched).
    enum Kind: String, CaseIterable {
        case file, cache
        static func of(_ index: Int) -> Kind { index % 4 == 3 ? .cache : .file }
    }

    @Test func processesKilledAtRandomLeaveEveryInvariant() throws {
        let seed = testSeed("chaos")
        let seconds = environmentInt("VRANGE_CHAOS_SECONDS", 8)
        let n = max(environmentInt("VRANGE_CHAOS_PROCESSES", 8), 2)
        let pagesEach = 12
        let pages = n * pagesEach
        // Slots for every main mapping and some second ones: a claim
        // sometimes finds none free (dead owners not yet reclaimed, or live).
        let f = try VolatileFile(byteCount: pages * page, options: .init(maxMappers: n + n / 2 + 2))
        let ledger = try ChaosLedgerFile(pages: pages, participants: n)
        var random = SeededGenerator(seed: seed)
        let start = Kernel.monotonicNanoseconds()
        let end = start + UInt64(seconds) * 1_000_000_000
        var spawned = 0, killed = 0

        // Copies numbered above anything a spawn's dup2 to 3...6 could
        // overwrite before reading (posix_spawn applies them in order).
        let inherited = [f.descriptors.data, f.descriptors.sidecar, ledger.fd].map { fcntl($0, F_DUPFD_CLOEXEC, 200) }
        #expect(!inherited.contains(-1))
        defer { for fd in inherited { Kernel.close(fd: fd) } }
        func launch(_ index: Int) throws -> Peer {
            let p = try Peer(inherit: inherited)
            try p.send("adopt 4 5")
            let left = Int((end - min(end, Kernel.monotonicNanoseconds())) / 1_000_000)
            let jitter = random.next() % 3 == 0 ? " jitter" : ""
            try p.write("chaos \(Kind.of(index).rawValue) \(index) \(n) \(Int64(bitPattern: random.next() >> 1)) \(left) 6\(jitter)\n")
            spawned += 1
            return p
        }
        var running: [Peer] = []
        for i in 0..<n { running.append(try launch(i)) }

        // Kill one participant at a random instant, 5 to 150 ms apart, and
        // start its replacement (same pages), until the time is up.
        let kills = environmentInt("VRANGE_CHAOS_KILLS", 1) != 0  // 0: no kills (to narrow a failure down)
        while kills && Kernel.monotonicNanoseconds() < end {
            var pause = timespec(tv_sec: 0, tv_nsec: Int(5 + random.next() % 145) * 1_000_000)
            nanosleep(&pause, nil)
            guard Kernel.monotonicNanoseconds() + 50_000_000 < end else { break }
            let i = Int(random.next() % UInt64(n))
            running[i].kill()
            killed += 1
            running[i] = try launch(i)
        }

        if !kills { while Kernel.monotonicNanoseconds() < end { sched_yield() } }
        // Every participant still running ends on its own, within a deadline.
        var finished = 0
        var problems: [String] = []
        for (i, p) in running.enumerated() {
            do {
                let line = try p.readLine(timeout: 120, context: "chaos participant \(i)")
                if line.hasPrefix("ok") { finished += 1 } else { problems.append("participant \(i): \(line)") }
            } catch {
                problems.append("participant \(i) did not finish within 120 s: \(error)")
            }
            p.kill()
        }
        #expect(problems.isEmpty, "\(problems)")

        // The invariants, with every participant dead: one purge takes the
        // purge lock (recovering a dead purger's intent) and reclaims the
        // dead slots.
        let t0 = Kernel.monotonicNanoseconds()
        _ = try f.purgeAll()
        let recoveryMs = Double(Kernel.monotonicNanoseconds() - t0) / 1e6
        let all = 0..<pages
        #expect(f.sidecar.content.census(all).locked == 0, "a page left locked")
        #expect(f.sidecar.control.phase == .idle, "a purge intent left in flight")
        let census = f.sidecar.slots.census()
        #expect(census.shared == 0 && census.privateMappings == 0 && census.other == 0, "slots of dead processes: \(census)")
        var dirtySlots = 0
        for i in 0..<f.maxMappers {
            let marks = f.sidecar.marks(ofSlot: i)
            if (0..<VolatilityMap.wordCount(pages: pages)).contains(where: { marks.words[$0].load(ordering: .relaxed) != 0 }) {
                dirtySlots += 1
            }
        }
        #expect(dirtySlots == 0, "\(dirtySlots) free slots still carry votes or pins")
        #expect(try f.status().purgeableBytes == 0, "nothing purgeable is left after the purge")

        // The final pinning pass.
        let m = try f.map()
        let report = Mutex<NonVolatileResult?>(nil)
        #expect(finishes(within: 30) { report.withLock { $0 = try? m.markNonVolatile(0..<m.size) } }, "final pin within 30 s")
        let lost = Set((report.withLock { $0 }?.purgedRanges ?? []).flatMap { ($0.lowerBound / page)..<($0.upperBound / page) })
        var torn = 0, zero = 0, canary = 0, wrong: [String] = []
        for p in all {
            let v = ledger.sequence(p)
            let seen = chaosLook(m.baseAddress + p * page, pageSize: page, page: p, canary: v / 2)
            if lost.contains(p) {
                if seen != .zero { wrong.append("page \(p) reported purged holds \(seen)") }
                zero += 1
            } else if v & 1 == 1 {
                torn += 1  // its owner was killed while writing its canary
            } else if seen == .other {
                wrong.append("page \(p) holds neither zeros nor canary \(v / 2)")
            } else if seen == .canary {
                canary += 1
            } else {
                zero += 1
            }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(5))")
        #expect(ledger.violations == 0, "first violation: \(ledger.firstViolation)")
        #expect(ledger.total(.strongChecks) > 0 && ledger.total(.pagesPurged) > 0, "the run exercised checks and purges")
        print("""
            [chaos] seed \(seed) (replay with VRANGE_SEED=\(seed)): \(seconds) s, \(n) processes at once, \
            \(spawned) started, \(killed) SIGKILLed, \(finished) finished; \
            operations \(ledger.total(.operations)), pins \(ledger.total(.pins)), \
            strong checks \(ledger.total(.strongChecks)), weak checks \(ledger.total(.weakChecks)), \
            bytes verified \(ledger.total(.bytesVerified)), pages lost and reported \(ledger.total(.pagesLost)), \
            purges \(ledger.total(.purges)) (\(ledger.total(.pagesPurged)) pages), \
            accesses \(ledger.total(.accesses)) (\(ledger.total(.accessesIntact)) intact), \
            mappings made \(ledger.total(.maps)), closed \(ledger.total(.unmaps)), file marks \(ledger.total(.fileMarks)), \
            typed errors \(ledger.total(.typedErrors)), violations \(ledger.violations); \
            after: recovery purge \((recoveryMs * 10).rounded() / 10) ms, final pass \(canary) canaries, \
            \(zero) zero pages, \(torn) torn by a kill mid-write
            """)
    }
}
