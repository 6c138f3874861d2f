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
    /// Entries stored now, and their total cost.
    public var entries = 0
    public var totalCost = 0
    /// Bytes of stored entries whose contents are intact, and of those
    /// purged but not yet looked up (they are dropped at their next lookup).
    public var residentBytes = 0
    public var purgedBytes = 0

    public init() {}

    /// All lookups: hits, misses and purged misses.
    public var lookups: Int { hits + misses + purgedMisses }
    /// Hits per lookup, 0 when there was none.
    public var hitRatio: Double { lookups == 0 ? 0 : Double(hits) / Double(lookups) }

    @usableFromInline
    mutating func add(_ o: CacheStatistics) {
        hits += o.hits; misses += o.misses; purgedMisses += o.purgedMisses
        rebuilds += o.rebuilds; rebuildFailures += o.rebuildFailures; rebuildTime += o.rebuildTime
        coalescedRequests += o.coalescedRequests; evictions += o.evictions
        entries += o.entries; totalCost += o.totalCost
        residentBytes += o.residentBytes; purgedBytes += o.purgedBytes
    }
}
