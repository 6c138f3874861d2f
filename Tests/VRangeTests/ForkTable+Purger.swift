// Fork table of the purger core (issue 18, class 2): fork() while another
// thread is held inside a purger operation (a pass inside purge(unit:), a
// statistics walk inside forEachPurgeUnit, the purger's own thread, an
// unregister waiting for a pass), or from inside a purge callback. The child
// then uses the purger (purges, statistics, pressure, register, unregister
// of the object that was in use, which must not wait for threads that do
// not exist there), drops it (its thread is the parent's: nothing to join)
// and must exit 0 within a bound. Each row runs in an exit test.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

enum PurgerForkWindow: String, CaseIterable, Codable, Sendable {
    /// Another thread's purgeAll is inside purge(unit:) (holds the pass lock).
    case purgeAllInsidePurge
    /// Another thread's statistics() is inside forEachPurgeUnit (holds a use).
    case statisticsInsideForEach
    /// The purger's thread's budget pass is inside purge(unit:).
    case purgerThreadInsidePurge
    /// A pass is inside purge(unit:) and another thread waits in unregister.
    case unregisterWaitingForPass
    /// reportPressure(.critical)'s pass is inside purge(unit:).
    case criticalPressureInsidePurge
    /// The forking thread itself is inside purge(unit:).
    case forkFromInsidePurge

    /// Whether the held thread holds the pass lock (the fork's prepare
    /// handler then waits for it: the test lets it go on then).
    var holdsPassLock: Bool { self != .statisticsInsideForEach && self != .forkFromInsidePurge }
}

/// The child's work with `purger` (which had `held` registered and in use
/// by a thread that does not exist here). Returns an exit code.
func usePurgerInForkChild(_ purger: Purger, held: HoldingMemory) -> Int32 {
    var unblock = sigset_t()
    sigemptyset(&unblock)
    sigaddset(&unblock, SIGALRM)
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    alarm(10)  // a hang dies of SIGALRM
    held.onPurge.withLock { $0 = nil }
    held.onWalk.withLock { $0 = nil }
    let fresh = HoldingMemory()
    purger.register(fresh)
    guard purger.purgeAll() > 0 else { return 30 }
    guard (try? purger.purge(bytes: 1)) != nil else { return 31 }
    _ = purger.statistics()
    purger.reportPressure(.critical)
    let t0 = monotonicSeconds()
    purger.unregister(held)  // the uses of the parent's threads are not waited for
    if monotonicSeconds() - t0 > 2 { return 32 }
    guard purger.unregister(fresh) else { return 33 }
    if purger.statistics().hasThread { return 34 }  // the thread is the parent's
    return 0
}

@Suite("fork table: purger") struct PurgerForkTable {
    #if DEBUG
    @Test("fork while another thread is held inside a purger operation: the child uses the purger and exits", arguments: PurgerForkWindow.allCases)
    func forkWhileHeld(_ window: PurgerForkWindow) async {
        guard forkTestsRun("PurgerForkTable") else { return }
        await #expect(processExitsWith: .success) { [window] in
            alarm(60)
            let purger = try! Purger(.init(budget: window == .purgerThreadInsidePurge ? 0 : 1 << 40, pressureSources: .none))
            let held = HoldingMemory()
            let gate = Gate()
            let once = Atomic<Bool>(false)
            let forkedPid = Atomic<Int32>(-1)
            // Only the designated thread is held (the purger's own thread
            // walks the units too, for its budget checks), except in the
            // row about the purger's thread.
            let worker = Atomic<UInt>(0)
            let hold: @Sendable (HoldingMemory) -> Void = { _ in
                guard window == .purgerThreadInsidePurge || worker.load(ordering: .acquiring) == UInt(pthread_self()) else { return }
                guard !once.exchange(true, ordering: .relaxed) else { return }
                if window == .forkFromInsidePurge {
                    forkedPid.store(fork(), ordering: .relaxed)
                } else {
                    gate.hold(seconds: 20)
                }
            }
            if window == .statisticsInsideForEach { held.onWalk.withLock { $0 = hold } } else { held.onPurge.withLock { $0 = hold } }
            if window.holdsPassLock { ForkRegistry.purger.setTestPrepareHook { gate.open() } }
            purger.register(held)
            var threads: [TestThread] = []
            let designated: @Sendable () -> Void = { worker.store(UInt(pthread_self()), ordering: .releasing) }
            switch window {
            case .purgeAllInsidePurge, .unregisterWaitingForPass: threads.append(TestThread { designated(); _ = purger.purgeAll() })
            case .statisticsInsideForEach: threads.append(TestThread { designated(); _ = purger.statistics() })
            case .purgerThreadInsidePurge: purger.requestBudgetCheck()
            case .criticalPressureInsidePurge: threads.append(TestThread { designated(); purger.reportPressure(.critical) })
            case .forkFromInsidePurge:
                designated()
                _ = purger.purgeAll()  // forks from inside; both processes go on from here
                let pid = forkedPid.load(ordering: .relaxed)
                if pid == 0 { _exit(usePurgerInForkChild(purger, held: held)) }
                guard let status = waitChild(pid, seconds: 20) else { _exit(3) }
                if let code = exitCode(status), code != 0 { _exit(100 + code) }
                if let signal = terminatingSignal(status) { _exit(150 + signal) }
                _exit(0)
            }
            guard gate.waitReached(seconds: 20) else { _exit(2) }
            if window == .unregisterWaitingForPass {
                threads.append(TestThread { _ = purger.unregister(held) })
                _ = waitUntil(seconds: 0.2) { false }  // let it start waiting
            }
            let pid = fork()
            if pid == 0 { _exit(usePurgerInForkChild(purger, held: held)) }
            gate.open()
            for t in threads { t.join() }
            ForkRegistry.purger.setTestPrepareHook(nil)
            guard let status = waitChild(pid, seconds: 20) else { _exit(3) }
            // Exit 100 + the child's exit code, or 150 + its signal (14: SIGALRM, a hang).
            if let code = exitCode(status), code != 0 { _exit(100 + code) }
            if let signal = terminatingSignal(status) { _exit(150 + signal) }
            purger.stop()
            _exit(0)
        }
    }
    #endif
}
