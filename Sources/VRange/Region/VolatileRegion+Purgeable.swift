// VolatileRegion as a purge target: one unit, the whole region.

extension VolatileRegion: PurgeableMemory {
    /// One unit (id 0): the region's intact volatile bytes, its class and the
    /// recency stamp of its last markVolatile. Nothing when it has none or is
    /// closed.
    public func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        guard let status = try? status(), status.volatileBytes > 0 else { return }
        body(PurgeUnit(
            id: 0, priority: purgePriority,
            lastUsed: lastMarkedVolatile.load(ordering: .relaxed),
            volatileBytes: status.volatileBytes))
    }

    /// Purges every volatile page of the region (unit 0; any other id is
    /// no unit of a region and purges nothing); returns the bytes released.
    public func purge(unit id: Int) -> Int {
        id == 0 ? (try? purgeAll()) ?? 0 : 0
    }
}
