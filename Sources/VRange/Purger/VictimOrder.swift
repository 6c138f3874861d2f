// The purger's policy as a pure function: in which order purge units go.

enum VictimOrder {
    /// Whether `a` is purged before `b`: lower class first; within a class
    /// the least recently used (smallest recency stamp) first; on a tie the
    /// larger first (fewer purges release the bytes).
    static func precedes(_ a: PurgeUnit, _ b: PurgeUnit) -> Bool {
        if a.priority != b.priority { return a.priority < b.priority }
        if a.lastUsed != b.lastUsed { return a.lastUsed < b.lastUsed }
        return a.volatileBytes > b.volatileBytes
    }

    /// `candidates` in purge order; equal ones keep their given order
    /// (registration order), so that the order is deterministic.
    static func sorted<T>(_ candidates: [T], unit: (T) -> PurgeUnit) -> [T] {
        candidates.enumerated().sorted { x, y in
            let a = unit(x.element), b = unit(y.element)
            if precedes(a, b) { return true }
            if precedes(b, a) { return false }
            return x.offset < y.offset
        }.map(\.element)
    }
}
