// The purger's mechanics: purge passes in victim order, reactions to
// pressure with debouncing, budget enforcement and the statistics. Shared by
// the public Purger and its background thread (which holds this, never the
// Purger, so that dropping the Purger stops the thread).
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The mutable record behind `PurgerStatistics`.
struct PurgerState {
    var tallies: [PurgeCause: PurgeTally] = [:]
    var purgedBytes = 0
    var events = 0
    var debounced = 0
    var eventSequence = 0
    var lastEvent: PressureEvent?
    /// Recent events, oldest first; the last is `lastEvent`'s record.
    var history: [PressureEvent] = []
    var maxReaction: UInt64?
    var lastModerateReaction: UInt64?
    var active: PressureSourceSpec?
    var notes: [String] = []
    var sourcesLost = 0
    var hasThread = false
}

extension PurgerState {
    /// Makes `event` the last one and keeps the history bounded.
    mutating func record(_ event: PressureEvent) {
        lastEvent = event
        history.append(event)
        if history.count > PurgerStatistics.historyLength { history.removeFirst() }
    }
}

final class PurgerCore: @unchecked Sendable {
    let configuration: Purger.Configuration
    /// Monotonic nanoseconds (injectable for tests).
    let clock: @Sendable () -> UInt64
    let registry = PurgeRegistry()
    let state = Locked(PurgerState())
    /// Serialises purge passes: two passes at once would both purge for the
    /// same shortfall. The purger's own thread holds it whenever it runs,
    /// not only in its passes: it releases it only while it waits in poll
    /// (PurgerLoop). So fork(), whose prepare handler takes it (ForkRegistry),
    /// never copies that thread while it runs Swift code: the Swift
    /// runtime's locks (its metadata and witness-table caches, taken when a
    /// type is first used) have no at-fork handler, and a copy of one held
    /// by that thread would hang the child at its next first use of a type
    /// (issue 18: the free-running purger's fork children).
    private let passLock = Locked<Void>(())
    let stopping = Atomic<Bool>(false)
    /// Where the thread is, for stop() (joined, or detached: the loop then
    /// closes the eventfd itself as it ends).
    let loopPhase = LoopPhase()
    /// The thread and its wake-up eventfd, set once by start().
    private let lifecycle = Locked<(thread: Kernel.Thread?, wakeFD: Int32)>((nil, -1))
    /// The fork generation the thread was started in (ForkRegistry): in a
    /// fork child the thread does not exist.
    private let threadGeneration = Atomic<Int>(-1)
    /// The thread running a pass now (pthread_t; 0: none), for a fork from
    /// inside a purge callback (the at-fork prepare).
    private let passOwner = Atomic<UInt>(0)
    /// This purger's locks in the at-fork registry.
    nonisolated(unsafe) private var forkNode: ForkRegistry.Node?

    init(_ configuration: Purger.Configuration, clock: @escaping @Sendable () -> UInt64) {
        self.configuration = configuration
        self.clock = clock
        // Fork safety (issue 18, class 2): fork()'s prepare takes the pass
        // lock (a pass in flight finishes first), the registry's mutex, the
        // state and the lifecycle lock, in the order a pass nests them; the
        // forking thread may run a pass itself (it forks from inside a purge
        // callback): its pass lock is not taken again. In the child the uses
        // that other threads held are forgotten (those threads do not exist
        // there: `unregister` must not wait for them), and the purger's
        // thread does not exist either: `stop()` and `wake()` leave the
        // parent's thread alone (its eventfd is shared). The node holds the
        // core unretained: the core unlinks it in its deinit.
        forkNode = ForkRegistry.purger.link(
            [passLock.mutex, registry.mutex, state.mutex, lifecycle.mutex],
            context: Unmanaged.passUnretained(self).toOpaque(),
            heldByForker: { node in
                PurgerCore.of(node!.pointee.context)._withUnsafeGuaranteedRef { $0.passRunsOnCurrentThread } ? 1 : 0
            },
            child: { node in
                PurgerCore.of(node!.pointee.context)._withUnsafeGuaranteedRef { $0.registry.forkChildReset() }
            })
    }

    deinit {
        if let forkNode { ForkRegistry.purger.unlink(forkNode) }
    }

    /// The core of a fork node's context.
    private static func of(_ context: UnsafeMutableRawPointer?) -> Unmanaged<PurgerCore> {
        Unmanaged.fromOpaque(context!)
    }

    /// Whether the calling thread is running a pass of this purger.
    var passRunsOnCurrentThread: Bool { passOwner.load(ordering: .relaxed) == UInt(pthread_self()) }

    /// Whether the thread was started in this process (not inherited
    /// through fork(), where it does not exist).
    private var threadInThisProcess: Bool {
        threadGeneration.load(ordering: .relaxed) == ForkRegistry.purger.generation
    }

    // MARK: - Purging

    /// One purge pass: walks every unit, asks `target` how many bytes to
    /// release given the total volatile bytes, and purges units in victim
    /// order until that much is released. Records the pass under `cause`
    /// unless the target was 0.
    ///
    /// - Returns: the bytes released.
    @discardableResult
    func purgePass(cause: PurgeCause, target: (Int) -> Int) -> Int {
        passLock.withLock { _ in purgePassLocked(cause: cause, target: target) }
    }

    /// The purger's thread: runs while holding the pass lock (PurgerLoop)
    /// and waits in poll with it released.
    var passMutex: UnsafeMutablePointer<pthread_mutex_t> { passLock.mutex }

    /// A pass, by a caller holding the pass lock (the purger's thread).
    @discardableResult
    func purgePass(holdingPassLock: Bool, cause: PurgeCause, target: (Int) -> Int) -> Int {
        holdingPassLock ? purgePassLocked(cause: cause, target: target) : purgePass(cause: cause, target: target)
    }

    private func purgePassLocked(cause: PurgeCause, target: (Int) -> Int) -> Int {
        passOwner.store(UInt(pthread_self()), ordering: .relaxed)
        defer { passOwner.store(0, ordering: .relaxed) }
        // Everything stamped from now on is newer than what this pass sees.
        RecencyClock.advance()
        // Every call into an object holds a use of it (PurgeRegistry):
        // one unregistered meanwhile is skipped, and its unregister
        // waits for the call in flight.
        let objects = registry.snapshot()
        var candidates: [(object: Int, unit: PurgeUnit)] = []
        for (i, r) in objects.enumerated() {
            registry.withUse(r) { $0.forEachPurgeUnit { candidates.append((i, $0)) } }
        }
        let total = candidates.reduce(0) { saturatingSum($0, max(0, $1.unit.volatileBytes)) }
        let want = target(total)
        guard want > 0 else { return 0 }
        var released = 0, units = 0
        for c in VictimOrder.sorted(candidates, unit: \.unit) {
            if released >= want { break }
            guard let bytes = registry.withUse(objects[c.object], { $0.purge(unit: c.unit.id) }) else { continue }
            released = saturatingSum(released, max(0, bytes))
            units += 1
        }
        state.withLock { s in
            var tally = s.tallies[cause, default: PurgeTally()]
            tally.purges = saturatingSum(tally.purges, 1)
            tally.bytes = saturatingSum(tally.bytes, released)
            tally.units = saturatingSum(tally.units, units)
            s.tallies[cause] = tally
            s.purgedBytes = saturatingSum(s.purgedBytes, released)
        }
        return released
    }

    /// Total volatile bytes of every registered unit, walked now.
    func volatileBytes() -> Int {
        var total = 0
        for r in registry.snapshot() {
            registry.withUse(r) { $0.forEachPurgeUnit { total = saturatingSum(total, max(0, $0.volatileBytes)) } }
        }
        return total
    }

    /// Purges down to the budget if the volatile bytes exceed it.
    func enforceBudget(holdingPassLock: Bool = false) {
        guard let budget = configuration.budget else { return }
        purgePass(holdingPassLock: holdingPassLock, cause: .budget) { total in total > budget ? total - budget : 0 }
    }

    // MARK: - Pressure

    /// Reacts to one pressure event delivered at `deliveredAt` (monotonic
    /// ns): critical purges everything; moderate purges down to half the
    /// budget (without one, `moderateFraction` of the purgeable bytes),
    /// unless a moderate or critical reaction ran less than
    /// `moderateInterval` before (debounced). `holdingPassLock`: called by
    /// the purger's thread, which holds the pass lock (PurgerLoop).
    func handlePressure(_ level: MemoryPressureLevel, source: PressureSourceKind, path: String, deliveredAt: UInt64,
                        holdingPassLock: Bool = false) {
        let wall = Kernel.wallClockNanoseconds()
        let debounce = configuration.moderateInterval.nanoseconds
        let sequence: Int? = state.withLock { s in
            s.events += 1
            s.eventSequence += 1
            var event = PressureEvent(
                source: source, sourcePath: path, level: level, monotonicNanoseconds: deliveredAt,
                wallClockNanoseconds: wall, outcome: .pending, reactionNanoseconds: nil)
            if level == .moderate, let last = s.lastModerateReaction, deliveredAt >= last, deliveredAt - last < debounce {
                s.debounced += 1
                event.outcome = .debounced
                s.record(event)
                return nil
            }
            s.lastModerateReaction = deliveredAt
            s.record(event)
            return s.eventSequence
        }
        guard let sequence else { return }
        let released: Int
        switch level {
        case .critical:
            released = purgePass(holdingPassLock: holdingPassLock, cause: .criticalPressure) { _ in .max }
        case .moderate:
            let budget = configuration.budget, fraction = configuration.moderateFraction
            released = purgePass(holdingPassLock: holdingPassLock, cause: .moderatePressure) { total in
                if let budget { return max(0, total - budget / 2) }
                let share = (Double(total) * fraction).rounded(.up)
                return share >= Double(Int.max) ? .max : Int(share)
            }
        }
        let end = clock()
        let reaction = end >= deliveredAt ? end - deliveredAt : 0
        state.withLock { s in
            s.maxReaction = max(s.maxReaction ?? 0, reaction)
            // Update the event's record, in the history too, unless newer
            // events pushed it out meanwhile.
            let age = s.eventSequence - sequence
            if age < s.history.count {
                s.history[s.history.count - 1 - age].outcome = .purged(bytes: released)
                s.history[s.history.count - 1 - age].reactionNanoseconds = reaction
            }
            s.lastEvent = s.history.last
        }
    }

    // MARK: - Statistics

    func statistics() -> PurgerStatistics {
        let objects = registry.snapshot()
        var volatile = 0
        for r in objects {
            registry.withUse(r) { $0.forEachPurgeUnit { volatile = saturatingSum(volatile, max(0, $0.volatileBytes)) } }
        }
        return state.withLock { s in
            PurgerStatistics(
                registeredObjects: objects.count, volatileBytes: volatile, purgedBytes: s.purgedBytes,
                budget: configuration.budget, purges: s.tallies, pressureEvents: s.events,
                debouncedEvents: s.debounced, lastPressureEvent: s.lastEvent, recentPressureEvents: s.history,
                maxReactionNanoseconds: s.maxReaction,
                source: PressureSourceStatus(active: s.active, notes: s.notes, sourcesLost: s.sourcesLost),
                hasThread: s.hasThread && threadInThisProcess)
        }
    }

    func note(_ text: String) { state.withLock { $0.notes.append(text) } }

    // MARK: - Lifecycle

    /// Opens the first source that opens and starts the thread if there is
    /// a source or a budget.
    func start(_ host: some HostView) throws(VRangeError) {
        var specs: [PressureSourceSpec] = []
        switch configuration.pressureSources {
        case .automatic:
            let plan = SourceDetection.plan(host, configuration.detectionSettings)
            specs = plan.sources
            state.withLock { $0.notes += plan.notes }
        case .none:
            break
        case .only(let list):
            specs = list
        }
        let sources = SourceChain(specs, core: self)
        guard sources.current != nil || configuration.budget != nil else { return }
        let wakeFD: Int32
        do { wakeFD = try Kernel.eventFD() } catch {
            sources.closeAll()
            throw .system(error)
        }
        let loop = PurgerLoop(core: self, sources: sources, wakeFD: wakeFD)
        let running = Kernel.Event()
        do {
            let thread = try Kernel.Thread(name: "vrange-purger") { loop.run(running) }
            // Returns once the thread holds the pass lock: from then on it
            // runs nothing without it (a fork waits for it), but in poll.
            running.wait()
            threadGeneration.store(ForkRegistry.purger.generation, ordering: .relaxed)
            lifecycle.withLock { $0 = (thread, wakeFD) }
            state.withLock { $0.hasThread = true }
        } catch {
            sources.closeAll()
            Kernel.close(fd: wakeFD)
            throw .system(error)
        }
    }

    /// Wakes the thread (a budget check follows). No-op without one or
    /// after stop(). Writes under the lock, so that the descriptor cannot be
    /// closed (and its number reused) meanwhile.
    func wake() {
        guard threadInThisProcess else { return }  // the eventfd is the parent's thread's too
        lifecycle.withLock { if $0.wakeFD >= 0 { try? Kernel.eventFDWrite($0.wakeFD) } }
    }

    /// Stops and joins the thread; idempotent. From the purger's own thread
    /// (a registered object that owned the Purger was freed by a pass) it
    /// only asks the loop to end and detaches it. Likewise when the thread,
    /// woken, waits to retake its pass lock: a pass on a program thread
    /// holds it, and that pass may be the caller's own (stop() from a purge
    /// callback of purgeAll, purge(bytes:) or reportPressure) or may wait
    /// for the caller (issue 18, r3 A); the thread ends, running no pass,
    /// once that pass returns.
    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        guard let thread = lifecycle.withLock({ $0.thread }) else { return }
        if !threadInThisProcess {
            // A fork child: the thread is the parent's. Close this
            // process's copy of the eventfd; nothing to join.
            lifecycle.withLock { l in
                Kernel.close(fd: l.wakeFD)
                l.wakeFD = -1
            }
        } else if thread.isCurrent {
            // The loop sees `stopping` when this pass returns, closes its
            // source and, being detached, the eventfd.
            lifecycle.withLock { $0.wakeFD = -1 }
            loopPhase.detach()
            thread.detach()
        } else {
            // Wake it and take the eventfd: no wake() writes to it from now
            // on (the loop may close it, detached).
            let wakeFD = lifecycle.withLock { l in
                try? Kernel.eventFDWrite(l.wakeFD)
                defer { l.wakeFD = -1 }
                return l.wakeFD
            }
            if loopPhase.awaitEndOrDetach() {
                thread.join()
                // Only now, with the loop gone: close the eventfd.
                Kernel.close(fd: wakeFD)
            } else {
                thread.detach()
            }
        }
        state.withLock { $0.hasThread = false }
    }
}
