// What a purger tells a program about itself: volatile and purged bytes,
// purges by cause, its pressure source and the last pressure event with the
// time it took to release memory.

/// Why a purge ran.
public enum PurgeCause: String, Sendable, CaseIterable, CustomStringConvertible {
    /// `purge(bytes:)`.
    case request
    /// `purgeAll()`.
    case requestAll
    /// The resident volatile memory exceeded the budget.
    case budget
    /// A moderate pressure event.
    case moderatePressure
    /// A critical pressure event.
    case criticalPressure

    public var description: String { rawValue }
}

/// How many purges one cause ran and what they released.
public struct PurgeTally: Sendable, Equatable {
    /// Purge passes run (each may purge several units).
    public var purges: Int = 0
    /// Bytes they released.
    public var bytes: Int = 0
    /// Purge units purged.
    public var units: Int = 0

    public init(purges: Int = 0, bytes: Int = 0, units: Int = 0) {
        self.purges = purges
        self.bytes = bytes
        self.units = units
    }
}

/// One memory-pressure event and what the purger did about it.
public struct PressureEvent: Sendable, Equatable {
    /// What happened after the event.
    public enum Outcome: Sendable, Equatable {
        /// A purge ran and released `bytes` (possibly 0: nothing was left).
        case purged(bytes: Int)
        /// A moderate event within `moderateInterval` of the last reaction:
        /// ignored.
        case debounced
        /// Still being handled.
        case pending
    }

    /// The source that delivered it.
    public var source: PressureSourceKind
    /// The file or directory of that source ("" for a program's report).
    public var sourcePath: String
    public var level: MemoryPressureLevel
    /// CLOCK_MONOTONIC nanoseconds when it was delivered: when the purger's
    /// thread woke with it (or `reportPressure` was called).
    public var monotonicNanoseconds: UInt64
    /// CLOCK_REALTIME nanoseconds since the epoch at the same moment.
    public var wallClockNanoseconds: UInt64
    public var outcome: Outcome
    /// From delivery until the purge returned, memory released; nil when no
    /// purge ran.
    public var reactionNanoseconds: UInt64?
}

/// The pressure source a purger watches, and how it got there.
public struct PressureSourceStatus: Sendable, Equatable {
    /// The source being watched; nil when none (none configured, none
    /// could be opened, or all vanished).
    public var active: PressureSourceSpec?
    /// What detection and opening had to say, in order: sources skipped and
    /// why, sources that failed to open (e.g. "PSI is compiled in but
    /// disabled"), sources that vanished while watched and what replaced
    /// them.
    public var notes: [String]
    /// How many watched sources vanished (POLLERR, cgroup removed).
    public var sourcesLost: Int
}

/// A snapshot of a purger's state and history.
public struct PurgerStatistics: Sendable, Equatable {
    /// Live registered objects.
    public var registeredObjects: Int
    /// Volatile bytes still resident in them now (what purging everything
    /// would release).
    public var volatileBytes: Int
    /// Bytes this purger released in all.
    public var purgedBytes: Int
    /// The budget, if any.
    public var budget: Int?
    /// Purges by cause (causes that never ran are absent).
    public var purges: [PurgeCause: PurgeTally]
    /// Pressure events delivered, and those ignored as debounced.
    public var pressureEvents: Int
    public var debouncedEvents: Int
    /// The most recent pressure event.
    public var lastPressureEvent: PressureEvent?
    /// The last `PurgerStatistics.historyLength` pressure events, oldest
    /// first (the last one is `lastPressureEvent`).
    public var recentPressureEvents: [PressureEvent]
    /// How many events `recentPressureEvents` keeps.
    public static let historyLength = 16
    /// The longest reaction (delivery → memory released) so far.
    public var maxReactionNanoseconds: UInt64?
    /// The source being watched.
    public var source: PressureSourceStatus
    /// Whether the purger runs a background thread.
    public var hasThread: Bool
}
