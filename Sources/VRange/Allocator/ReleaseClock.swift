// The release clock: one thread per process that gives an arena's free
// memory back to the kernel once it has been free for the release delay,
// whether or not the allocator is called again (mimalloc and jemalloc purge
// on later calls only; a program that frees a lot and goes idle would keep
// it all). An arena is put on the schedule by the first free after its last
// release round (one load on the free fast paths: the arena's release word,
// in its magazine's cache line); the thread sleeps until the earliest round
// is due, runs the rounds outside its lock, and sleeps for ever when nothing
// is scheduled. It is started by the first free that needs it. A fork child
// of a process that used the allocator starts none (POSIX allows a child of
// a multithreaded process only async-signal-safe calls, and ThreadSanitizer
// kills a child that starts a thread): there, as before the clock, the delay
// is applied by later frees and by releaseFreeMemory (tcache.c clears the
// release words at fork).
import CVRange

enum ReleaseClock {
    /// Arenas on the schedule and when their round is due (CLOCK_MONOTONIC
    /// ns), under the allocator registry's lock (vr_alloc_lock). Strong: an
    /// arena stays until its round has run.
    nonisolated(unsafe) private static var pending: [(arena: Arena, due: UInt64)] = []

    /// Slack added to every due time: free ages are counted in coarse
    /// milliseconds (CLOCK_MONOTONIC_COARSE ticks are up to 4 ms).
    static let slackMs: UInt64 = 10

    /// Schedules a round for `arena` at `due` (or earlier, if one is due
    /// sooner); starts the thread if this process has none. Never called
    /// with an arena's lock held.
    static func schedule(_ arena: Arena, at due: UInt64) {
        vr_alloc_lock()
        if let i = pending.firstIndex(where: { $0.arena === arena }) {
            if due < pending[i].due { pending[i].due = due }
        } else {
            pending.append((arena, due))
        }
        let start = vr_alloc_claim_releaser() != 0
        vr_alloc_wake()
        vr_alloc_unlock()
        if start { startThread() }
    }

    /// The thread could not start (no resources): the release delay then
    /// runs on later frees only (the scan of `Arena.afterFree`), as before
    /// there was a clock; the next schedule tries again.
    private static func startThread() {
        do {
            let t = try Kernel.Thread(name: "vrange-release") { run() }
            t.detach()
        } catch {
            vr_alloc_lock()
            vr_alloc_releaser_failed()
            vr_alloc_unlock()
        }
    }

    /// Holds the release gate whenever it runs, its rounds included, but in
    /// vr_alloc_wait: fork() waits until it is there (tcache.c).
    private static func run() {
        vr_alloc_releaser_enter()
        while true {
            let now = Kernel.nanoseconds()
            var due: [Arena] = []
            var next = UInt64.max
            pending.removeAll { e in
                if e.due <= now { due.append(e.arena); return true }
                next = min(next, e.due)
                return false
            }
            if due.isEmpty {
                vr_alloc_wait(next == .max ? 0 : next)
                continue
            }
            vr_alloc_unlock()
            for arena in due { arena.releaseRound() }
            due.removeAll()  // the last reference to an arena may go here, outside the lock
            vr_alloc_lock()
        }
    }
}

extension Magazine {
    /// Whether the arena is on the release clock's schedule. Sequentially
    /// consistent, so that it is ordered after the free that precedes it
    /// (the magazine's CAS, the arena's unlock) against the round that
    /// clears it (see Arena.releaseRound).
    @inline(__always)
    var releaseScheduled: Bool { words[Self.releaseWord].load(ordering: .sequentiallyConsistent) != 0 }
}

extension Arena {
    /// After a free (any path): puts the arena on the release clock's
    /// schedule unless it is on it.
    @inline(__always)
    func noteFree() {
        if !magazine.releaseScheduled { scheduleRelease(afterMs: config.releaseDelayMs) }
    }

    /// Schedules a release round `ms` from now, unless one is scheduled (or
    /// this process is a fork child: no clock there).
    @inline(never)
    func scheduleRelease(afterMs ms: UInt32) {
        guard vr_alloc_generation() == 0, magazine.words[Magazine.releaseWord].compareExchange(
            expected: 0, desired: 1, ordering: .sequentiallyConsistent).exchanged else { return }
        ReleaseClock.schedule(self, at: Kernel.nanoseconds() &+ (UInt64(ms) + ReleaseClock.slackMs) * 1_000_000)
    }

    /// The release clock's round: free spans older than the delay are given
    /// back; the spans threads' caches and the magazine keep rejoin the free
    /// lists (and age from now). Free memory left young schedules the next
    /// round, a quarter of the delay later at the soonest.
    func releaseRound() {
        // Off the schedule first: a free from now on schedules again.
        magazine.words[Magazine.releaseWord].store(0, ordering: .sequentiallyConsistent)
        // `closing` for its barrier first: a span put into a thread's cache
        // by a free that saw the arena still scheduled is visible to it.
        if config.cacheToken != 0 { ThreadCache.drain(token: config.cacheToken, closing: true) }
        TestHook.entered(.releaseClock)
        let work: ReleaseWork = state.withLock { s in
            TestHook.locked(.releaseClock)
            let now = Self.nowMs()
            s.lastReleaseScanMs = now
            return collectExpired(&s, now: now, delayMs: config.releaseDelayMs)
        }
        let next = work.nextExpiryMs
        finishRelease(work)
        if let next { scheduleRelease(afterMs: max(next, config.releaseDelayMs / 4)) }
    }
}
