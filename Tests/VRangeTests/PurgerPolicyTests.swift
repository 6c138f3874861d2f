// The purger's policy with fake memory and real regions: victim order by
// class, recency and size, purge(bytes:) and purgeAll, weak registration,
// the budget kept by the background thread, moderate and critical
// reactions, debouncing (an injected clock, no sleeping) and statistics.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Purger policy") struct PurgerPolicyTests {
    let none = Purger.Configuration(pressureSources: .none)

    @Test func victimOrderIsClassThenRecencyThenSize() throws {
        let log = PurgeLog()
        let a = FakeMemory("a", log: log, units: [
            0: .init(priority: .normal, lastUsed: 1, bytes: 100),      // normal, oldest
            1: .init(priority: .veryLow, lastUsed: 50, bytes: 10),     // lowest class, recent
            2: .init(priority: .low, lastUsed: 9, bytes: 10),
        ])
        let b = FakeMemory("b", log: log, units: [
            0: .init(priority: .low, lastUsed: 5, bytes: 10),          // low, older than a.2
            1: .init(priority: .low, lastUsed: 9, bytes: 30),          // ties a.2 on recency, larger
            2: .init(priority: .belowNormal, lastUsed: 0, bytes: 10),
        ])
        let purger = try testPurger(none)
        purger.register(a)
        purger.register(b)
        defer { withExtendedLifetime((a, b)) {} }  // registration is weak
        #expect(try purger.purge(bytes: 1) == 10)  // exactly one unit: the lowest class
        #expect(log.all == ["a.1"])
        #expect(purger.purgeAll() == 160)
        #expect(log.all == ["a.1", "b.0", "b.1", "a.2", "b.2", "a.0"])
        #expect(purger.purgeAll() == 0)
    }

    @Test func purgeStopsOnceEnoughIsReleased() throws {
        let log = PurgeLog()
        let m = FakeMemory("m", log: log, units: Dictionary(uniqueKeysWithValues: (0..<10).map {
            ($0, FakeMemory.Unit(priority: .normal, lastUsed: UInt64($0), bytes: 1000))
        }))
        let purger = try testPurger(none)
        purger.register(m)
        defer { withExtendedLifetime(m) {} }  // registration is weak
        #expect(try purger.purge(bytes: 2500) == 3000)   // whole units: 3 of them
        #expect(log.all == ["m.0", "m.1", "m.2"])
        #expect(try purger.purge(bytes: 0) == 0)
        #expect(throws: VRangeError.invalidSize(-1)) { try purger.purge(bytes: -1) }
        #expect(log.all.count == 3)
        let s = purger.statistics()
        #expect(s.purges[.request] == PurgeTally(purges: 1, bytes: 3000, units: 3))
        #expect(s.purgedBytes == 3000)
        #expect(s.volatileBytes == 7000)
        #expect(s.registeredObjects == 1)
        #expect(!s.hasThread)  // no source, no budget: no thread
    }

    @Test func realRegionsGoLeastRecentlyUsedFirstWithinAClass() throws {
        let purger = try testPurger(none)
        // Marked in this order, the clock moving between marks.
        let old = try volatileRegion(pages: 4, tag: 1)
        RecencyClock.advance()
        let cheap = try volatileRegion(pages: 4, priority: .veryLow, tag: 2)  // newest but lowest class
        RecencyClock.advance()
        let middle = try volatileRegion(pages: 4, tag: 3)
        RecencyClock.advance()
        let recent = try volatileRegion(pages: 4, tag: 4)
        for r in [recent, middle, cheap, old] { purger.register(r) }
        // Touch `old` again: now it is the most recent of the normal class.
        RecencyClock.advance()
        _ = try old.markNonVolatile(0..<old.size)
        try old.markVolatile(0..<old.size)

        #expect(try purger.purge(bytes: 4 * page) == 4 * page)
        #expect(try cheap.status().purgedBytes == 4 * page)
        #expect(try purger.purge(bytes: 4 * page) == 4 * page)
        #expect(try middle.status().purgedBytes == 4 * page)
        #expect(try purger.purge(bytes: 4 * page) == 4 * page)
        #expect(try recent.status().purgedBytes == 4 * page)
        #expect(try old.status().purgedBytes == 0)
        for p in 0..<4 { #expect(volatileHolds(old, page: p, tag: 1)) }
        #expect(purger.purgeAll() == 4 * page)
        #expect(try old.markNonVolatile(0..<old.size).purgedRanges == [0..<old.size])
        #expect(purger.statistics().purges[.requestAll]?.bytes == 4 * page)
    }

    @Test func nonVolatilePagesAreNeverPurged() throws {
        let purger = try testPurger(none)
        let r = try VolatileRegion(byteCount: 8 * page)
        for p in 0..<8 { fill(r, page: p, tag: 9) }
        try r.markVolatile(bytes(0..<4))
        purger.register(r)
        #expect(purger.purgeAll() == 4 * page)
        for p in 4..<8 { #expect(holds(r, page: p, tag: 9)) }
        #expect(try r.markNonVolatile(bytes(0..<4)).purgedRanges == [bytes(0..<4)])
    }

    @Test func registrationIsWeak() throws {
        let purger = try testPurger(none)
        weak var gone: VolatileRegion?
        do {
            let r = try volatileRegion(pages: 2)
            gone = r
            purger.register(r)
            purger.register(r)  // twice: once
            #expect(purger.statistics().registeredObjects == 1)
            #expect(purger.statistics().volatileBytes == 2 * page)
        }
        #expect(gone == nil)  // the purger did not keep it alive
        #expect(purger.statistics().registeredObjects == 0)
        #expect(purger.purgeAll() == 0)

        let kept = try volatileRegion(pages: 2)
        purger.register(kept)
        #expect(purger.unregister(kept))
        #expect(!purger.unregister(kept))
        #expect(purger.purgeAll() == 0)
        #expect(try kept.status().volatileBytes == 2 * page)

        // A closed region has nothing to purge.
        purger.register(kept)
        kept.close()
        #expect(purger.purgeAll() == 0)
    }

    @Test func theThreadKeepsTheBudget() throws {
        let budget = 6 * page
        let purger = try testPurger(.init(budget: budget, pressureSources: .none, tick: .milliseconds(5)))
        #expect(purger.statistics().hasThread)
        var regions: [VolatileRegion] = []
        for i in 0..<4 {
            regions.append(try volatileRegion(pages: 4, tag: UInt8(i + 1)))
            RecencyClock.advance()
        }
        for r in regions { purger.register(r) }
        // 16 pages volatile, budget 6: the thread purges the three oldest.
        let kept = waitUntil { purger.statistics().volatileBytes <= budget }
        #expect(kept)
        #expect(try regions.map { try $0.status().purgedBytes } == [4 * page, 4 * page, 4 * page, 0])
        for p in 0..<4 { #expect(volatileHolds(regions[3], page: p, tag: 4)) }
        let s = purger.statistics()
        #expect(s.purges[.budget]?.bytes == 12 * page)
        #expect(s.budget == budget)

        // Marking more volatile later: the thread notices at its next tick.
        let more = try volatileRegion(pages: 4, tag: 7)
        purger.register(more)
        #expect(waitUntil { purger.statistics().volatileBytes <= budget })
        #expect(try regions[3].status().purgedBytes == 4 * page)  // the older one went
        #expect(try more.status().purgedBytes == 0)
        purger.stop()
        #expect(!purger.statistics().hasThread)
    }

    @Test func moderateHalvesTheBudgetAndCriticalTakesEverything() throws {
        let clock = TestClock()
        let log = PurgeLog()
        let m = FakeMemory("m", log: log, units: Dictionary(uniqueKeysWithValues: (0..<8).map {
            ($0, FakeMemory.Unit(priority: .normal, lastUsed: UInt64($0), bytes: 100))
        }))
        // A budget the memory is within (800 ≤ 1000): only pressure purges.
        let purger = try testPurger(.init(budget: 1000, pressureSources: .none, tick: .seconds(60)), clock: clock)
        purger.register(m)
        defer { withExtendedLifetime(m) {} }  // registration is weak
        purger.reportPressure(.moderate)           // down to 500: three units go
        #expect(log.all == ["m.0", "m.1", "m.2"])
        var s = purger.statistics()
        #expect(s.volatileBytes == 500)
        #expect(s.purges[.moderatePressure] == PurgeTally(purges: 1, bytes: 300, units: 3))
        #expect(s.lastPressureEvent?.level == .moderate)
        #expect(s.lastPressureEvent?.source == .program)
        #expect(s.lastPressureEvent?.outcome == .purged(bytes: 300))
        #expect(s.lastPressureEvent?.monotonicNanoseconds == clock.now)
        #expect(s.lastPressureEvent?.reactionNanoseconds == 0)  // the test clock did not move

        purger.reportPressure(.critical)           // everything, not debounced
        #expect(log.all.count == 8)
        s = purger.statistics()
        #expect(s.volatileBytes == 0)
        #expect(s.purges[.criticalPressure] == PurgeTally(purges: 1, bytes: 500, units: 5))
        #expect(s.pressureEvents == 2)
        #expect(s.purgedBytes == 800)
    }

    @Test func moderateWithoutBudgetTakesTheConfiguredFraction() throws {
        let log = PurgeLog()
        let m = FakeMemory("m", log: log, units: Dictionary(uniqueKeysWithValues: (0..<10).map {
            ($0, FakeMemory.Unit(priority: .normal, lastUsed: UInt64(10 - $0), bytes: 100))
        }))
        let purger = try testPurger(.init(pressureSources: .none, moderateFraction: 0.3))
        purger.register(m)
        defer { withExtendedLifetime(m) {} }  // registration is weak
        purger.reportPressure(.moderate)
        #expect(log.all == ["m.9", "m.8", "m.7"])  // 30 %, least recently used first
    }

    @Test func repeatedModerateEventsAreDebounced() throws {
        let clock = TestClock()
        let log = PurgeLog()
        let m = FakeMemory("m", log: log, units: Dictionary(uniqueKeysWithValues: (0..<64).map {
            ($0, FakeMemory.Unit(priority: .normal, lastUsed: UInt64($0), bytes: 100))
        }))
        let purger = try testPurger(.init(pressureSources: .none, moderateInterval: .seconds(5)), clock: clock)
        purger.register(m)
        defer { withExtendedLifetime(m) {} }  // registration is weak
        purger.reportPressure(.moderate)                    // 3200 of 6400
        #expect(log.all.count == 32)
        clock.advance(milliseconds: 4_999)
        purger.reportPressure(.moderate)                    // within 5 s: ignored
        #expect(log.all.count == 32)
        var s = purger.statistics()
        #expect(s.debouncedEvents == 1)
        #expect(s.lastPressureEvent?.outcome == .debounced)
        #expect(s.lastPressureEvent?.reactionNanoseconds == nil)
        clock.advance(milliseconds: 1)
        purger.reportPressure(.moderate)                    // 5 s after the first: acted on
        #expect(log.all.count == 48)
        clock.advance(milliseconds: 100)
        purger.reportPressure(.critical)                    // critical is never debounced
        #expect(log.all.count == 64)
        clock.advance(milliseconds: 100)
        purger.reportPressure(.moderate)                    // 100 ms after the critical reaction
        s = purger.statistics()
        #expect(s.debouncedEvents == 2)
        #expect(s.pressureEvents == 5)
        #expect(s.purges[.moderatePressure]?.purges == 2)
        #expect(s.recentPressureEvents.map(\.outcome)
                == [.purged(bytes: 3200), .debounced, .purged(bytes: 1600), .purged(bytes: 1600), .debounced])
        #expect(s.recentPressureEvents.map(\.level) == [.moderate, .moderate, .moderate, .critical, .moderate])
        #expect(s.recentPressureEvents.last == s.lastPressureEvent)
        // The history is bounded.
        for _ in 0..<40 { purger.reportPressure(.moderate) }
        #expect(purger.statistics().recentPressureEvents.count == PurgerStatistics.historyLength)
    }

    @Test func reactionTimeIsFromDeliveryToRelease() throws {
        // A unit whose purge takes 7 ms of the test clock.
        final class SlowMemory: PurgeableMemory, Sendable {
            let clock: TestClock
            let left = Atomic<Int>(4096)
            init(_ clock: TestClock) { self.clock = clock }
            func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
                let b = left.load(ordering: .relaxed)
                if b > 0 { body(PurgeUnit(id: 0, priority: .normal, lastUsed: 0, volatileBytes: b)) }
            }
            func purge(unit id: Int) -> Int {
                clock.advance(milliseconds: 7)
                return left.exchange(0, ordering: .relaxed)
            }
        }
        let clock = TestClock()
        let purger = try testPurger(none, clock: clock)
        let slow = SlowMemory(clock)
        purger.register(slow)
        defer { withExtendedLifetime(slow) {} }
        purger.reportPressure(.critical)
        let s = purger.statistics()
        #expect(s.lastPressureEvent?.reactionNanoseconds == 7_000_000)
        #expect(s.maxReactionNanoseconds == 7_000_000)
        #expect(s.lastPressureEvent?.outcome == .purged(bytes: 4096))
    }

    @Test func configurationIsValidated() {
        #expect(throws: VRangeError.self) { try Purger(.init(budget: -1)) }
        #expect(throws: VRangeError.self) { try Purger(.init(moderateFraction: 0)) }
        #expect(throws: VRangeError.self) { try Purger(.init(moderateFraction: 1.5)) }
        #expect(throws: VRangeError.self) { try Purger(.init(tick: .zero)) }
        #expect(throws: VRangeError.self) {
            try Purger(.init(moderateAvailableFraction: 0.1, criticalAvailableFraction: 0.2))
        }
        #expect(throws: VRangeError.self) { try PSITrigger(.some, stallMicroseconds: 0, windowMicroseconds: 2_000_000) }
        #expect(throws: VRangeError.self) { try PSITrigger(.some, stallMicroseconds: 3_000_000, windowMicroseconds: 2_000_000) }
        #expect(throws: VRangeError.self) { try PSITrigger(.full, stallMicroseconds: 1000, windowMicroseconds: 100_000) }
        #expect(throws: VRangeError.self) { try PSITrigger(.full, stallMicroseconds: 1000, windowMicroseconds: 20_000_000) }
        #expect((try? PSITrigger(.full, stallMicroseconds: 150_000, windowMicroseconds: 1_000_000))?.description
                == "full 150000 1000000")
        #expect(PSITrigger.defaultModerate.bytes == Array("some 200000 2000000".utf8) + [0])
    }

    @Test func droppedOnItsOwnThreadStopsWithoutDeadlock() throws {
        // Memory whose purge drops the last reference to the purger: the
        // Purger's deinit then runs on the purger's own thread, which must
        // detach itself rather than join itself, and the pass must finish.
        // (This checks completion and release; that the thread's resources
        // are freed by the detach is not observable here, glibc's self-join
        // would return EDEADLK rather than hang.)
        final class Dropper: PurgeableMemory, Sendable {
            let owner = Mutex<Purger?>(nil)
            let left = Atomic<Int>(4096)
            let done = Atomic<Bool>(false)
            func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
                let b = left.load(ordering: .relaxed)
                if b > 0 { body(PurgeUnit(id: 0, priority: .normal, lastUsed: 0, volatileBytes: b)) }
            }
            func purge(unit id: Int) -> Int {
                let last = owner.withLock { p -> Purger? in defer { p = nil }; return p }
                _ = consume last  // deinit here, on the purger's thread
                done.store(true, ordering: .releasing)
                return left.exchange(0, ordering: .relaxed)
            }
        }
        let dropper = Dropper()
        weak var weakPurger: Purger?
        do {
            let p = try testPurger(.init(budget: 0, pressureSources: .none, tick: .milliseconds(5)))
            weakPurger = p
            dropper.owner.withLock { $0 = p }
            p.register(dropper)
        }
        #expect(waitUntil { dropper.done.load(ordering: .acquiring) })
        #expect(waitUntil { weakPurger == nil })
    }

    @Test func stopIsIdempotentAndDeterministic() throws {
        let purger = try testPurger(.init(budget: 1 << 30, pressureSources: .none))
        #expect(purger.statistics().hasThread)
        #expect(threadNamed("vrange-purger"))
        purger.stop()
        #expect(!purger.statistics().hasThread)
        purger.stop()
        // Purging on request still works after stop; registering (which
        // would wake the thread) writes to no stale descriptor.
        let r = try volatileRegion(pages: 2)
        purger.register(r)
        purger.requestBudgetCheck()
        #expect(purger.purgeAll() == 2 * page)
    }
}

/// Whether a thread of this process is named `name` (from /proc/self/task).
func threadNamed(_ name: String) -> Bool {
    guard let dir = opendir("/proc/self/task") else { return false }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if tid.hasPrefix(".") { continue }
        if readText("/proc/self/task/\(tid)/comm")?.split(separator: "\n").first.map(String.init) == name { return true }
    }
    return false
}
