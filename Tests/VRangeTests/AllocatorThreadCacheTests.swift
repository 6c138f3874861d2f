// The allocator's per-thread span caches (ThreadCache, vr_tcache.h): reuse
// by the freeing thread, statistics, and every way a cached span goes back
// within reach (purge-unit snapshots, releaseFreeMemory, thread exit, the
// allocator's deinit), plus the drain handshake, forced with the hooks.
// Values handed between threads are guarded by `Locked` (a pthread mutex,
// which ThreadSanitizer sees), not `Mutex`.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Spans and pages of `a` in all thread caches now.
func cached(_ a: VolatileAllocator) -> (spans: Int, pages: Int) { ThreadCache.census(token: a.config.cacheToken) }

/// Whether this machine has thread caches (membarrier's private expedited
/// command). Says which path ran when not.
func threadCachesAvailable(_ test: String) throws -> Bool {
    let a = try quietAllocator(arenas: 1)
    try a.allocate(byteCount: 2 * page).free()
    if cached(a).spans == 1 { return true }
    print("NOTE: \(test): membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) is unavailable here, so the allocator has no thread caches and its magazines ran instead; the thread-cache checks did not run")
    return false
}

/// Runs a thread-cache test with a one-arena allocator and a second thread
/// (finished afterwards); says so and runs nothing without thread caches.
func withCacheFixture(_ test: String, _ body: (VolatileAllocator, StepThread) throws -> Void) throws {
    guard try threadCachesAvailable(test) else { return }
    let a = try quietAllocator(arenas: 1)
    let other = StepThread()
    defer { other.finish() }
    try body(a, other)
}

/// A thread that runs `steps` one at a time, each when the test asks.
final class StepThread: @unchecked Sendable {
    private let work = Locked<[@Sendable () -> Void]>([])
    private let done = Atomic<Int>(0)
    private let stop = Atomic<Bool>(false)
    private var thread: TestThread?

    init() {
        thread = TestThread { [self] in
            while true {
                let next = work.withLock { $0.isEmpty ? nil : $0.removeFirst() }
                if let next { next(); done.add(1, ordering: .sequentiallyConsistent); continue }
                if stop.load(ordering: .sequentiallyConsistent) { return }
                sched_yield()
            }
        }
    }

    /// Runs `body` on the thread and waits for it.
    func run(_ body: @escaping @Sendable () -> Void) {
        let before = done.load(ordering: .sequentiallyConsistent)
        start(body)
        while done.load(ordering: .sequentiallyConsistent) == before { sched_yield() }
    }

    /// Starts `body` on the thread without waiting.
    func start(_ body: @escaping @Sendable () -> Void) { work.withLock { $0.append(body) } }

    /// Ends the thread (after its queued work) and joins it.
    func finish() {
        stop.store(true, ordering: .sequentiallyConsistent)
        thread?.join()
        thread = nil
    }
}

/// A buffer's segment and offset, to compare placements across threads.
struct Placement: Equatable, Sendable {
    let segment: ObjectIdentifier
    let offset: Int
    init(_ b: borrowing PurgeableBuffer) { segment = ObjectIdentifier(b.segment); offset = b.offset }
}

@Suite("VolatileAllocator thread caches") struct AllocatorThreadCacheTests {
    @Test("a span freed while locked is kept by its thread, counted free, and taken back by that thread only")
    func reuseByTheFreeingThread() throws {
        guard try threadCachesAvailable("reuseByTheFreeingThread") else { return }
        let a = try quietAllocator(arenas: 1)
        var b = try a.allocate(byteCount: 16 * page)
        let first = Placement(b)
        fill(&b, tag: 1)
        b.free()
        #expect(cached(a) == (1, 16))
        let s = a.statistics
        #expect(s.liveBuffers == 0 && s.liveBytes == 0, "a cached span counts as free")
        // Another thread does not see it.
        let other = StepThread()
        let seen = Locked<Placement?>(nil)
        other.run { let o = try! a.allocate(byteCount: 16 * page); seen.withLock { $0 = Placement(o) } }
        other.finish()
        #expect(seen.withLock { $0 } != first)
        #expect(cached(a) == (1, 16))
        // This one does, and only at its size.
        let wrongSize = try a.allocate(byteCount: 15 * page)
        #expect(Placement(wrongSize) != first)
        let again = try a.allocate(byteCount: 16 * page)
        #expect(Placement(again) == first)
        #expect(cached(a) == (0, 0))
        #expect(a.statistics.liveBuffers == 2)
        // An unlocked free, and a span over 64 pages, are never cached.
        var u = try a.allocate(byteCount: 4 * page)
        u.unlock()
        u.free()
        try a.allocate(byteCount: 65 * page).free()
        #expect(cached(a) == (0, 0))
    }

    @Test("with threadCache off, frees go to the magazines and the free lists")
    func optionOff() throws {
        let a = try VolatileAllocator(options: .init(releaseDelay: .seconds(600), arenaCount: 1, threadCache: false))
        #expect(a.config.cacheToken == 0)
        let b = try a.allocate(byteCount: 16 * page)
        let first = Placement(b)
        b.free()
        #expect(cached(a) == (0, 0))
        #expect(a.statistics.liveBuffers == 0)
        let again = try a.allocate(byteCount: 16 * page)
        #expect(Placement(again) == first, "the magazine hands the span back")
    }

    @Test("a full cache hands its oldest span back to the allocator")
    func eviction() throws { try withCacheFixture("eviction") { a, other in
        // On a fresh thread, whose cache holds nothing of other allocators:
        // spans of 9 sizes (a take matches its size only), one too many.
        other.run {
            for i in 0...Int(VR_TCACHE_ENTRIES) { try! a.allocate(byteCount: (i + 1) * page).free() }
        }
        #expect(cached(a).spans == Int(VR_TCACHE_ENTRIES))
        #expect(a.statistics.liveBuffers == 0)
        #expect(a.releaseFreeMemory() > 0)
        #expect(cached(a) == (0, 0))
    } }

    @Test("cached spans are within a purger's reach: a snapshot makes them free units")
    func purgerReach() throws {
        guard try threadCachesAvailable("purgerReach") else { return }
        let a = try quietAllocator(arenas: 1)
        var keep = try a.allocate(byteCount: 4 * page)  // keeps the segment's tail apart
        fill(&keep, tag: 2)
        var b = try a.allocate(byteCount: 32 * page)
        fill(&b, tag: 1)
        b.free()
        #expect(cached(a).spans == 1)
        var free: [PurgeUnit] = []
        a.forEachPurgeUnit { if $0.priority == .veryLow { free.append($0) } }
        #expect(cached(a) == (0, 0), "the snapshot drained the caches")
        #expect(free.reduce(0) { $0 + $1.volatileBytes } >= 32 * page)
        #expect(purgeEverything(a) >= 32 * page)
        #expect(keep.lock().outcome == .intact && mismatches(keep, tag: 2).isEmpty)
    }

    @Test("releaseFreeMemory reaches a span cached by another, live thread")
    func releaseReachesOtherThreads() throws { try withCacheFixture("releaseReachesOtherThreads") { a, other in
        let before = vr_tcache_barriers()
        other.run {
            var b = try! a.allocate(byteCount: 32 * page)
            fill(&b, tag: 1)
            b.free()
        }
        #expect(cached(a) == (1, 32))
        #expect(a.releaseFreeMemory() >= 32 * page)
        #expect(cached(a) == (0, 0))
        #expect(vr_tcache_barriers() > before, "the drain ran its barrier")
        // The other thread allocates afresh (its cache is empty), and a
        // buffer of this thread never shares its span.
        let theirs = Locked<Placement?>(nil)
        other.run { let o = try! a.allocate(byteCount: 32 * page); theirs.withLock { $0 = Placement(o) } }
        let mine = try a.allocate(byteCount: 32 * page)
        #expect(theirs.withLock { $0 } != Placement(mine))
    } }

    @Test("an exiting thread gives its cached spans back")
    func threadExit() throws { try withCacheFixture("threadExit") { a, other in
        other.run { try! a.allocate(byteCount: 8 * page).free(); try! a.allocate(byteCount: 3 * page).free() }
        #expect(cached(a).spans == 2)
        other.finish()
        #expect(cached(a) == (0, 0))
        #expect(a.statistics.liveBuffers == 0)
    } }

    @Test("an allocator's deinit takes its spans out of every thread's cache (the segment is unmapped)")
    func deinitDrains() throws {
        guard try threadCachesAvailable("deinitDrains") else { return }
        let other = StepThread()
        defer { other.finish() }
        weak var segment: Segment?
        var token: UInt64 = 0
        do {
            let a = try quietAllocator(arenas: 1)
            token = a.config.cacheToken
            let seg = Locked<Segment?>(nil)
            other.run {
                let b = try! a.allocate(byteCount: 8 * page)
                seg.withLock { $0 = b.segment }
                b.free()
            }
            segment = seg.withLock { $0 }
            #expect(ThreadCache.census(token: token).spans == 1)
        }
        #expect(ThreadCache.census(token: token).spans == 0)
        #expect(segment == nil, "the segment outlived its allocator: a cached span kept it")
    }

    @Test("a drain waits for an owner inside its cache; an owner stays out while a drain runs")
    func drainHandshake() throws {
        guard hooksAvailable("drainHandshake"), try threadCachesAvailable("drainHandshake") else { return }
        try withHooks {
            let a = try quietAllocator(arenas: 1)
            let owner = StepThread(), drainer = StepThread()
            defer { owner.finish(); drainer.finish() }
            let tid = Atomic<Int32>(0)
            let mine = Locked<Placement?>(nil), freed = Locked<Placement?>(nil)
            owner.run {
                tid.store(currentTID(), ordering: .sequentiallyConsistent)
                let b = try! a.allocate(byteCount: 16 * page)
                freed.withLock { $0 = Placement(b) }
                b.free()
            }
            // 1. The owner is held inside its cache (entered, about to take).
            arm(0, Int32(VR_HOOK_TCACHE_INSIDE), arg: 1, tid: tid.load(ordering: .sequentiallyConsistent),
                set: Flag.a, waitAny: Flag.b, times: 1)
            let token = UInt(a.config.cacheToken)
            arm(1, Int32(VR_HOOK_TCACHE_DRAIN_FLAGGED), arg: token, set: Flag.d, times: 1)
            let kept = Locked<PurgeableBuffer?>(nil)  // the owner's buffer stays allocated
            owner.start {
                kept.withLock { k in
                    let b = try! a.allocate(byteCount: 16 * page)
                    mine.withLock { $0 = Placement(b) }
                    k = consume b
                }
            }
            #expect(waitForFlags(Flag.a))
            drainer.start { a.releaseFreeMemory(); vr_test_hook_set_flags(Flag.c) }
            #expect(waitForFlags(Flag.d), "the drain ran its barrier")
            usleep(100_000)
            #expect(vr_test_hook_flags() & Flag.c == 0, "the drain finished while the owner was inside its cache")
            vr_test_hook_set_flags(Flag.b)
            #expect(waitForFlags(Flag.c))
            // Whoever got the span, nobody else holds it.
            let other = try a.allocate(byteCount: 16 * page)
            owner.run {}
            #expect(mine.withLock { $0 } != Placement(other))
            #expect(freed.withLock { $0 } == mine.withLock { $0 }, "the owner took its span before the drain could")

            // 2. A drain held after its barrier: the owner does not enter.
            owner.run { try! a.allocate(byteCount: 2 * page).free() }  // gives the drain a reason to stop it
            vr_test_hook_reset()
            arm(0, Int32(VR_HOOK_TCACHE_DRAIN_FLAGGED), arg: token, set: Flag.a, waitAny: Flag.b, times: 1)
            // (Hooks are process-wide and other tests run meanwhile: the
            // rules are filtered by this allocator's token and this thread.)
            arm(1, Int32(VR_HOOK_TCACHE_INSIDE), tid: tid.load(ordering: .sequentiallyConsistent), set: Flag.e)
            drainer.start { a.releaseFreeMemory(); vr_test_hook_set_flags(Flag.c) }
            #expect(waitForFlags(Flag.a))
            owner.run {
                let b = try! a.allocate(byteCount: 16 * page)
                b.free()
            }
            #expect(vr_tcache_barriers() > 0)
            #expect(vr_test_hook_flags() & Flag.e == 0, "the owner entered its cache during a drain")
            vr_test_hook_set_flags(Flag.b)
            #expect(waitForFlags(Flag.c))
            _ = consume other
            kept.withLock { $0 = nil }
        }
    }

    @Test("a free racing the allocator's deinit keeps nothing in a thread cache")
    func freeRacingDeinit() throws {
        guard hooksAvailable("freeRacingDeinit"), try threadCachesAvailable("freeRacingDeinit") else { return }
        try withHooks {
            let owner = StepThread(), killer = StepThread()
            defer { owner.finish(); killer.finish() }
            let tid = Atomic<Int32>(0)
            let held = Locked<PurgeableBuffer?>(nil)
            weak var segment: Segment?
            var token: UInt64 = 0
            do {
                let a = try quietAllocator(arenas: 1)
                token = a.config.cacheToken
                let seg = Locked<Segment?>(nil)
                owner.run {
                    tid.store(currentTID(), ordering: .sequentiallyConsistent)
                    held.withLock { h in
                        let b = try! a.allocate(byteCount: 8 * page)
                        seg.withLock { $0 = b.segment }
                        h = consume b
                    }
                }
                segment = seg.withLock { $0 }
                // The owner is held inside its cache, about to keep the span.
                arm(0, Int32(VR_HOOK_TCACHE_INSIDE), arg: 2, tid: tid.load(ordering: .sequentiallyConsistent),
                    set: Flag.a, waitAny: Flag.b, times: 1)
                owner.start { held.withLock { $0 = nil } }
                #expect(waitForFlags(Flag.a))
                // The last reference goes on another thread: its deinit must
                // wait for the owner to leave its cache.
                let box = Locked<VolatileAllocator?>(a)
                _ = consume a
                killer.start { box.withLock { $0 = nil }; vr_test_hook_set_flags(Flag.c) }
                usleep(100_000)
                #expect(vr_test_hook_flags() & Flag.c == 0, "the deinit's drain finished while a free was inside a cache")
                vr_test_hook_set_flags(Flag.b)
                #expect(waitForFlags(Flag.c))
                owner.run {}
            }
            #expect(ThreadCache.census(token: token).spans == 0, "a span of a dead allocator stayed cached")
            #expect(segment == nil, "the segment outlived its allocator")
        }
    }

    @Test("the child of a fork drains the caches of threads it does not have")
    func forkOrphans() throws { try withCacheFixture("forkOrphans") { a, other in
        other.run { try! a.allocate(byteCount: 8 * page).free() }
        try a.allocate(byteCount: 5 * page).free()
        #expect(cached(a).spans == 2)
        let status = forked {
            // The other thread's cache is an orphan here: its owner is gone.
            guard cached(a).spans == 2 else { return 10 }
            guard a.releaseFreeMemory() >= 13 * page else { return 11 }
            guard cached(a) == (0, 0), a.statistics.liveBuffers == 0 else { return 12 }
            // The child's own thread keeps caching.
            guard (try? a.allocate(byteCount: 2 * page).free()) != nil, cached(a).spans == 1 else { return 13 }
            return 0
        }
        #expect(exitCode(status) == 0, "child status \(status)")
        #expect(cached(a).spans == 2, "the parent's caches are its own")
    } }
}
