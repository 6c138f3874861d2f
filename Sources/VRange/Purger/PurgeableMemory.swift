// The one protocol a Purger talks to: anonymous regions, shared files and the
// volatile allocator all present their volatile memory as purge units, each
// with a priority class and a recency stamp, and purge a unit on request.
import CVRange

/// How readily a purger takes memory: lower classes are purged first (as
/// Windows' offer priorities and Apple's volatile groups).
public enum PurgePriority: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    /// Purged first: cheap to rebuild.
    case veryLow = 0
    case low = 1
    case belowNormal = 2
    /// The default: purged last.
    case normal = 3

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .veryLow: "very low"
        case .low: "low"
        case .belowNormal: "below normal"
        case .normal: "normal"
        }
    }
}

/// One separately purgeable piece of a `PurgeableMemory` (a region, a file,
/// one buffer of an allocator), with what a purger orders victims by.
public struct PurgeUnit: Sendable, Equatable {
    /// Opaque to the purger; handed back to `PurgeableMemory.purge(unit:)`.
    public var id: Int
    /// Its class: lower classes go first.
    public var priority: PurgePriority
    /// `RecencyClock.now` when it was last marked volatile: older goes first.
    public var lastUsed: UInt64
    /// Volatile bytes still resident: what purging it would release now.
    public var volatileBytes: Int

    public init(id: Int, priority: PurgePriority, lastUsed: UInt64, volatileBytes: Int) {
        self.id = id
        self.priority = priority
        self.lastUsed = lastUsed
        self.volatileBytes = volatileBytes
    }
}

/// Memory whose volatile parts a purger may discard. Implementations must be
/// safe to call from the purger's thread while other threads use them.
public protocol PurgeableMemory: AnyObject, Sendable {
    /// Calls `body` with each unit that has volatile bytes (a snapshot).
    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void)
    /// Purges the volatile pages of unit `id` now. Returns the bytes
    /// released (0 if they were marked non-volatile meanwhile, or if the
    /// memory was closed).
    func purge(unit id: Int) -> Int
}

/// A coarse, global recency clock: a counter that marks read and store
/// (one relaxed load, no syscall) and that a purger advances. Only the order
/// of stamps means anything.
public enum RecencyClock {
    /// The current stamp.
    @inlinable @inline(__always)
    public static var now: UInt64 { vr_recency_now() }

    /// Moves the clock on: what is stamped after this is newer than
    /// everything stamped before. Returns the new stamp.
    @discardableResult
    public static func advance() -> UInt64 {
        vr_recency_advance()
    }
}
