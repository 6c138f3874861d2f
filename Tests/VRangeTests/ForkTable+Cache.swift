// Fork table of the cache layer (issue 18, class 2; 2b, cache part): fork()
// while another thread is held inside each public cache operation, at a
// point under a shard's mutex or in the middle of the operation outside it.
// The child then uses every operation of the cache, makes and drops another
// cache, and must exit 0 within a bound (alarm; the parent kills it after
// 20 s). Each row runs in a process of its own (an exit test): only the
// test's own threads exist when it forks.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// One public cache operation and the point where a thread is held in it.
enum CacheForkWindow: String, CaseIterable, Codable, Sendable {
    case bytesLocked, copyBytesLocked, withBytesCheckOutLocked, withBytesBody, withBytesCheckInLocked
    case setBytesBeforeStore, setBytesStoreLocked, setBytesEvictLocked
    case removeValueLocked, removeAllLocked, containsLocked, countLocked, statisticsLocked
    case fetchBytesJoinLocked, fetchBytesRebuilding, fetchBytesFinishLocked, fetchValueRebuilding

    /// The hook point it is held at (nil: held in the caller's closure).
    var point: CacheHookPoint? {
        switch self {
        case .bytesLocked: .locked(.lookup)
        case .copyBytesLocked: .locked(.copy)
        case .withBytesCheckOutLocked: .locked(.checkOut)
        case .withBytesBody, .fetchBytesRebuilding, .fetchValueRebuilding: nil
        case .withBytesCheckInLocked: .locked(.checkIn)
        case .setBytesBeforeStore: .beforeStore
        case .setBytesStoreLocked: .locked(.store)
        case .setBytesEvictLocked: .locked(.evict)
        case .removeValueLocked: .locked(.remove)
        case .removeAllLocked: .locked(.removeAll)
        case .containsLocked: .locked(.contains)
        case .countLocked: .locked(.count)
        case .statisticsLocked: .locked(.statistics)
        case .fetchBytesJoinLocked: .locked(.join)
        case .fetchBytesFinishLocked: .locked(.finish)
        }
    }

    /// Whether the held thread holds a shard's mutex (the fork's prepare
    /// handler then waits for it: the test lets it go on when prepare runs).
    var holdsMutex: Bool {
        if case .locked = point { return true }
        return false
    }
}

/// Writes `line` to stderr unbuffered (an exit test's `_exit` flushes no
/// stdio buffer).
func sayToStderr(_ line: String) {
    var bytes = Array(line.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

/// Waits for child `pid` at most `seconds`, then kills it. Its wait status,
/// or nil when it had to be killed.
func waitChild(_ pid: pid_t, seconds: Double) -> Int32? {
    var status: Int32 = 0
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { return status }
        if r < 0 && errno != EINTR { return nil }
        var ts = timespec(tv_sec: 0, tv_nsec: 2_000_000)
        nanosleep(&ts, nil)
    }
    kill(pid, SIGKILL)
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return nil
}

#if DEBUG
/// The child's work: every operation of `cache`, then another cache made
/// and dropped. Returns an exit code (0: all good).
func useCacheInForkChild(_ cache: PurgeableCache<Int>, values: PurgeableValueCache<Int, String>) -> Int32 {
    var unblock = sigset_t()
    sigemptyset(&unblock)
    sigaddset(&unblock, SIGALRM)
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    alarm(10)  // a hang dies of SIGALRM
    cache.testHook.set(nil)
    for k in [0, 1, 2, 4, 5, 6, 7] {  // not 3: the parent may be rebuilding it
        guard (try? cache.setBytes(cacheValue(k, 9), forKey: k)) != nil else { return 20 }
    }
    // Whole or absent (a cache with a cost limit evicts); the last one stored is there.
    for k in [0, 1, 2, 4, 5, 6, 7] { if let v = cache.bytes(forKey: k), v != cacheValue(k, 9) { return 21 } }
    var scratch = [UInt8](repeating: 0, count: 3000)
    guard scratch.withUnsafeMutableBytes({ cache.copyBytes(forKey: 7, into: $0) }) == 3000, scratch == cacheValue(7, 9) else { return 22 }
    guard cache.withBytes(forKey: 7, { [UInt8]($0) }) == cacheValue(7, 9) else { return 23 }
    guard cache.removeValue(forKey: 7), !cache.contains(7) else { return 24 }
    // A rebuild that was in flight in the parent has no leader here: a
    // fetch of any key runs its own.
    for k in [3, 100] {
        guard (try? cache.fetchBytes(forKey: k, rebuild: { cacheValue($0, 10) })) == cacheValue(k, 10) else { return 25 }
    }
    guard (try? values.fetchValue(forKey: 100, rebuild: { "child \($0)" })) == "child 100" else { return 26 }
    _ = cache.count
    _ = cache.statistics
    cache.removeAll()
    guard cache.count == 0 else { return 27 }
    var other: PurgeableCache<Int>? = PurgeableCache<Int>(shards: 2)
    guard (try? other!.setBytes([1, 2, 3], forKey: 1)) != nil, other!.bytes(forKey: 1) == [1, 2, 3] else { return 28 }
    other = nil
    return 0
}
#endif

@Suite("fork table: cache") struct CacheForkTable {
    #if DEBUG
    @Test("fork while another thread is held inside a cache operation: the child uses the cache and exits", arguments: CacheForkWindow.allCases)
    func forkWhileHeld(_ window: CacheForkWindow) async {
        guard forkTestsRun("CacheForkTable") else { return }
        await Self.row(window)
    }

    /// The worker's operation of `window`; `hold` is where a row without a
    /// hook point holds it (in the caller's closure).
    static func operate(_ window: CacheForkWindow, _ cache: PurgeableCache<Int>,
                        _ values: PurgeableValueCache<Int, String>, hold: @escaping @Sendable () -> Void) {
        switch window {
        case .bytesLocked: _ = cache.bytes(forKey: 1)
        case .copyBytesLocked:
            var d = [UInt8](repeating: 0, count: 16)
            _ = d.withUnsafeMutableBytes { cache.copyBytes(forKey: 1, into: $0) }
        case .withBytesCheckOutLocked, .withBytesCheckInLocked: _ = cache.withBytes(forKey: 1) { $0.count }
        case .withBytesBody: _ = cache.withBytes(forKey: 1) { raw -> Int in hold(); return raw.count }
        case .setBytesBeforeStore, .setBytesStoreLocked, .setBytesEvictLocked: try! cache.setBytes(cacheValue(5), forKey: 5)
        case .removeValueLocked: _ = cache.removeValue(forKey: 1)
        case .removeAllLocked: cache.removeAll()
        case .containsLocked: _ = cache.contains(1)
        case .countLocked: _ = cache.count
        case .statisticsLocked: _ = cache.statistics
        case .fetchBytesJoinLocked, .fetchBytesFinishLocked: _ = try? cache.fetchBytes(forKey: 7) { cacheValue($0) }
        case .fetchBytesRebuilding: _ = try? cache.fetchBytes(forKey: 3) { k in hold(); return cacheValue(k) }
        case .fetchValueRebuilding: _ = try? values.fetchValue(forKey: 100) { k in hold(); return "parent \(k)" }
        }
    }

    static func row(_ window: CacheForkWindow) async {
        await #expect(processExitsWith: .success) { [window] in
            alarm(60)
            let allocator = try! VolatileAllocator(options: .init(releaseDelay: .seconds(600)))
            let evicting = window == .setBytesEvictLocked
            let cache = PurgeableCache<Int>(costLimit: evicting ? 3 * 3000 : .max, allocator: allocator, shards: 4)
            let values = PurgeableValueCache<Int, String>(allocator: allocator, shards: 4)
            for k in 0..<3 { try! cache.setBytes(cacheValue(k), forKey: k) }
            let gate = Gate()
            // The worker stays alive until the child is forked (its thread's
            // exit would run the allocator's thread-cache flush meanwhile).
            let forked = Gate()
            let heldThread = Atomic<UInt>(0)
            // The held thread is the only one the hook stops.
            cache.testHook.set { point in
                guard point == window.point, heldThread.load(ordering: .acquiring) == UInt(pthread_self()) else { return }
                gate.hold(seconds: 20)
            }
            if window.holdsMutex {
                // fork()'s prepare handler waits for the shard's mutex: let
                // the held thread finish its operation then.
                ForkRegistry.cache.setTestPrepareHook { gate.open() }
            }
            // Warm-up: the worker, let go while the child is forked, must
            // not use a type for the first time then (the Swift runtime's
            // caches lock when it does, and a child forked meanwhile hangs at
            // its own first use of a type of that cache: this row's child
            // hung so in swift_getWitnessTable). So the same operation runs
            // once before, on caches of the same types, and so does a
            // thread's start and hold.
            let scratch = PurgeableCache<Int>(costLimit: evicting ? 3 * 3000 : .max, allocator: allocator, shards: 4)
            let scratchValues = PurgeableValueCache<Int, String>(allocator: allocator, shards: 4)
            for k in 0..<3 { try! scratch.setBytes(cacheValue(k), forKey: k) }
            let warm = Gate()
            warm.open()
            TestThread { Self.operate(window, scratch, scratchValues) { warm.hold(seconds: 20) } }.join()
            let worker = TestThread {
                heldThread.store(UInt(pthread_self()), ordering: .releasing)
                Self.operate(window, cache, values) { gate.hold(seconds: 20) }
                forked.hold(seconds: 20)
            }
            guard gate.waitReached(seconds: 20) else { sayToStderr("the worker never reached \(window)\n"); _exit(2) }
            let pid = fork()
            if pid == 0 { _exit(useCacheInForkChild(cache, values: values)) }
            gate.open()
            forked.open()
            worker.join()
            ForkRegistry.cache.setTestPrepareHook(nil)
            guard let status = waitChild(pid, seconds: 20) else { sayToStderr("\(window): the child hung (killed after 20 s)\n"); _exit(3) }
            // Exit 100 + the child's exit code, or 150 + its signal (14: SIGALRM, a hang).
            if let code = exitCode(status), code != 0 { _exit(100 + code) }
            if let signal = terminatingSignal(status) { _exit(150 + signal) }
            // The parent goes on as usual.
            cache.testHook.set(nil)
            try! cache.setBytes(cacheValue(6), forKey: 6)
            guard cache.bytes(forKey: 6) == cacheValue(6) else { _exit(5) }
            _exit(0)
        }
    }
    #endif
}
