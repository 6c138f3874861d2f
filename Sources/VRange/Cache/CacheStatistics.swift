// What a PurgeableCache counts: lookups by outcome, rebuilds and their time,
// evictions, and how many of the stored bytes are still resident.

/// A snapshot of a `PurgeableCache`'s counters (since it was made) and of
/// its contents (now).
public struct CacheStatistics: Sendable, Equatable {
    /// Lookups that found the value intact.
    public var hits = 0
    /// Lookups of a key the cache did not hold.
    public var misses = 0
    /// Lookups that found the entry purged: it was dropped (a miss too, of
    /// the kind a purgeable cache has and a plain one does not).
    public var purgedMisses = 0
    /// Rebuild closures run, and how many of them threw.
    public var rebuilds = 0
    public var rebuildFailures = 0
    /// Total time spent in rebuild closures.
    public var rebuildTime = Duration.zero
    /// Requests that waited for a rebuild already in flight instead of
    /// running their own (single flight).
    public var coalescedRequests = 0
    /// Entries dropped to stay within the cost limit.
    public var evictions = 0
    /// Entries stored now, and their total cost (exact up to Int.max, then
    /// Int.max: costs add up saturating, never trapping).
    public var entries = 0
    public var totalCost = 0
    /// Bytes of stored entries whose contents are intact, and of those
    /// purged but not yet looked up (they are dropped at their next lookup).
    public var residentBytes = 0
    public var purgedBytes = 0

    public init() {}

    /// All lookups: hits, misses and purged misses (saturating at Int.max).
    public var lookups: Int { saturatingSum(saturatingSum(hits, misses), purgedMisses) }
    /// Hits per lookup, 0 when there was none.
    public var hitRatio: Double { lookups == 0 ? 0 : Double(hits) / Double(lookups) }

    /// Adds a shard's counters. Every sum saturates at Int.max (costs are
    /// the caller's numbers: entries of cost Int.max add up to Int.max).
    @usableFromInline
    mutating func add(_ o: CacheStatistics) {
        hits = saturatingSum(hits, o.hits); misses = saturatingSum(misses, o.misses)
        purgedMisses = saturatingSum(purgedMisses, o.purgedMisses)
        rebuilds = saturatingSum(rebuilds, o.rebuilds); rebuildFailures = saturatingSum(rebuildFailures, o.rebuildFailures)
        rebuildTime += o.rebuildTime
        coalescedRequests = saturatingSum(coalescedRequests, o.coalescedRequests)
        evictions = saturatingSum(evictions, o.evictions)
        entries = saturatingSum(entries, o.entries); totalCost = saturatingSum(totalCost, o.totalCost)
        residentBytes = saturatingSum(residentBytes, o.residentBytes); purgedBytes = saturatingSum(purgedBytes, o.purgedBytes)
    }
}

/// `a + b`, clamped to Int's range instead of trapping.
@inlinable
func saturatingSum(_ a: Int, _ b: Int) -> Int {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? (b > 0 ? .max : .min) : sum
}
