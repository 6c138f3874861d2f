// Issue 18, class 2 (fork safety), found by the hostile probes of the cache
// and purger: fork() while another thread makes the process's FIRST object
// of a layer. The cache's and the purger's fork registries were Swift lazy
// statics whose initialisers registered the layer's at-fork handlers under
// atfork.c's registry lock, which fork()'s prepare holds: the making thread
// waited inside the once-initialiser while fork() copied the process, and
// in the child the once never completed (its first cache or purger hung).
// The regions' handlers were registered with the first region, which the
// allocator makes under an arena's lock that prepare then waited for: the
// parent hung. Each row runs in an exit test (a fresh process, whose first
// object is the row's own): fork()'s prepare is held in a layer the process
// already uses (a pass inside purge(unit:), or a lookup inside a shard's
// mutex) until the making thread has finished or sleeps; both processes
// then make and use the layer's objects and must end within a bound.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Whether thread `tid` of this process is asleep (blocked), looking twice
/// 20 ms apart; false once it has ended.
func threadAsleep(_ tid: pid_t) -> Bool {
    func state() -> UInt8? {
        let fd = open("/proc/self/task/\(tid)/stat", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        // "tid (comm) S ...": the state follows the last ')'.
        guard let close = buffer[0..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n else { return nil }
        return buffer[close + 2]
    }
    guard state() == UInt8(ascii: "S") else { return false }
    usleep(20_000)
    return state() == UInt8(ascii: "S")
}

/// In a fork child: unblocks SIGALRM and arms it (a hang dies of it).
func armChildAlarm(_ seconds: UInt32) {
    var unblock = sigset_t()
    sigemptyset(&unblock)
    sigaddset(&unblock, SIGALRM)
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    alarm(seconds)
}

/// The making thread of a first creation racing fork(): it starts once
/// fork()'s prepare runs, and records its thread id and its end.
final class FirstMaker: Sendable {
    let forkInPrepare = Atomic<Bool>(false)
    let tid = Atomic<Int32>(0)
    let done = Atomic<Bool>(false)

    /// Runs `make` on a new thread once fork()'s prepare has begun.
    func start(_ make: @escaping @Sendable () -> Void) -> TestThread {
        TestThread { [self] in
            tid.store(currentTID(), ordering: .releasing)
            _ = waitUntil(seconds: 20) { forkInPrepare.load(ordering: .acquiring) }
            make()
            done.store(true, ordering: .releasing)
        }
    }

    /// Holds fork()'s prepare (called inside it, by the thread that holds
    /// the lock prepare waits for) until the maker has finished, or sleeps:
    /// blocked by the fork in progress.
    func holdPrepareUntilMakerWaits() {
        _ = waitUntil(seconds: 20) { forkInPrepare.load(ordering: .acquiring) }
        _ = waitUntil(seconds: 5) {
            let t = tid.load(ordering: .acquiring)
            return done.load(ordering: .acquiring) || (t != 0 && threadAsleep(t))
        }
    }
}

/// One row: the layer whose first object is made while another thread forks.
enum FirstCreation: String, CaseIterable, Codable, Sendable {
    /// The process's first `PurgeableCache` (fork held in the purger layer).
    case purgeableCache
    /// The process's first `Purger` (fork held in the cache layer).
    case purger
    /// The process's first allocation: its first arena, thread cache and
    /// region (fork held in the purger layer, a cache already made).
    case allocation
}

/// The child's work for `row` (a fresh cache or purger, or the cache the
/// parent made); an exit code.
func useFirstCreationInForkChild(_ row: FirstCreation, allocator: VolatileAllocator, cache: PurgeableCache<Int>?) -> Int32 {
    armChildAlarm(10)
    switch row {
    case .purgeableCache:
        let fresh = PurgeableCache<Int>(allocator: allocator)
        try! fresh.setBytes([2], forKey: 2)
        return fresh.bytes(forKey: 2) == [2] ? 0 : 1
    case .purger:
        let purger = try! Purger(.init(pressureSources: .none))
        let memory = HoldingMemory()
        purger.register(memory)
        return purger.purgeAll() > 0 && purger.unregister(memory) ? 0 : 1
    case .allocation:
        try! cache!.setBytes([2], forKey: 2)
        return cache!.bytes(forKey: 2) == [2] ? 0 : 1
    }
}

@Suite("fork table: first creation") struct ForkFirstCreationTable {
    #if DEBUG
    @Test("fork while another thread makes the process's first object of a layer: both processes go on", arguments: FirstCreation.allCases)
    func forkDuringFirstCreation(_ row: FirstCreation) async {
        guard forkTestsRun("ForkFirstCreationTable") else { return }
        await #expect(processExitsWith: .success) { [row] in
            alarm(40)
            let allocator = try! VolatileAllocator(options: .init(releaseDelay: .seconds(600)))
            let maker = FirstMaker()
            let heldWindow = Atomic<Bool>(false)
            let once = Atomic<Bool>(false)
            // Inside the window, the holder waits until the maker waits (on
            // the fork in progress) or is done.
            let hold: @Sendable () -> Void = {
                guard !once.exchange(true, ordering: .relaxed) else { return }
                heldWindow.store(true, ordering: .releasing)
                maker.holdPrepareUntilMakerWaits()
            }
            let holder: TestThread
            // Registered objects are not retained by a purger: kept here.
            let memory = HoldingMemory()
            var purger: Purger?
            var cache: PurgeableCache<Int>?
            let registry: ForkRegistry
            if row == .purger {
                // fork()'s prepare waits for a lookup's shard mutex.
                let c = regressionCache()
                try! c.setBytes([1], forKey: 1)
                c.testHook.set { point in if point == .locked(.lookup) { hold() } }
                cache = c
                registry = .cache
                registry.setTestPrepareHook { maker.forkInPrepare.store(true, ordering: .releasing) }
                holder = TestThread { _ = c.bytes(forKey: 1) }
            } else {
                // fork()'s prepare waits for a pass inside purge(unit:).
                if row == .allocation { cache = PurgeableCache<Int>(allocator: allocator) }
                let p = try! Purger(.init(pressureSources: .none))
                memory.onPurge.withLock { $0 = { _ in hold() } }
                p.register(memory)
                purger = p
                registry = .purger
                registry.setTestPrepareHook { maker.forkInPrepare.store(true, ordering: .releasing) }
                holder = TestThread { _ = p.purgeAll() }
            }
            guard waitUntil(seconds: 20, { heldWindow.load(ordering: .acquiring) }) else {
                sayToStderr("\(row): the holder never reached its window\n")
                _exit(2)
            }
            let making = maker.start { [cache] in
                switch row {
                case .purgeableCache:
                    let c = PurgeableCache<Int>(allocator: allocator)
                    try! c.setBytes([1], forKey: 1)
                    if c.bytes(forKey: 1) != [1] { _exit(4) }
                case .purger:
                    let p = try! Purger(.init(pressureSources: .none))
                    let memory = HoldingMemory()
                    p.register(memory)
                    if p.purgeAll() == 0 { _exit(4) }
                case .allocation:
                    try! cache!.setBytes([1], forKey: 1)
                    if cache!.bytes(forKey: 1) != [1] { _exit(4) }
                }
            }
            let pid = fork()
            if pid == 0 { _exit(useFirstCreationInForkChild(row, allocator: allocator, cache: cache)) }
            registry.setTestPrepareHook(nil)
            holder.join()
            making.join()
            cache?.testHook.set(nil)
            withExtendedLifetime((purger, memory)) {}
            guard let status = waitChild(pid, seconds: 20) else {
                sayToStderr("\(row): the fork child hung (killed after 20 s)\n")
                _exit(3)
            }
            // Exit 100 + the child's exit code, or 150 + its signal (14: SIGALRM, a hang).
            if let code = exitCode(status), code != 0 { _exit(100 + code) }
            if let signal = terminatingSignal(status) { _exit(150 + signal) }
            _exit(0)
        }
    }
    #endif
}
