// Regressions of the third hostile review (probe/r3-fork): stop() called
// while a pass on a program thread holds the pass lock (A), fetches that
// joined a superseded rebuild (B), a fork child's copy of the purger's loop
// (C), a rebuild that fetches its own key (D). Hangs are bounded: each test
// that could deadlock runs in an exit test with a watchdog and bounded
// waits; its exit code says what happened (0: held).
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Purgeable memory whose first purge runs `onPurge` before purging.
final class R3ForkMemory: PurgeableMemory, @unchecked Sendable {
    let bytes = Atomic<Int>(4096)
    let fired = Atomic<Bool>(false)
    let onPurge: @Sendable () -> Void
    init(_ onPurge: @escaping @Sendable () -> Void) { self.onPurge = onPurge }
    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        let b = bytes.load(ordering: .relaxed)
        if b > 0 { body(PurgeUnit(id: 0, priority: .normal, lastUsed: 0, volatileBytes: b)) }
    }
    func purge(unit id: Int) -> Int {
        if !fired.exchange(true, ordering: .relaxed) { onPurge() }
        return bytes.exchange(0, ordering: .relaxed)
    }
}

/// A reference set after it is made (a callback that needs its purger).
final class R3ForkBox<T: AnyObject>: @unchecked Sendable {
    private let lock = Locked<T?>(nil)
    var value: T? {
        get { lock.withLock { $0 } }
        set { lock.withLock { $0 = newValue } }
    }
}

/// Runs `body` on a new, detached thread; true if it returned within
/// `seconds`.
func r3ForkFinishes(seconds: Double, _ body: @escaping @Sendable () -> Void) -> Bool {
    let done = Atomic<Bool>(false)
    let t = try! Kernel.Thread(name: "r3-fork") {
        body()
        done.store(true, ordering: .releasing)
    }
    t.detach()
    return waitUntil(seconds: seconds) { done.load(ordering: .acquiring) }
}

@Suite("R3 fork regressions: stop() while a program thread's pass holds the pass lock (A)", .serialized)
struct R3StopRegressionTests {

    /// A: a purge callback of purgeAll (program thread) stops its purger,
    /// which has a thread. Exit 2: purgeAll never returned; 4: the pass's
    /// bytes were not counted; 5: the thread still counted.
    @Test func stopInsidePurgeAllCallback() async {
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            let box = R3ForkBox<Purger>()
            let p = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(3600)))
            box.value = p
            let m = R3ForkMemory { box.value?.stop() }
            p.register(m)  // held weakly: `m` lives to the _exit
            guard p.statistics().hasThread else { _exit(3) }
            let released = Atomic<Int>(-1)
            let ok = r3ForkFinishes(seconds: 5) { released.store(box.value?.purgeAll() ?? -2, ordering: .releasing) }
            withExtendedLifetime(m) {}
            guard ok else { _exit(2) }
            guard released.load(ordering: .acquiring) == 4096 else { _exit(4) }
            _exit(p.statistics().hasThread ? 5 : 0)
        }
    }

    /// A: the same through reportPressure(.critical) on a program thread.
    @Test func stopInsideReportPressureCallback() async {
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            let box = R3ForkBox<Purger>()
            let p = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(3600)))
            box.value = p
            let m = R3ForkMemory { box.value?.stop() }
            p.register(m)  // held weakly: `m` lives to the _exit
            let ok = r3ForkFinishes(seconds: 5) { box.value?.reportPressure(.critical) }
            withExtendedLifetime(m) {}
            _exit(ok ? 0 : 2)
        }
    }

    /// A: the same through purge(bytes:) on a program thread.
    @Test func stopInsidePurgeBytesCallback() async {
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            let box = R3ForkBox<Purger>()
            let p = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(3600)))
            box.value = p
            let m = R3ForkMemory { box.value?.stop() }
            p.register(m)  // held weakly: `m` lives to the _exit
            let ok = r3ForkFinishes(seconds: 5) { _ = try? box.value?.purge(bytes: 1) }
            withExtendedLifetime(m) {}
            _exit(ok ? 0 : 2)
        }
    }

    /// A: stop() from another thread while a program thread's pass
    /// (purgeAll) waits in a purge callback for that stop() to return.
    /// Exit 2: stop() never returned; 6: the pass never returned after it.
    @Test func stopFromOtherThreadWhileCallbackWaitsForIt() async {
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            let p = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(3600)))
            let inCallback = Atomic<Bool>(false)
            let stopped = Atomic<Bool>(false)
            let passDone = Atomic<Bool>(false)
            let m = R3ForkMemory {
                inCallback.store(true, ordering: .releasing)
                _ = waitUntil(seconds: 8) { stopped.load(ordering: .acquiring) }
            }
            p.register(m)
            let t = try! Kernel.Thread(name: "pass") {
                _ = p.purgeAll()
                passDone.store(true, ordering: .releasing)
            }
            t.detach()
            guard waitUntil(seconds: 5, { inCallback.load(ordering: .acquiring) }) else { _exit(7) }
            let ok = r3ForkFinishes(seconds: 4) {
                p.stop()
                stopped.store(true, ordering: .releasing)
            }
            guard ok else { _exit(2) }
            withExtendedLifetime(m) {}
            _exit(waitUntil(seconds: 5, { passDone.load(ordering: .acquiring) }) ? 0 : 6)
        }
    }
}

@Suite("R3 fork regressions: a fork child's copy of the purger's loop (C)", .serialized)
struct R3ForkChildLoopRegressionTests {

    /// C: fork from a purge callback on the purger's own thread; the child
    /// returns from the callback, so its one thread, a copy of the
    /// purger's, goes back to the loop. It must end at once (the process
    /// exits 0), not poll the parent's eventfd; the parent's stop() must
    /// end its own thread. Exit 2: stop() hung; 3: the child did not exit
    /// by itself within 5 s (it was killed); 7: the callback never ran.
    @Test func forkInCallbackChildReturnsThenParentStops() async {
        guard forkTestsRun("forkInCallbackChildReturnsThenParentStops") else { return }
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            let forkedPid = Atomic<Int32>(0)
            let m = R3ForkMemory {
                let pid = fork()
                if pid == 0 {
                    childWatchdog(8)  // the child's copy of the loop ends here
                    return
                }
                forkedPid.store(pid, ordering: .releasing)
            }
            let p = try! Purger(.init(budget: 0, pressureSources: .none, tick: .seconds(3600)))
            p.register(m)
            guard waitUntil(seconds: 5, { forkedPid.load(ordering: .acquiring) != 0 }) else { _exit(7) }
            let pid = forkedPid.load(ordering: .acquiring)
            var status: Int32 = 0
            let exited = waitUntil(seconds: 5) {
                var r: Int32
                repeat { r = waitpid(pid, &status, WNOHANG) } while r < 0 && errno == EINTR
                return r == pid
            }
            if !exited {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            }
            let stopped = r3ForkFinishes(seconds: 4) { p.stop() }
            withExtendedLifetime(m) {}
            guard stopped else { _exit(2) }
            _exit(exited && exitCode(status) == 0 ? 0 : 3)
        }
    }
}

@Suite("R3 fork regressions: superseded rebuilds and re-entrant fetches (B, D)", .serialized)
struct R3RebuildRegressionTests {

    /// B: a rebuild of k runs; removeValue(k) returns; a fetch of k begun
    /// after it must run its own rebuild, not wait for the superseded one
    /// (computed from data older than the remove). Statistics: two
    /// rebuilds, nothing coalesced.
    @Test func fetchAfterRemoveDoesNotJoinSupersededRebuild() throws {
        let cache = PurgeableCache<Int>(costLimit: 1 << 30)
        let started = Atomic<Bool>(false), go = Atomic<Bool>(false)
        let leaderGot = Locked<[UInt8]?>(nil)
        let t = try Kernel.Thread(name: "leader") {
            let v = try? cache.fetchBytes(forKey: 1) { _ in
                started.store(true, ordering: .releasing)
                _ = waitUntil(seconds: 5) { go.load(ordering: .acquiring) }
                return [1, 1, 1]
            }
            leaderGot.withLock { $0 = v }
        }
        #expect(waitUntil(seconds: 5) { started.load(ordering: .acquiring) })
        cache.removeValue(forKey: 1)
        let got = Locked<[UInt8]?>(nil)
        let laterDone = Atomic<Bool>(false)
        let u = try Kernel.Thread(name: "later") {
            let v = try? cache.fetchBytes(forKey: 1) { _ in [2, 2] }
            got.withLock { $0 = v }
            laterDone.store(true, ordering: .releasing)
        }
        // Its own flight: it returns while the superseded rebuild still runs.
        let laterFirst = waitUntil(seconds: 5) { laterDone.load(ordering: .acquiring) }
        go.store(true, ordering: .releasing)
        t.join(); u.join()
        let later = got.withLock { $0 }
        #expect(laterFirst, "a fetch begun after removeValue waited for the superseded rebuild")
        #expect(later == [2, 2], "a fetch begun after removeValue returned \(String(describing: later))")
        #expect(leaderGot.withLock { $0 } == [1, 1, 1], "the superseded rebuild's own caller gets its result")
        #expect(cache.count == 1)
        #expect((try? cache.fetchBytes(forKey: 1) { _ in [3] }) == [2, 2])
        let s = cache.statistics
        #expect(s.rebuilds == 2 && s.coalescedRequests == 0 && s.entries == 1 && s.totalCost == 2,
                "rebuilds \(s.rebuilds) coalesced \(s.coalescedRequests) entries \(s.entries) totalCost \(s.totalCost)")
    }

    /// B: setBytes(k, new) supersedes the rebuild; new is purged; a fetch
    /// then runs its own rebuild, not the superseded one's older result.
    @Test func fetchAfterSetAndPurgeDoesNotJoinSupersededRebuild() throws {
        let cache = PurgeableCache<Int>(costLimit: 1 << 30)
        let purger = try Purger(.init(pressureSources: .none))
        purger.register(cache.allocator)
        let started = Atomic<Bool>(false), go = Atomic<Bool>(false)
        let t = try Kernel.Thread(name: "leader") {
            _ = try? cache.fetchBytes(forKey: 1) { _ in
                started.store(true, ordering: .releasing)
                _ = waitUntil(seconds: 5) { go.load(ordering: .acquiring) }
                return [UInt8](repeating: 1, count: 3 * page)
            }
        }
        #expect(waitUntil(seconds: 5) { started.load(ordering: .acquiring) })
        try cache.setBytes([UInt8](repeating: 2, count: 3 * page), forKey: 1)
        #expect(purger.purgeAll() > 0)
        let got = Locked<[UInt8]?>(nil)
        let laterDone = Atomic<Bool>(false)
        let u = try Kernel.Thread(name: "later") {
            let v = try? cache.fetchBytes(forKey: 1) { _ in [UInt8](repeating: 2, count: 3 * page) }
            got.withLock { $0 = v }
            laterDone.store(true, ordering: .releasing)
        }
        let laterFirst = waitUntil(seconds: 5) { laterDone.load(ordering: .acquiring) }
        go.store(true, ordering: .releasing)
        t.join(); u.join()
        let later = got.withLock { $0 }
        #expect(laterFirst, "a fetch after setBytes and a purge waited for the superseded rebuild")
        #expect(later?.first == 2, "after setBytes(2…) and a purge, a fetch returned \(later?.first.map(String.init) ?? "nil")")
        #expect(cache.statistics.coalescedRequests == 0)
    }

    /// B: requests that joined the flight before the write still get its
    /// result (one rebuild for them, counted as coalesced).
    @Test func waitersBeforeTheWriteStillGetTheSupersededResult() throws {
        let cache = PurgeableCache<Int>(costLimit: 1 << 30)
        let started = Atomic<Bool>(false), go = Atomic<Bool>(false)
        let t = try Kernel.Thread(name: "leader") {
            _ = try? cache.fetchBytes(forKey: 1) { _ in
                started.store(true, ordering: .releasing)
                _ = waitUntil(seconds: 5) { go.load(ordering: .acquiring) }
                return [1]
            }
        }
        #expect(waitUntil(seconds: 5) { started.load(ordering: .acquiring) })
        let got = Locked<[UInt8]?>(nil)
        let u = try Kernel.Thread(name: "waiter") {
            let v = try? cache.fetchBytes(forKey: 1) { _ in [9] }
            got.withLock { $0 = v }
        }
        #expect(waitUntil(seconds: 5) { cache.statistics.coalescedRequests == 1 })
        cache.removeValue(forKey: 1)
        go.store(true, ordering: .releasing)
        t.join(); u.join()
        #expect(got.withLock { $0 } == [1])
        #expect(cache.count == 0 && cache.statistics.rebuilds == 1)
    }

    /// D: a rebuild closure that fetches its own key throws
    /// PurgeableCacheError.rebuildFetchedItsOwnKey instead of waiting on
    /// its own flight. Bounded: 5 s.
    @Test func rebuildThatFetchesItsOwnKeyThrows() throws {
        let cache = PurgeableCache<Int>(costLimit: 1 << 30)
        let inner = Locked<(any Error)?>(nil)
        let outer = Locked<[UInt8]?>(nil)
        let ok = r3ForkFinishes(seconds: 5) {
            let v = try? cache.fetchBytes(forKey: 7) { k in
                do { return try cache.fetchBytes(forKey: k) { _ in [9] } } catch {
                    inner.withLock { $0 = error }
                    return [8]
                }
            }
            outer.withLock { $0 = v }
        }
        #expect(ok, "fetchBytes inside the key's own rebuild never returned (waits on its own flight)")
        guard ok else { return }
        #expect(inner.withLock { $0 } as? PurgeableCacheError == .rebuildFetchedItsOwnKey)
        #expect(outer.withLock { $0 } == [8])
        #expect((try? cache.fetchBytes(forKey: 7)) == [8])
    }
}

/// E: purger A's pass (on a program thread, or on A's own thread) reaches
/// into another purger from a purge callback while another thread forks:
/// fork's prepare must not hold that purger's locks while it waits for A's
/// pass lock, nor make its list wait. `setup` runs once A exists (a purger
/// it makes is newer than A) and returns the callback. Exits (the exit
/// test's process) with 0: the fork and the callback returned; 2: the fork
/// hung; 6: the callback did not return; 7: the callback never ran.
func r3ForkDuringCallback(ownThread: Bool = false, _ setup: () -> @Sendable () -> Void) -> Never {
    let inCallback = Atomic<Bool>(false)
    let forking = Atomic<Bool>(false)
    let callbackDone = Atomic<Bool>(false)
    let callbackBox = Locked<(@Sendable () -> Void)?>(nil)
    let m = R3ForkMemory {
        inCallback.store(true, ordering: .releasing)
        _ = waitUntil(seconds: 5) { forking.load(ordering: .acquiring) }
        usleep(300_000)  // the forker is in prepare, blocked on A's pass lock
        callbackBox.withLock { $0 }?()
        callbackDone.store(true, ordering: .releasing)
    }
    let a = try! Purger(ownThread ? .init(budget: 0, pressureSources: .none, tick: .seconds(3600))
                                  : .init(pressureSources: .none))
    let callback = setup()
    callbackBox.withLock { $0 = callback }
    a.register(m)
    if !ownThread {
        let t = try! Kernel.Thread(name: "a-pass") { _ = a.purgeAll() }
        t.detach()
    }
    guard waitUntil(seconds: 5, { inCallback.load(ordering: .acquiring) }) else { _exit(7) }
    let forked = r3ForkFinishes(seconds: 8) {
        forking.store(true, ordering: .releasing)
        let pid = fork()
        if pid == 0 { _exit(0) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
    guard forked else { _exit(2) }
    guard waitUntil(seconds: 5, { callbackDone.load(ordering: .acquiring) }) else { _exit(6) }
    withExtendedLifetime((a, m)) {}
    _exit(0)
}

@Suite("R3 fork regressions: fork while a purge callback reaches into another purger (E)", .serialized)
struct R3CrossPurgerForkRegressionTests {

    /// E: the callback registers an object with a newer purger B (B's
    /// registry and lifecycle locks).
    @Test func registerWithNewerPurgerInsideCallbackDuringFork() async {
        guard forkTestsRun("registerWithNewerPurgerInsideCallbackDuringFork") else { return }
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            r3ForkDuringCallback {
                let b = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(3600)))
                let other = R3ForkMemory {}
                return { b.register(other) }
            }
        }
    }

    /// E: the callback runs a pass of a newer purger B (B's pass lock).
    @Test func passOfNewerPurgerInsideCallbackDuringFork() async {
        guard forkTestsRun("passOfNewerPurgerInsideCallbackDuringFork") else { return }
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            r3ForkDuringCallback {
                let b = try! Purger(.init(pressureSources: .none))
                let other = R3ForkMemory {}
                b.register(other)
                return {
                    _ = b.purgeAll()
                    withExtendedLifetime(other) {}
                }
            }
        }
    }

    /// E: the callback drops a newer purger B with a thread (its stop()
    /// wakes a thread that must retake B's pass lock).
    @Test func dropNewerPurgerInsideCallbackDuringFork() async {
        guard forkTestsRun("dropNewerPurgerInsideCallbackDuringFork") else { return }
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            r3ForkDuringCallback {
                let box = R3ForkBox<Purger>()
                box.value = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(3600)))
                return { box.value = nil }
            }
        }
    }

    /// E: the callback, on the purger's own thread, makes a purger (it
    /// links into the purger list, which the fork holds).
    @Test func createPurgerInsideOwnThreadCallbackDuringFork() async {
        guard forkTestsRun("createPurgerInsideOwnThreadCallbackDuringFork") else { return }
        await #expect(processExitsWith: .success) {
            childWatchdog(30)
            r3ForkDuringCallback(ownThread: true) {
                let made = R3ForkBox<Purger>()
                return { made.value = try? Purger(.init(pressureSources: .none)) }
            }
        }
    }

    /// E: Purger.init with a thread inside a callback of A's pass (program
    /// thread), 60 times, while another thread forks in a loop. Exit 2:
    /// a pass never returned.
    @Test func purgerWithThreadMadeInsideCallbackRacingForkLoop() async {
        guard forkTestsRun("purgerWithThreadMadeInsideCallbackRacingForkLoop") else { return }
        await #expect(processExitsWith: .success) {
            childWatchdog(60)
            let a = try! Purger(.init(pressureSources: .none))
            let made = Locked<[Purger]>([])
            let stop = Atomic<Bool>(false)
            let forks = Atomic<Int>(0)
            let forker = try! Kernel.Thread(name: "forker") {
                while !stop.load(ordering: .acquiring) {
                    let pid = fork()
                    if pid == 0 { _exit(0) }
                    var status: Int32 = 0
                    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                    forks.add(1, ordering: .relaxed)
                }
            }
            forker.detach()
            for _ in 0..<60 {
                let mem = R3ForkMemory {
                    if let p = try? Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .seconds(3600))) {
                        made.withLock { $0.append(p) }
                    }
                }
                a.register(mem)
                guard r3ForkFinishes(seconds: 5, { _ = a.purgeAll() }) else { _exit(2) }
                a.unregister(mem)
            }
            stop.store(true, ordering: .releasing)
            _exit(forks.load(ordering: .relaxed) > 0 ? 0 : 9)
        }
    }
}
