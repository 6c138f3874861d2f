// /proc/meminfo: MemTotal and MemAvailable, the last-resort pressure source.

struct MemInfo: Sendable, Equatable {
    /// MemTotal, in bytes.
    var total: UInt64
    /// MemAvailable, in bytes: what can be allocated without swapping
    /// (free memory plus reclaimable cache).
    var available: UInt64

    /// Parses the contents of /proc/meminfo.
    ///
    /// - Throws: `.malformedFile` for a malformed line, a missing MemTotal or
    ///   MemAvailable (Linux < 3.14), a zero total, or available > total.
    static func parse(_ bytes: [UInt8], path: String = "/proc/meminfo") throws(VRangeError) -> MemInfo {
        let values = try KeyValueFormat.parse(bytes, path: path, colon: true)
        let total = try KeyValueFormat.require(values, "MemTotal", path: path)
        let available = try KeyValueFormat.require(values, "MemAvailable", path: path)
        if total == 0 { throw .malformedFile(path: path, reason: "MemTotal is 0") }
        if available > total { throw .malformedFile(path: path, reason: "MemAvailable exceeds MemTotal") }
        return MemInfo(total: total, available: available)
    }
}
