// The volatility map on its own: every transition, word boundaries, and a
// seeded model-based test against a dictionary of page -> state.
import Testing
@testable import VRange

/// A map over freshly zeroed heap memory.
final class MapFixture {
    let memory: UnsafeMutableRawPointer
    let map: VolatilityMap
    init(pages: Int) {
        let bytes = VolatilityMap.byteCount(pages: pages)
        memory = .allocate(byteCount: bytes, alignment: 8)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        map = VolatilityMap(memory: memory, pageCount: pages)
    }
    deinit { memory.deallocate() }
    func states(_ pages: Range<Int>) -> [PageState] { pages.map { map.state(ofPage: $0) } }
}

@Suite("Volatility map") struct MapTests {
    @Test func newMapIsNonVolatile() {
        let f = MapFixture(pages: 100)
        #expect(f.states(0..<100).allSatisfy { $0 == .nonVolatile })
        #expect(f.map.census(0..<100) == (0, 0, 0))
        #expect(VolatilityMap.byteCount(pages: 100) == 48, "4 state words + 4 discard generations")
    }

    @Test func markVolatileThenNonVolatileIsIntact() {
        let f = MapFixture(pages: 100)
        #expect(f.map.markVolatile(30..<70) == 40)
        #expect(f.map.markVolatile(30..<70) == 0, "idempotent")
        #expect(f.states(29..<71) == [.nonVolatile] + Array(repeating: .volatile, count: 40) + [.nonVolatile])
        var reported: [Range<Int>] = []
        #expect(f.map.markNonVolatile(30..<70, wait: {}) { reported.append($0) } == 0)
        #expect(reported.isEmpty)
        #expect(f.states(0..<100).allSatisfy { $0 == .nonVolatile })
    }

    @Test func discardOnlyTakesVolatilePagesAndReportsMaximalRuns() {
        let f = MapFixture(pages: 100)
        f.map.markVolatile(10..<40)
        f.map.markVolatile(60..<70)
        var discarded: [Range<Int>] = []
        // Runs straddle the word boundary at 32 and merge across it.
        #expect(f.map.discardRuns(in: 0..<100) { discarded.append($0) } == 40)
        #expect(discarded == [10..<40, 60..<70])
        #expect(f.map.census(0..<100) == (0, 0, 40))
        #expect(f.map.discardRuns(in: 0..<100) { _ in Issue.record("nothing left to purge") } == 0)
        var reported: [Range<Int>] = []
        #expect(f.map.markNonVolatile(0..<100, wait: {}) { reported.append($0) } == 40)
        #expect(reported == [10..<40, 60..<70])
    }

    @Test func pagesAreLockedWhileTheirDiscardRuns() {
        let f = MapFixture(pages: 64)
        f.map.markVolatile(0..<64)
        f.map.discardRuns(in: 5..<9) { run in
            #expect(run == 5..<9)
            #expect(f.states(4..<10) == [.volatile, .locked, .locked, .locked, .locked, .volatile])
            // markVolatile leaves a locked page alone.
            f.map.markVolatile(0..<64)
            #expect(f.map.state(ofPage: 6) == .locked)
        }
        #expect(f.states(5..<9) == Array(repeating: .purged, count: 4))
    }

    @Test func markNonVolatileCallsWaitWhilePurging() {
        let f = MapFixture(pages: 32)
        f.map.markVolatile(0..<32)
        // Lock page 3 by hand (a purge in flight), release it from `wait`.
        f.map.words[0].store(f.map.words[0].load(ordering: .relaxed) ^ (0b11 << 6), ordering: .relaxed)
        #expect(f.map.state(ofPage: 3) == .locked)
        var waits = 0
        let n = f.map.markNonVolatile(0..<32, wait: {
            waits += 1
            if waits == 3 { f.map.words[0].bitwiseOr(0b01 << 6, ordering: .relaxed) }  // purge done
        }) { #expect($0 == 3..<4) }
        #expect(waits == 3)
        #expect(n == 1)
        #expect(f.map.census(0..<32) == (0, 0, 0))
    }

    @Test func settlingUnmarkLocksVolatilePagesUntilSettled() {
        let f = MapFixture(pages: 40)
        f.map.markVolatile(0..<40)
        f.map.discardRuns(in: 10..<12) { _ in }
        var settled: [Range<Int>] = []
        var reported: [Range<Int>] = []
        f.map.markNonVolatile(0..<40, settleVolatile: true, wait: { Issue.record("nothing to wait for") }, settle: { run in
            settled.append(run)
            // While settling, the run is locked and purged pages already cleared.
            #expect(run.allSatisfy { f.map.state(ofPage: $0) == .locked })
            #expect(f.map.state(ofPage: 10) == .nonVolatile)
        }) { reported.append($0) }
        #expect(settled == [0..<10, 12..<40])
        #expect(reported == [10..<12])
        #expect(f.map.census(0..<40) == (0, 0, 0))
    }

    @Test func lockedRunsReleaseToTheRequestedState() {
        let f = MapFixture(pages: 8)
        f.map.markVolatile(4..<6)
        f.map.discardRuns(in: 5..<6) { _ in }
        // A kernel-driven markVolatile: 00 and 01 locked, 11 left alone.
        var runs: [Range<Int>] = []
        f.map.lockedRuns(in: 0..<8, select: { word, _ in ~word >> 1 & VolatilityMap.lowBits }, release: .volatile) { run in
            runs.append(run)
            #expect(run.allSatisfy { f.map.state(ofPage: $0) == .locked })
        }
        #expect(runs == [0..<5, 6..<8])
        #expect(f.states(0..<8) == [.volatile, .volatile, .volatile, .volatile, .volatile, .purged, .volatile, .volatile])
    }

    @Test func maxRunSplitsLongRuns() {
        let f = MapFixture(pages: 200)
        f.map.markVolatile(0..<200)
        var runs: [Range<Int>] = []
        f.map.discardRuns(in: 0..<200, maxRun: 64) { runs.append($0) }
        #expect(runs.allSatisfy { $0.count <= 64 })
        #expect(runs.reduce(0) { $0 + $1.count } == 200)
        #expect(runs.first?.lowerBound == 0 && runs.last?.upperBound == 200)
    }

    @Test func includePurgedRelocksPurgedPages() {
        let f = MapFixture(pages: 10)
        f.map.markVolatile(0..<10)
        f.map.discardRuns(in: 2..<4) { _ in }
        var runs: [Range<Int>] = []
        f.map.discardRuns(in: 0..<10, includePurged: true, includeVolatile: false) { runs.append($0) }
        #expect(runs == [2..<4])
        #expect(f.states(0..<10) == [.volatile, .volatile, .purged, .purged] + Array(repeating: .volatile, count: 6))
    }

    @Test func anyDiscardedSeesPurgingAndPurged() {
        let f = MapFixture(pages: 70)
        f.map.markVolatile(0..<70)
        #expect(!f.map.anyDiscarded(in: 0..<70))
        f.map.discardRuns(in: 65..<66) { _ in #expect(f.map.anyDiscarded(in: 60..<70)) }
        #expect(f.map.anyDiscarded(in: 65..<66))
        #expect(!f.map.anyDiscarded(in: 0..<65))
        #expect(!f.map.anyDiscarded(in: 66..<70))
    }

    /// Random mark/unmark/purge sequences against an obviously-correct model.
    /// CI runs VRANGE_MODEL_STEPS (default 20 000) steps; for millions:
    /// `VRANGE_MODEL_STEPS=5000000 swift test -c release --filter VolatilityMapModel`.
    @Test func volatilityMapModel() {
        let seed = testSeed("VolatilityMapModel")
        var g = SeededGenerator(seed: seed)
        let steps = environmentInt("VRANGE_MODEL_STEPS", 20_000)
        let pages = 160  // five words, so ranges cross word boundaries
        let f = MapFixture(pages: pages)
        var model = [Int: PageState]()  // absent = non-volatile
        func modelState(_ p: Int) -> PageState { model[p] ?? .nonVolatile }
        for step in 0..<steps {
            let lo = Int.random(in: 0..<pages, using: &g)
            let hi = Int.random(in: (lo + 1)...min(pages, lo + [1, 3, 40, 160].randomElement(using: &g)!), using: &g)
            let r = lo..<hi
            let context = "seed \(seed) step \(step) range \(r)"
            switch Int.random(in: 0..<5, using: &g) {
            case 0, 1:
                let expected = r.filter { modelState($0) == .nonVolatile }.count
                #expect(f.map.markVolatile(r) == expected, "\(context)")
                for p in r where modelState(p) == .nonVolatile { model[p] = .volatile }
            case 2:
                var reported: [Range<Int>] = []
                f.map.markNonVolatile(r, wait: { Issue.record("no purge is in flight: \(context)") }) { reported.append($0) }
                #expect(reported == runs(r.filter { modelState($0) == .purged }), "\(context)")
                for p in r { model[p] = nil }
            case 3:
                var discarded: [Range<Int>] = []
                f.map.discardRuns(in: r, maxRun: 37) { run in
                    discarded.append(run)
                    for p in run where f.map.state(ofPage: p) != .locked { Issue.record("page \(p) not locked: \(context)") }
                }
                let expected = r.filter { modelState($0) == .volatile }
                #expect(discarded.flatMap { Array($0) } == expected, "\(context)")
                #expect(discarded.allSatisfy { $0.count <= 37 })
                for p in expected { model[p] = .purged }
            default:
                let c = f.map.census(r)
                #expect(c.volatile == r.filter { modelState($0) == .volatile }.count, "\(context)")
                #expect(c.purged == r.filter { modelState($0) == .purged }.count, "\(context)")
                #expect(c.locked == 0, "\(context)")
                #expect(f.map.anyDiscarded(in: r) == r.contains { modelState($0) == .purged }, "\(context)")
            }
            if step % 64 == 0 {
                for p in 0..<pages where f.map.state(ofPage: p) != modelState(p) {
                    Issue.record("page \(p) is \(f.map.state(ofPage: p)), model says \(modelState(p)): \(context)")
                    return
                }
            }
        }
    }
}
