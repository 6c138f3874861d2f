// Purger: decides what volatile memory goes, and when. Holds purgeable
// memory weakly, purges on request, keeps a byte budget and reacts to the
// host's memory-pressure signals from one background thread (DESIGN.md §2,
// §7). The mechanics live in PurgerCore; this is the public face.

/// Purges registered volatile memory — least recently used first within a
/// priority class, lower classes first — on request, to keep a byte budget,
/// and when the host signals memory pressure.
///
/// ```
/// let purger = try Purger(.init(budget: 256 << 20))
/// purger.register(region)          // held weakly
/// print(purger.activeSource)       // e.g. PSI /proc/pressure/memory
/// ```
///
/// Pressure sources are detected at start-up (see `detectPressureSources()`):
/// a moderate event purges down to half the budget (without a budget,
/// `moderateFraction` of the purgeable bytes), at most once per
/// `moderateInterval`; a critical event purges everything purgeable.
/// Marking memory volatile or non-volatile never waits for the purger: the
/// only thing a mark does for it is store `RecencyClock.now`.
///
/// All methods are thread-safe. `PurgeableMemory` implementations must not
/// call back into the purger from `forEachPurgeUnit` or `purge(unit:)`,
/// except to `unregister` themselves.
///
/// Numbers at their extremes: `purge(bytes:)` refuses a negative count;
/// byte counts that units report add up saturating at Int.max (a negative
/// one counts as 0); the configuration's durations are validated and then
/// used with saturating arithmetic (see `Configuration.tick`).
public final class Purger: Sendable {
    let core: PurgerCore

    /// Starts a purger: validates `configuration`, opens its pressure source
    /// (the first of the detected or configured ones that opens; the others'
    /// reasons are in `statistics().source.notes`) and starts its thread —
    /// unless there is neither a source nor a budget, when it runs none.
    ///
    /// - Throws: `.invalidConfiguration` for an out-of-range setting;
    ///   `.system` when the thread or its wake-up eventfd cannot be created.
    ///   A source that cannot be opened is not an error: the next is tried.
    public convenience init(_ configuration: Configuration = Configuration()) throws(VRangeError) {
        try self.init(configuration, clock: { Kernel.monotonicNanoseconds() }, host: LiveHost())
    }

    /// For tests: an injected monotonic clock (debouncing and reaction
    /// times read it) and host view (source detection reads it).
    init(_ configuration: Configuration, clock: @escaping @Sendable () -> UInt64,
         host: some HostView) throws(VRangeError) {
        try configuration.validate()
        core = PurgerCore(configuration, clock: clock)
        try core.start(host)
    }

    deinit { core.stop() }

    /// Stops the background thread (waking it through its eventfd and
    /// joining it) and closes the pressure source. Idempotent. Purges on
    /// request still work afterwards; the budget and pressure are no longer
    /// watched.
    public func stop() { core.stop() }

    /// Adds `memory` to what this purger may purge. It is held weakly: a
    /// region its owner drops is deinitialised as usual and leaves the
    /// purger by itself. Registering twice is harmless. Wakes the thread so
    /// that the budget is checked at once.
    public func register(_ memory: any PurgeableMemory) {
        if core.registry.add(memory) { core.wake() }
    }

    /// Removes `memory`. Returns whether it was registered.
    ///
    /// When it returns, no purge pass (of this purger's thread or of
    /// another thread's `purge`/`purgeAll`/`reportPressure`) is inside
    /// `memory` any more, and none will call into it again: it waits for a
    /// call in flight to leave the object, at most 10 s
    /// (`PurgeRegistry.removalWaitLimit`; past that it returns and the call
    /// in flight ends on its own). Called from inside `memory`'s own
    /// `purge(unit:)` or `forEachPurgeUnit`, on the purging thread, it does
    /// not wait for that call (it could not end), and the pass calls into
    /// `memory` no more once that call returns.
    @discardableResult
    public func unregister(_ memory: any PurgeableMemory) -> Bool {
        core.registry.remove(memory)
    }

    /// Purges at least `bytes` of volatile memory if there is that much, in
    /// victim order (lower class, then least recently used, then larger
    /// first), on the calling thread. Units are purged whole, so more may
    /// go.
    ///
    /// - Returns: the bytes released (0 when `bytes` is 0).
    /// - Throws: `.invalidSize` for a negative `bytes`; nothing is purged.
    @discardableResult
    public func purge(bytes: Int) throws(VRangeError) -> Int {
        if bytes < 0 { throw .invalidSize(bytes) }
        return core.purgePass(cause: .request) { _ in bytes }
    }

    /// Purges every volatile byte of every registered object, on the
    /// calling thread. Returns the bytes released.
    @discardableResult
    public func purgeAll() -> Int {
        core.purgePass(cause: .requestAll) { _ in .max }
    }

    /// Reacts to memory pressure the program learned of by other means, on
    /// the calling thread, exactly as to an event from the watched source
    /// (moderate events are debounced). Recorded with source `.program`.
    public func reportPressure(_ level: MemoryPressureLevel) {
        core.handlePressure(level, source: .program, path: "", deliveredAt: core.clock())
    }

    /// Asks the background thread to check the budget now rather than at
    /// its next tick (e.g. after marking a lot of memory volatile). Does
    /// nothing without a thread.
    public func requestBudgetCheck() { core.wake() }

    /// The source being watched, nil when none.
    public var activeSource: PressureSourceSpec? { core.state.withLock { $0.active } }

    /// A snapshot of volatile bytes (walked now), purge history and pressure
    /// events.
    public func statistics() -> PurgerStatistics { core.statistics() }

    /// The sources this host offers, in the order an `.automatic` purger
    /// tries them, and why others were left out. Opens nothing.
    public static func detectPressureSources(_ configuration: Configuration = Configuration())
        -> (sources: [PressureSourceSpec], notes: [String]) {
        let plan = SourceDetection.plan(LiveHost(), configuration.detectionSettings)
        return (plan.sources, plan.notes)
    }
}
