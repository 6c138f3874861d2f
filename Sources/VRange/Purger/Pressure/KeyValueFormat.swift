// Parsing of the "key value" files of procfs and cgroupfs (memory.stat,
// memory.events, /proc/meminfo), separated from reading them so that tests
// can feed real and malformed contents alike.

enum KeyValueFormat {
    /// Parses lines of `key value` (cgroup `memory.stat`, `memory.events`)
    /// or, with `colon`, `Key:  value [kB]` (`/proc/meminfo`; kB values are
    /// returned in bytes). Blank lines are skipped.
    ///
    /// - Parameter path: names the file in errors.
    /// - Throws: `.malformedFile` for a line without a value, a value that is
    ///   not a non-negative decimal integer, a unit other than kB, an
    ///   overflowing value, or text that is not UTF-8.
    static func parse(_ bytes: [UInt8], path: String, colon: Bool = false) throws(VRangeError) -> [String: UInt64] {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .malformedFile(path: path, reason: "not UTF-8 text")
        }
        var out: [String: UInt64] = [:]
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.isEmpty { continue }
            func fail(_ reason: String) -> VRangeError {
                .malformedFile(path: path, reason: "line \(n + 1) (\"\(line.prefix(60))\"): \(reason)")
            }
            var key = Substring(fields[0])
            if colon {
                guard key.hasSuffix(":") else { throw fail("no ':' after the key") }
                key = key.dropLast()
            }
            guard !key.isEmpty else { throw fail("empty key") }
            guard fields.count >= 2 else { throw fail("no value") }
            guard var value = UInt64(fields[1]) else { throw fail("value is not a non-negative integer") }
            if fields.count > 2 {
                guard colon, fields.count == 3, fields[2] == "kB" else { throw fail("unexpected text after the value") }
                let (scaled, overflow) = value.multipliedReportingOverflow(by: 1024)
                if overflow { throw fail("value overflows") }
                value = scaled
            }
            out[String(key)] = value
        }
        return out
    }

    /// Parses a file holding one non-negative integer, or `max` (cgroup v2
    /// `memory.max`/`memory.high`) when `maxMeansUnlimited`: nil then.
    ///
    /// - Throws: `.malformedFile` for anything else.
    static func parseValue(_ bytes: [UInt8], path: String, maxMeansUnlimited: Bool = false) throws(VRangeError) -> UInt64? {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .malformedFile(path: path, reason: "not UTF-8 text")
        }
        let trimmed = text.split(whereSeparator: { $0 == "\n" || $0 == " " })
        guard trimmed.count == 1 else {
            throw .malformedFile(path: path, reason: "expected one value, found \(trimmed.count) fields")
        }
        if maxMeansUnlimited && trimmed[0] == "max" { return nil }
        guard let v = UInt64(trimmed[0]) else {
            throw .malformedFile(path: path, reason: "\"\(trimmed[0].prefix(40))\" is not a non-negative integer")
        }
        return v
    }

    /// The value of `key`, or a `.malformedFile` error naming the missing key.
    static func require(_ values: [String: UInt64], _ key: String, path: String) throws(VRangeError) -> UInt64 {
        guard let v = values[key] else { throw .malformedFile(path: path, reason: "no \"\(key)\" line") }
        return v
    }
}
