// Pure level arithmetic shared by the polled sources: how much memory is
// left, as a fraction of what may be used, against two thresholds
// (Chromium's on Linux: moderate at ≤ 25 % available, critical at ≤ 15 %).

struct HeadroomThresholds: Sendable, Equatable {
    /// Available fraction at or below which memory pressure is moderate.
    var moderate: Double = 0.25
    /// Available fraction at or below which it is critical.
    var critical: Double = 0.15

    /// The level for `available` bytes out of `total`; nil when there is no
    /// pressure (or `total` is 0: nothing to measure against).
    func level(available: UInt64, total: UInt64) -> MemoryPressureLevel? {
        guard total > 0 else { return nil }
        let fraction = Double(available) / Double(total)
        if fraction <= critical { return .critical }
        if fraction <= moderate { return .moderate }
        return nil
    }

    /// The level of a memory cgroup with `limit`, `usage` charged of which
    /// `reclaimable` is inactive file cache (what reclaim takes first and
    /// cheaply): available = limit − usage + reclaimable, clamped to
    /// 0...limit.
    func level(limit: UInt64, usage: UInt64, reclaimable: UInt64) -> MemoryPressureLevel? {
        let free = limit > usage ? limit - usage : 0
        let available = min(limit, free &+ min(reclaimable, usage))
        return level(available: available, total: limit)
    }
}
