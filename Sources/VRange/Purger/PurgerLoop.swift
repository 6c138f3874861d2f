// The purger's one background thread: polls the pressure source's
// descriptors and an eventfd that wakes it (registration, budget check,
// shutdown), runs the source's timer, advances RecencyClock every tick and
// keeps the budget. A source that vanishes is replaced by the next one.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The ordered sources a purger may watch, and the one open now. Owned by
/// whoever runs it: start-up, then the background thread alone.
final class SourceChain: @unchecked Sendable {
    private(set) var current: (any PressureSource)?
    private var pending: ArraySlice<PressureSourceSpec>
    private unowned let core: PurgerCore

    /// Opens the first of `specs` that opens.
    init(_ specs: [PressureSourceSpec], core: PurgerCore) {
        pending = specs[...]
        self.core = core
        current = openNext()
    }

    /// Opens the next pending source, noting each failure; records the
    /// active one (nil when none is left).
    private func openNext() -> (any PressureSource)? {
        while let spec = pending.popFirst() {
            do {
                let source = try open(spec)
                core.state.withLock { s in
                    s.active = spec
                    s.notes += source.notes
                }
                return source
            } catch {
                core.note("\(spec): could not be opened: \(describeOpenFailure(error)); trying the next source")
            }
        }
        core.state.withLock { $0.active = nil }
        return nil
    }

    private func open(_ spec: PressureSourceSpec) throws(VRangeError) -> any PressureSource {
        let c = core.configuration
        switch spec {
        case .systemdWatch: return try SystemdWatchSource(spec)
        case .psi: return try PSISource(spec)
        case .cgroupV1:
            let physical = (try? MemInfo.parse(readSourceFile("/proc/meminfo")).total) ?? .max
            return try CgroupV1Source(spec, thresholds: c.thresholds,
                                      headroomIntervalMilliseconds: c.cgroupHeadroomInterval.milliseconds,
                                      physicalMemory: physical)
        case .cgroupV2:
            return try CgroupV2Source(spec, thresholds: c.thresholds,
                                      headroomIntervalMilliseconds: c.cgroupHeadroomInterval.milliseconds)
        case .memAvailable: return try MemAvailableSource(spec, thresholds: c.thresholds)
        }
    }

    /// The current source vanished: closes it, notes why, opens the next.
    func replace(because reason: String) {
        guard let gone = current else { return }
        gone.close()
        current = nil
        core.state.withLock { s in
            s.sourcesLost += 1
            s.notes.append("\(gone.spec) vanished: \(reason)")
        }
        current = openNext()
        core.note(current.map { "now watching \($0.spec)" } ?? "no pressure source left")
    }

    func closeAll() {
        current?.close()
        current = nil
    }
}

/// Where the purger's thread is, for stop(): running (holding the pass
/// lock, or in poll without it), blocked retaking the pass lock after poll
/// (a pass on a program thread holds it), or ended. stop() joins a thread
/// that ended, and detaches one blocked for the pass lock: the pass holding
/// it may be the one calling stop() (from a purge callback) or may wait for
/// the thread calling stop() (issue 18, r3 A); the thread then ends as soon
/// as it has the lock, runs no pass, and closes the eventfd itself.
/// Used in the process that started the thread only (a fork child's copy
/// of the loop ends without it: its mutex may be a copy held by a thread
/// that does not exist there).
final class LoopPhase: @unchecked Sendable {
    enum Phase { case running, waitingForPassLock, ended }
    private let monitor = Kernel.Monitor()
    private var phase = Phase.running  // guarded by `monitor`
    private var detached = false  // guarded by `monitor`

    private func locked<R>(_ body: () -> R) -> R { monitor.locked(body) }

    /// The thread: now in `phase` (not `.ended`: see `end()`).
    func enter(_ phase: Phase) {
        locked {
            self.phase = phase
            monitor.broadcast()
        }
    }

    /// The thread, as it ends: whether it was detached (it then closes the
    /// eventfd itself).
    func end() -> Bool {
        locked {
            phase = .ended
            monitor.broadcast()
            return detached
        }
    }

    /// stop() on the thread itself: it is detached.
    func detach() { locked { detached = true } }

    /// stop() on another thread, after waking the loop: waits until the
    /// thread ended (true: join it) or is blocked retaking the pass lock
    /// (false: it is now detached).
    func awaitEndOrDetach() -> Bool {
        locked {
            while phase == .running { monitor.wait() }
            if phase == .ended { return true }
            detached = true
            return false
        }
    }
}

/// The background thread's loop.
final class PurgerLoop: @unchecked Sendable {
    private let core: PurgerCore
    private let sources: SourceChain
    private let wakeFD: Int32

    init(core: PurgerCore, sources: SourceChain, wakeFD: Int32) {
        self.core = core
        self.sources = sources
        self.wakeFD = wakeFD
    }

    /// The thread's body. It holds the purger's pass lock throughout, and
    /// releases it only while it waits in poll (or sleeps after a failed
    /// poll): fork()'s prepare handler takes that lock, so a fork never
    /// copies this thread while it runs (PurgerCore.passLock). Signals
    /// `running` once it holds the lock. It runs no pass once `stopping`
    /// is set (even after stop() returned, detached: LoopPhase), and a copy
    /// of it in a fork child (forked from a purge callback on this thread,
    /// the child returning from the callback) ends at once, touching
    /// neither the shared eventfd nor the phase.
    func run(_ running: Kernel.Event) {
        pthread_mutex_lock(core.passMutex)
        defer { pthread_mutex_unlock(core.passMutex) }
        let generation = ForkRegistry.purger.generation
        var forkedAway: Bool { ForkRegistry.purger.generation != generation }
        let phase = core.loopPhase
        running.signal()
        let tick = core.configuration.tick.nanoseconds
        var now = Kernel.monotonicNanoseconds()
        // Saturating: a tick near Duration's maximum means "never", not a
        // deadline that wraps into the past (issue 18, 4d).
        var nextTick = now.addingSaturating(tick)
        var nextTimer = timerDeadline(after: now)
        while !core.stopping.load(ordering: .acquiring) && !forkedAway {
            var requests = [Kernel.PollRequest(fd: wakeFD, events: [.input])] + (sources.current?.pollRequests ?? [])
            now = Kernel.monotonicNanoseconds()
            let deadline = min(nextTick, nextTimer ?? .max)
            let timeout = deadline <= now ? 0 : Int32(clamping: (deadline - now) / 1_000_000 + 1)
            do {
                _ = try Kernel.poll(&requests, timeoutMilliseconds: timeout, unlocking: core.passMutex,
                                    contended: { phase.enter(.waitingForPassLock) }, retaken: { phase.enter(.running) })
            } catch {
                if core.stopping.load(ordering: .acquiring) { break }
                core.note("poll failed: \(describe(error)); retrying after a tick")
                var noRequests: [Kernel.PollRequest] = []
                _ = try? Kernel.poll(&noRequests, timeoutMilliseconds: Int32(max(1, min(tick, 100_000_000) / 1_000_000)),
                                     unlocking: core.passMutex,
                                     contended: { phase.enter(.waitingForPassLock) }, retaken: { phase.enter(.running) })
                continue
            }
            if core.stopping.load(ordering: .acquiring) { break }
            TestHook.fire(Int32(VR_HOOK_PURGER_LOOP))
            let woke = core.clock()
            var checkBudget = false
            if requests[0].returned.contains(.input) {
                _ = try? Kernel.eventFDRead(wakeFD)
                if core.stopping.load(ordering: .acquiring) { break }
                checkBudget = true
            }
            if let source = sources.current {
                let returned = requests.dropFirst().map(\.returned)
                if returned.contains(where: { !$0.isEmpty }) {
                    process(source.handle(Array(returned)), from: source, at: woke)
                    if forkedAway { return }
                    // A replacement source brings its own timer (or none).
                    if sources.current !== source { nextTimer = timerDeadline(after: Kernel.monotonicNanoseconds()) }
                }
            }
            now = Kernel.monotonicNanoseconds()
            if let due = nextTimer, now >= due, let source = sources.current, !core.stopping.load(ordering: .acquiring) {
                process(source.timerFired(), from: source, at: core.clock())
                if forkedAway { return }
                now = Kernel.monotonicNanoseconds()
                nextTimer = timerDeadline(after: now)
            }
            if now >= nextTick {
                RecencyClock.advance()
                nextTick = now.addingSaturating(tick)
                checkBudget = true
            }
            if checkBudget && !core.stopping.load(ordering: .acquiring) { core.enforceBudget(holdingPassLock: true) }
        }
        // A fork child's copy: the eventfd, the sources' descriptors and
        // the phase are the parent's thread's.
        if forkedAway { return }
        sources.closeAll()
        // Normally stop() closes the eventfd after joining this thread; a
        // detached loop (stopped from this very thread, or while it waited
        // for the pass lock) closes it itself.
        if phase.end() { Kernel.close(fd: wakeFD) }
    }

    private func timerDeadline(after now: UInt64) -> UInt64? {
        sources.current?.timerMilliseconds.map { ms in
            let (ns, overflow) = UInt64(clamping: ms).multipliedReportingOverflow(by: 1_000_000)
            return overflow ? .max : now.addingSaturating(ns)
        }
    }

    private func process(_ report: SourceReport, from source: any PressureSource, at time: UInt64) {
        switch report {
        case .quiet:
            break
        case .pressure(let level):
            core.handlePressure(level, source: source.spec.kind, path: source.spec.path, deliveredAt: time,
                                holdingPassLock: true)
        case .gone(let reason):
            sources.replace(because: reason)
        }
    }
}
