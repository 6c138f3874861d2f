// Kernel-driven mode: markVolatile also applies MADV_FREE, the kernel
// reclaims (forced here with MADV_PAGEOUT, as memory pressure would), and the
// library detects the missing pages.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Kernel-driven purging", .serialized) struct KernelDrivenTests {
    func kernelRegion(pages: Int) throws -> VolatileRegion? {
        guard userfaultfdAvailable else {
            print("NOTE: userfaultfd unavailable: kernel-driven mode cannot run here; checking that it says so")
            #expect {
                try VolatileRegion(byteCount: pages * page, options: .init(kernelDriven: true))
            } throws: { error in
                if case VRangeError.unsupported = error { return true }
                return false
            }
            return nil
        }
        let r = try VolatileRegion(byteCount: pages * page, options: .init(kernelDriven: true))
        #expect(r.isKernelDriven)
        return r
    }

    @Test func reclaimedPagesAreReportedPurged() throws {
        guard let r = try kernelRegion(pages: 16) else { return }
        for p in 0..<16 { fill(r, page: p, tag: UInt8(p + 1)) }
        try r.markVolatile(bytes(0..<8))
        try reclaimAll(r, 2..<5)
        try r.pageOut(bytes(8..<12))  // non-volatile: not lazily freed, must survive
        #expect(try r.pageStates(bytes(0..<8)) == [.volatile, .volatile, .purged, .purged, .purged, .volatile, .volatile, .volatile])
        #expect(try r.status() == RegionStatus(bytes: 16 * page, volatileBytes: 5 * page, purgedBytes: 3 * page))

        let result = try r.markNonVolatile(bytes(0..<8))
        #expect(result.purgedRanges == [bytes(2..<5)])
        for p in 0..<16 {
            if (2..<5).contains(p) { #expect(isZero(r, page: p)) } else { #expect(holds(r, page: p, tag: UInt8(p + 1)), "page \(p)") }
        }
        // Unmarking cancelled the lazy free: a later reclaim cannot take them.
        try r.pageOut(bytes(0..<16))
        for p in 0..<16 where !(2..<5).contains(p) { #expect(holds(r, page: p, tag: UInt8(p + 1)), "page \(p) after reclaim") }
    }

    @Test func libraryAndKernelPurgesCombine() throws {
        guard let r = try kernelRegion(pages: 8) else { return }
        for p in 0..<8 { fill(r, page: p, tag: 3) }
        try r.markVolatile(bytes(0..<8))
        try r.purge(bytes(1..<2))
        try reclaimAll(r, 2..<4)
        #expect(try r.markNonVolatile(bytes(0..<8)).purgedRanges == [bytes(1..<4)])
    }

    @Test func optimisticAccessSeesAReclaimedPage() throws {
        guard let r = try kernelRegion(pages: 4) else { return }
        for p in 0..<4 { fill(r, page: p, tag: 4) }
        try r.markVolatile(bytes(0..<4))
        try reclaimAll(r, 1..<2)
        #expect(try r.withVolatileAccess(bytes(0..<1)) { $0[1] } == .intact(4))
        #expect(try r.withVolatileAccess(bytes(0..<4)) { $0[page] } == .purged)
        // The access recorded the loss: the page is purged now, in the map too.
        #expect(try r.pageStates(bytes(1..<2)) == [.purged])
        #expect(try r.markNonVolatile(bytes(0..<4)).purgedRanges == [bytes(1..<2)])
    }

    @Test func touchingAReclaimedPageRaisesSIGBUS() async throws {
        try #require(userfaultfdAvailable, "userfaultfd unavailable: kernel-driven mode cannot run here")
        await #expect(processExitsWith: .signal(SIGBUS)) {
            let r = try! VolatileRegion(byteCount: 2 * page, options: .init(kernelDriven: true))
            r.bytes[0] = 1
            try! r.markVolatile(0..<page)
            try! reclaimAll(r, 0..<1)
            _ = vr_read_byte(r.baseAddress)
        }
    }

    /// Reclaim (and library purges of a few pages) racing with
    /// markNonVolatile: every page reported intact holds its bytes, every
    /// page reported purged reads zero; none is lost silently.
    @Test(arguments: [false, true])
    func unmarkRacingWithReclaimLosesNothingSilently(amplified: Bool) throws {
        guard let r = try kernelRegion(pages: 64) else { return }
        try racing(amplified: amplified, "unmarkRacingWithReclaimLosesNothingSilently") {
            let rounds = environmentInt("VRANGE_RACE_ROUNDS", 300) / (amplified ? 2 : 1)
            let done = Atomic<Bool>(false)
            let reclaimer = TestThread {
                while !done.load(ordering: .relaxed) { try? r.pageOut(0..<(64 * page)) }
            }
            let purger = TestThread {
                var p = 0
                while !done.load(ordering: .relaxed) {
                    _ = try? r.purge(bytes(p..<(p + 1)))
                    p = (p + 13) % 64
                    for _ in 0..<50 { sched_yield() }
                }
            }
            let (intact, purged) = try unmarkRounds(r, pages: 0..<64, rounds: rounds, yieldEvery: 7)
            done.store(true, ordering: .relaxed)
            reclaimer.join()
            purger.join()
            print("kernel-driven race\(amplified ? " (amplified)" : ""): \(intact) pages intact, \(purged) reclaimed or purged over \(rounds) rounds")
            #expect(purged > 0, "the reclaimer never won: the race was not exercised")
        }
    }

    /// Reclaim, optimistic readers and unmarking all at once: a page that an
    /// access found reclaimed (and the handler zero-filled so the access could
    /// go on) must still be reported purged by the unmark on the other thread.
    @Test(arguments: [false, true])
    func unmarkRacingWithReclaimAndOptimisticReaders(amplified: Bool) throws {
        guard let r = try kernelRegion(pages: 32) else { return }
        try racing(amplified: amplified, "unmarkRacingWithReclaimAndOptimisticReaders") {
            let rounds = environmentInt("VRANGE_RACE_ROUNDS", 300) / (amplified ? 2 : 1)
            let done = Atomic<Bool>(false)
            let reclaimer = TestThread {
                while !done.load(ordering: .relaxed) { try? r.pageOut(0..<(32 * page)) }
            }
            let readers = (0..<2).map { _ in
                TestThread {
                    while !done.load(ordering: .relaxed) {
                        _ = try? r.withVolatileAccess(0..<(32 * page)) { buffer in
                            var sum = 0
                            for p in 0..<32 { sum &+= Int(buffer[p * page + 9]) }
                            // Linger like a slow consumer: the unmark on the
                            // other thread then often lands between this
                            // access's faults and its end.
                            for _ in 0..<20 { sched_yield() }
                            return sum
                        }
                    }
                }
            }
            let (intact, purged) = try unmarkRounds(r, pages: 0..<32, rounds: rounds, yieldEvery: 5)
            done.store(true, ordering: .relaxed)
            reclaimer.join()
            readers.forEach { $0.join() }
            print("kernel-driven race with readers\(amplified ? " (amplified)" : ""): \(intact) pages intact, \(purged) reclaimed over \(rounds) rounds")
            #expect(purged > 0 && intact > 0)
        }
    }

    /// markNonVolatile cannot pass a page while a kernel-driven markVolatile
    /// holds it between the mark and its MADV_FREE: otherwise the page could
    /// end non-volatile but lazily freed, and be lost later.
    @Test func unmarkWaitsForAMarkInFlight() throws {
        guard let r = try kernelRegion(pages: 4) else { return }
        for p in 0..<4 { fill(r, page: p, tag: 7) }
        let unmarked = Atomic<Bool>(false)
        var unmarker: TestThread?
        // What markVolatile does, with a pause inside its locked window.
        r.map.lockedRuns(in: 0..<4, select: { word, _ in ~word >> 1 & VolatilityMap.lowBits }, release: .volatile) { run in
            unmarker = TestThread {
                _ = try? r.markNonVolatile(0..<(4 * page))
                unmarked.store(true, ordering: .releasing)
            }
            for _ in 0..<50 { usleep(1000) }
            let passedEarly = unmarked.load(ordering: .acquiring)
            #expect(!passedEarly, "markNonVolatile passed a locked page")
            try? Kernel.advise(r.baseAddress, length: 4 * page, .free)
        }
        unmarker?.join()
        let finished = unmarked.load(ordering: .acquiring)
        #expect(finished)
        // The unmark cancelled the lazy free: a reclaim now loses nothing.
        try r.pageOut(0..<(4 * page))
        #expect(try r.pageStates(0..<(4 * page)).allSatisfy { $0 == .nonVolatile })
        for p in 0..<4 { #expect(holds(r, page: p, tag: 7), "page \(p)") }
    }

    /// The dirtying pass of markNonVolatile works inside the deepest nesting
    /// of optimistic accesses (it has a scope slot of its own).
    @Test func unmarkInsideDeeplyNestedAccesses() throws {
        guard let r = try kernelRegion(pages: 2) else { return }
        for p in 0..<2 { fill(r, page: p, tag: 3) }
        try r.markVolatile(bytes(0..<2))
        try reclaimAll(r, 1..<2)
        var result: NonVolatileResult?
        func nest(_ depth: Int) {
            if depth == 8 {
                result = try? r.markNonVolatile(bytes(0..<2))
                return
            }
            _ = try? r.withVolatileAccess(bytes(0..<1)) { _ in nest(depth + 1) }
        }
        nest(0)
        #expect(result?.purgedRanges == [bytes(1..<2)])
        #expect(holds(r, page: 0, tag: 3))
        #expect(isZero(r, page: 1))
    }

    /// Rounds of fill, mark volatile, a few yields, mark non-volatile, each
    /// checked with `expectTruthfulUnmark`, while other threads interfere.
    /// Returns the pages found intact and reported purged over all rounds.
    func unmarkRounds(
        _ r: VolatileRegion, pages: Range<Int>, rounds: Int, yieldEvery: Int
    ) throws -> (intact: Int, purged: Int) {
        var intact = 0, purged = 0
        for round in 0..<rounds {
            let tag = UInt8(truncatingIfNeeded: round | 1)
            for p in pages { fill(r, page: p, tag: tag) }
            try r.markVolatile(bytes(pages))
            for _ in 0..<(round % yieldEvery) { sched_yield() }
            let result = try r.markNonVolatile(bytes(pages))
            let seen = expectTruthfulUnmark(r, result, pages: pages, tag: tag, "round \(round)")
            intact += seen.intact
            purged += seen.lost.count
        }
        return (intact, purged)
    }
}
