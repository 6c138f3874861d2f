// The memory files of a cgroup, v2 (memory.events, memory.current,
// memory.high, memory.max, memory.stat) and v1 (memory.usage_in_bytes,
// memory.stat), parsed apart from reading them, and what they mean for
// pressure.

/// Counters of a cgroup v2 `memory.events`.
struct CgroupV2Events: Sendable, Equatable {
    /// Times usage went over memory.high (the cgroup was throttled).
    var high: UInt64
    /// Times usage hit memory.max (allocation failed or reclaim was forced).
    var max: UInt64
    /// OOM situations and OOM kills (0 when the kernel lacks the line).
    var oom: UInt64
    var oomKill: UInt64

    /// - Throws: `.malformedFile` when a line is malformed or `high`/`max`
    ///   is missing.
    static func parse(_ bytes: [UInt8], path: String) throws(VRangeError) -> CgroupV2Events {
        let v = try KeyValueFormat.parse(bytes, path: path)
        return CgroupV2Events(
            high: try KeyValueFormat.require(v, "high", path: path),
            max: try KeyValueFormat.require(v, "max", path: path),
            oom: v["oom"] ?? 0, oomKill: v["oom_kill"] ?? 0)
    }

    /// What changed since `earlier`: critical when the cgroup hit its
    /// memory.max or went OOM, moderate when it went over memory.high, nil
    /// when nothing moved.
    func level(since earlier: CgroupV2Events) -> MemoryPressureLevel? {
        if max > earlier.max || oom > earlier.oom || oomKill > earlier.oomKill { return .critical }
        if high > earlier.high { return .moderate }
        return nil
    }
}

/// A memory cgroup's usage against its limit, v1 or v2.
struct CgroupUsage: Sendable, Equatable {
    /// Bytes charged to the cgroup (memory.current / memory.usage_in_bytes).
    var usage: UInt64
    /// The effective limit in bytes (the lower of memory.high and memory.max;
    /// v1: hierarchical_memory_limit, which includes the ancestors'); nil
    /// when unlimited.
    var limit: UInt64?
    /// Inactive file cache, which reclaim takes first (memory.stat).
    var inactiveFile: UInt64

    /// The pressure its headroom means (nil: none, or no limit).
    func level(_ thresholds: HeadroomThresholds) -> MemoryPressureLevel? {
        guard let limit else { return nil }
        return thresholds.level(limit: limit, usage: usage, reclaimable: inactiveFile)
    }

    /// cgroup v2: the contents of memory.current, memory.high, memory.max
    /// and memory.stat of one directory (`dir` names them in errors).
    ///
    /// - Throws: `.malformedFile` for a malformed file or a memory.stat
    ///   without inactive_file.
    static func parseV2(
        current: [UInt8], high: [UInt8], max: [UInt8], stat: [UInt8], dir: String
    ) throws(VRangeError) -> CgroupUsage {
        let usage = try KeyValueFormat.parseValue(current, path: dir + "/memory.current") ?? 0
        let h = try KeyValueFormat.parseValue(high, path: dir + "/memory.high", maxMeansUnlimited: true)
        let m = try KeyValueFormat.parseValue(max, path: dir + "/memory.max", maxMeansUnlimited: true)
        let s = try KeyValueFormat.parse(stat, path: dir + "/memory.stat")
        let limit: UInt64? = switch (h, m) {
        case (nil, nil): nil
        case (let a?, nil): a
        case (nil, let b?): b
        case (let a?, let b?): Swift.min(a, b)
        }
        return CgroupUsage(
            usage: usage, limit: limit,
            inactiveFile: try KeyValueFormat.require(s, "inactive_file", path: dir + "/memory.stat"))
    }

    /// cgroup v1: memory.usage_in_bytes and memory.stat of one directory.
    /// A hierarchical_memory_limit at or above `physicalMemory` (the kernel
    /// shows "no limit" as 2^63 rounded down to a page) counts as no limit.
    ///
    /// - Throws: `.malformedFile` for a malformed file, or a memory.stat
    ///   without hierarchical_memory_limit or total_inactive_file.
    static func parseV1(usage: [UInt8], stat: [UInt8], physicalMemory: UInt64, dir: String) throws(VRangeError) -> CgroupUsage {
        let used = try KeyValueFormat.parseValue(usage, path: dir + "/memory.usage_in_bytes") ?? 0
        let s = try KeyValueFormat.parse(stat, path: dir + "/memory.stat")
        let limit = try KeyValueFormat.require(s, "hierarchical_memory_limit", path: dir + "/memory.stat")
        return CgroupUsage(
            usage: used, limit: limit >= physicalMemory ? nil : limit,
            inactiveFile: try KeyValueFormat.require(s, "total_inactive_file", path: dir + "/memory.stat"))
    }
}

/// The levels of cgroup v1 `memory.pressure_level` (vmpressure: medium at
/// ≥ 60 % of scanned pages left unreclaimed, critical at ≥ 95 %).
enum CgroupV1PressureLevel: String, Sendable, CaseIterable {
    /// Reclaim is running (the cgroup is at its limit, or the system short).
    case low
    case medium
    case critical
}
