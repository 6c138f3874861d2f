// Value types of the region API: options, results, status.

/// How a touch of a purged page becomes SIGBUS.
public enum FaultMechanism: Sendable, Equatable, CustomStringConvertible {
    /// userfaultfd when the kernel allows it, otherwise mprotect.
    case automatic
    /// userfaultfd in MISSING mode with UFFD_FEATURE_SIGBUS: resident pages
    /// cost nothing, a purged page is a missing page and faults in the kernel.
    case userfaultfd
    /// Purged pages are made PROT_NONE and the resulting SIGSEGV is turned
    /// into SIGBUS. Works everywhere; costs a VMA split per purged run.
    case mprotect

    public var description: String {
        switch self {
        case .automatic: "automatic"
        case .userfaultfd: "userfaultfd"
        case .mprotect: "mprotect"
        }
    }
}

extension VolatileRegion {
    /// How a region is created.
    public struct Options: Sendable, Equatable {
        /// How touching a purged page raises SIGBUS. Default `.automatic`.
        public var faultMechanism: FaultMechanism
        /// Kernel-driven purging: marking volatile also applies `MADV_FREE`,
        /// so the kernel may discard the pages under memory pressure with no
        /// monitor. Needs the userfaultfd mechanism (a reclaimed page is then
        /// a missing page). Default `false`.
        public var kernelDriven: Bool
        /// The region's class for a `Purger`: lower classes are purged
        /// first. Default `.normal`.
        public var purgePriority: PurgePriority

        public init(
            faultMechanism: FaultMechanism = .automatic, kernelDriven: Bool = false,
            purgePriority: PurgePriority = .normal
        ) {
            self.faultMechanism = faultMechanism
            self.kernelDriven = kernelDriven
            self.purgePriority = purgePriority
        }
    }
}

/// Whether a range survived while it was volatile.
public enum PurgeOutcome: Sendable, Equatable {
    /// No page of the range was purged: every byte is as it was.
    case intact
    /// At least one page was purged; those pages are now zero-filled.
    case purged
}

/// The answer of `markNonVolatile`: whether the range survived, and exactly
/// which pages did not.
public struct NonVolatileResult: Sendable, Equatable {
    /// The byte range that was marked non-volatile.
    public let range: Range<Int>
    /// nil when intact: the common case carries no array at all (no
    /// reference counting on the hot path).
    @usableFromInline let lost: [Range<Int>]?

    public init(range: Range<Int>, purgedRanges: [Range<Int>]) {
        self.range = range
        self.lost = purgedRanges.isEmpty ? nil : purgedRanges
    }

    /// An intact result.
    @inlinable @inline(__always)
    init(intact range: Range<Int>) {
        self.range = range
        self.lost = nil
    }

    /// The byte ranges (page-aligned, ascending, maximal) that had been purged
    /// and now read as zeros. Empty when the range is intact.
    public var purgedRanges: [Range<Int>] { lost ?? [] }
    /// `.purged` if any page of the range was purged, otherwise `.intact`.
    public var outcome: PurgeOutcome { lost == nil ? .intact : .purged }
    /// Whether any page was purged.
    public var wasPurged: Bool { lost != nil }
    /// How many bytes were lost.
    public var purgedBytes: Int { purgedRanges.reduce(0) { $0 + $1.count } }
}

/// The result of an optimistic access.
public enum VolatileAccess<Value> {
    /// No page of the range was purged before or during the access; `Value`
    /// is what the body returned from intact memory.
    case intact(Value)
    /// Some page of the range was purged before or during the access; the
    /// body's result (if it ran) was discarded.
    case purged

    /// The body's result when the memory was intact.
    public var value: Value? {
        if case .intact(let v) = self { return v }
        return nil
    }
}

extension VolatileAccess: Sendable where Value: Sendable {}
extension VolatileAccess: Equatable where Value: Equatable {}

/// A snapshot of a region's (or a range's) pages.
public struct RegionStatus: Sendable, Equatable {
    /// Bytes covered.
    public let bytes: Int
    /// Bytes marked volatile and still intact.
    public let volatileBytes: Int
    /// Bytes marked volatile that have been purged (by the library, or by the
    /// kernel in kernel-driven mode), including pages held by an operation in
    /// flight (a purge, or a kernel-driven mark).
    public let purgedBytes: Int
    /// Bytes marked non-volatile.
    public var nonVolatileBytes: Int { bytes - volatileBytes - purgedBytes }

    public init(bytes: Int, volatileBytes: Int, purgedBytes: Int) {
        self.bytes = bytes
        self.volatileBytes = volatileBytes
        self.purgedBytes = purgedBytes
    }
}
