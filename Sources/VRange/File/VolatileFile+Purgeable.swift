// VolatileFile as a purge target: one unit, the whole file.

extension VolatileFile: PurgeableMemory {
    /// One unit (id 0): the bytes purgeable now, this process's class for
    /// the file and the recency stamp of its last volatile mark (through the
    /// file or one of its mappings). Nothing when none or closed.
    public func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        guard let bytes = try? withUse(.filePurgeUnits, { sidecar.purgeableCount(0..<pageCount, alive: AliveSlots(self)) << geometry.pageShift })
        else { return }
        guard bytes > 0 else { return }
        body(PurgeUnit(id: 0, priority: purgePriority,
                       lastUsed: lastMarkedVolatile.load(ordering: .relaxed), volatileBytes: bytes))
    }

    /// Purges every purgeable page; returns the bytes released.
    public func purge(unit id: Int) -> Int {
        (try? purgeAll()) ?? 0
    }
}
