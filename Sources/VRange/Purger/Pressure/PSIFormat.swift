// The contents of a PSI file (/proc/pressure/memory, memory.pressure):
// "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and the same for "full".

struct PSIReading: Sendable, Equatable {
    /// Cumulative stall time in microseconds ("total=").
    var someTotal: UInt64
    /// nil when the file has no "full" line (the system-wide cpu file of
    /// older kernels; memory files always have one).
    var fullTotal: UInt64?
    /// avg10 of "some", in percent.
    var someAverage10: Double

    /// Parses a PSI file.
    ///
    /// - Throws: `.malformedFile` when the "some" line is missing, a line is
    ///   neither "some" nor "full", or a field is not `name=number`.
    static func parse(_ bytes: [UInt8], path: String) throws(VRangeError) -> PSIReading {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .malformedFile(path: path, reason: "not UTF-8 text")
        }
        var some: (total: UInt64, avg10: Double)?
        var full: UInt64?
        for line in text.split(separator: "\n") where !line.isEmpty {
            let fields = line.split(separator: " ")
            func fail(_ reason: String) -> VRangeError {
                .malformedFile(path: path, reason: "\"\(line.prefix(60))\": \(reason)")
            }
            var values: [Substring: Substring] = [:]
            for field in fields.dropFirst() {
                let kv = field.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard kv.count == 2, !kv[0].isEmpty else { throw fail("field \"\(field.prefix(30))\" is not name=value") }
                values[kv[0]] = kv[1]
            }
            guard let totalText = values["total"], let total = UInt64(totalText) else { throw fail("no integer total=") }
            guard let avgText = values["avg10"], let avg10 = Double(avgText), avg10 >= 0 else { throw fail("no avg10=") }
            switch fields[0] {
            case "some": some = (total, avg10)
            case "full": full = total
            default: throw fail("neither a \"some\" nor a \"full\" line")
            }
        }
        guard let some else { throw .malformedFile(path: path, reason: "no \"some\" line") }
        return PSIReading(someTotal: some.total, fullTotal: full, someAverage10: some.avg10)
    }
}
