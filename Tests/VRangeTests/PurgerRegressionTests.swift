// Regressions of issue 18 in the purger core: durations at their extremes
// (4c, 4d) and unregister racing a pass that holds the object (1a).
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Purgeable memory whose `purge(unit:)` runs a test's closure: to hold a
/// pass inside it, or to call back into the purger from it. Counts purges
/// and whether a purge is in progress.
final class ScriptedMemory: PurgeableMemory, Sendable {
    let units: Int
    let purges = Atomic<Int>(0)
    let inside = Atomic<Int>(0)
    private let onPurge: Locked<(@Sendable (ScriptedMemory, Int) -> Void)?>

    init(units: Int = 1, onPurge: (@Sendable (ScriptedMemory, Int) -> Void)? = nil) {
        self.units = units
        self.onPurge = Locked(onPurge)
    }

    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        for id in 0..<units { body(PurgeUnit(id: id, priority: .normal, lastUsed: 0, volatileBytes: 4096)) }
    }

    func purge(unit id: Int) -> Int {
        inside.add(1, ordering: .acquiringAndReleasing)
        defer { inside.subtract(1, ordering: .acquiringAndReleasing) }
        purges.add(1, ordering: .relaxed)
        if let f = onPurge.withLock({ $0 }) { f(self, id) }
        return 4096
    }

    func setOnPurge(_ f: (@Sendable (ScriptedMemory, Int) -> Void)?) { onPurge.withLock { $0 = f } }
}

/// A purger with no thread and no pressure source: passes run on the
/// caller's thread only.
func quietPurger() throws -> Purger { try Purger(.init(pressureSources: .none)) }

@Suite("issue 18: purger core regressions") struct PurgerRegressionTests {
    /// 4c: a tick whose milliseconds overflow in the last step is clamped,
    /// not a trap in validation.
    @Test("4c: a purger tick near Int64.max seconds neither traps nor is refused")
    func tickNearMaximum() async {
        await #expect(processExitsWith: .success) {
            alarm(20)
            let tick = Duration(secondsComponent: Int64.max / 1000, attosecondsComponent: 999_000_000_000_000_000)
            let p = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: tick,
                                      memAvailableInterval: tick, cgroupHeadroomInterval: tick))
            p.stop()
            _exit(0)
        }
    }

    /// 4d: tick .seconds(Int64.max): the purger's thread sleeps, it does not
    /// spin advancing the recency clock (measured in a process of its own).
    @Test("4d: tick .seconds(Int64.max) does not make the purger's thread spin")
    func maximalTickDoesNotSpin() async {
        await #expect(processExitsWith: .success) {
            alarm(20)
            let p = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(Int64.max)))
            let before = RecencyClock.now
            var ts = timespec(tv_sec: 0, tv_nsec: 300_000_000)
            nanosleep(&ts, nil)
            let advanced = RecencyClock.now &- before
            if advanced > 100 { print("the recency clock advanced \(advanced) times in 300 ms"); _exit(1) }
            p.stop()
            _exit(0)
        }
    }

    /// 1a: unregister does not return while a pass is inside the object.
    @Test("1a: unregister waits for a purge pass that holds the object")
    func unregisterWaitsForThePass() throws {
        let purger = try quietPurger()
        let gate = Gate()
        let left = Atomic<Bool>(false)
        let memory = ScriptedMemory { _, _ in
            left.store(false, ordering: .releasing)
            gate.hold()
            left.store(true, ordering: .releasing)
        }
        purger.register(memory)
        let pass = TestThread { _ = purger.purgeAll() }
        #expect(gate.waitReached())
        let returned = Atomic<Bool>(false)
        let passHadLeft = Atomic<Bool>(false)
        let unregistering = TestThread {
            let was = purger.unregister(memory)
            // Read before anything else: had the pass left the object?
            passHadLeft.store(memory.inside.load(ordering: .acquiring) == 0, ordering: .releasing)
            precondition(was)
            returned.store(true, ordering: .releasing)
        }
        // Bounded: a correct unregister does not return while the pass is held.
        let returnedEarly = waitUntil(seconds: 1) { returned.load(ordering: .acquiring) }
        gate.open()
        unregistering.join()
        pass.join()
        let hadLeft = passHadLeft.load(ordering: .acquiring)
        #expect(hadLeft, "unregister returned while the pass was inside the object (returned within the held window: \(returnedEarly))")
        // After unregister, no pass calls into the object again.
        let before = memory.purges.load(ordering: .relaxed)
        _ = purger.purgeAll()
        let after = memory.purges.load(ordering: .relaxed)
        #expect(after == before)
    }

    /// 1a: unregister from inside the object's own purge, on the pass's
    /// thread, neither deadlocks nor lets the pass call the object again.
    @Test("1a: unregister from inside purge(unit:) on the pass's thread returns, and the pass leaves the object alone")
    func unregisterFromInsideThePurge() throws {
        let purger = try quietPurger()
        let memory = ScriptedMemory(units: 3) { m, _ in purger.unregister(m) }
        purger.register(memory)
        let done = Atomic<Bool>(false)
        let t = TestThread {
            _ = purger.purgeAll()
            done.store(true, ordering: .releasing)
        }
        let finished = waitUntil(seconds: 20) { done.load(ordering: .acquiring) }
        #expect(finished, "purgeAll did not return: unregister from inside the purge deadlocked")
        guard finished else { return }  // leave the stuck thread rather than hang the suite
        t.join()
        let purges = memory.purges.load(ordering: .relaxed)
        #expect(purges == 1, "the pass called into the object after it unregistered")
        memory.setOnPurge(nil)
    }

    /// 1a: the same from the purger's own background thread (a budget pass).
    @Test("1a: unregister from inside purge(unit:) on the purger's background thread")
    func unregisterFromThePurgerThread() throws {
        let purger = try Purger(.init(budget: 0, pressureSources: .none))
        defer { purger.stop() }
        let memory = ScriptedMemory(units: 3) { m, _ in purger.unregister(m) }
        purger.register(memory)
        let purged = waitUntil(seconds: 20) { memory.purges.load(ordering: .relaxed) >= 1 }
        #expect(purged)
        _ = purger.purgeAll()  // after the thread's pass (passes are serialised)
        let purges = memory.purges.load(ordering: .relaxed)
        #expect(purges == 1, "the pass called into the object after it unregistered")
        memory.setOnPurge(nil)
    }
}
