// Class 4 of issue 18 for the allocator (defects 4c, 4e): every public
// numeric parameter of VolatileAllocator, its Options and PurgeableBuffer at
// 0, 1, −1, .min, .max and its overflow boundaries. Each row runs in its own
// process (an exit test), so that a trap is a failed row, not a lost suite:
// the outcome must be the documented one, a typed error or a clamp.
//
// Rows: allocate(byteCount:) 13, Options.segmentBytes 6, maxSegmentBytes 6,
// arenaCount 7, releaseDelay 7, releaseFreeMemory(olderThan:) 6,
// purge(unit:) 5, PurgeableBuffer.lock depth 1 = 51.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// What a row must end in.
enum ExtremeOutcome: Equatable, Sendable {
    case ok
    case invalidSize
    case invalidConfiguration
    /// Any other error (never expected here).
    case otherError
}

struct AllocExtremeRow: Sendable, CustomTestStringConvertible {
    let parameter: String
    let value: String
    let expected: ExtremeOutcome
    var testDescription: String { "\(parameter) = \(value) → \(expected)" }
    var key: String { "\(parameter)=\(value)" }
}

/// The machine's physical memory (a buffer larger than it is refused).
private var physicalBytes: Int { Int(sysconf(Int32(_SC_PHYS_PAGES))) * page }

private let sizeValues: [(String, Int, ExtremeOutcome)] = [
    ("0", 0, .invalidSize), ("1", 1, .ok), ("-1", -1, .invalidSize), (".min", .min, .invalidSize),
    (".max", .max, .invalidSize), ("Int.max - page + 1", .max - page + 1, .invalidSize),
    ("Int.max - page + 2 (rounding overflows)", .max - page + 2, .invalidSize),
    ("1 << 43", 1 << 43, .invalidSize), ("2^32 pages", (1 << 32) * page, .invalidSize),
    ("physical memory + 1 page", physicalBytes + page, .invalidSize),
    ("largest small + 1", 2049, .ok), ("4 MiB + 1", (4 << 20) + 1, .ok), ("65 MiB (a dedicated segment)", 65 << 20, .ok),
]

private let segmentValues: [(String, Int, ExtremeOutcome)] = [
    ("0", 0, .invalidSize), ("1", 1, .ok), ("-1", -1, .invalidSize), (".min", .min, .invalidSize),
    (".max", .max, .invalidSize), ("1 << 43", 1 << 43, .invalidSize),
]

private let arenaValues: [(String, Int, ExtremeOutcome)] = [
    ("0", 0, .invalidSize), ("1", 1, .ok), ("-1", -1, .invalidSize), (".min", .min, .invalidSize),
    (".max", .max, .invalidSize), ("4096", 4096, .ok), ("4097", 4097, .invalidSize),
]

private let durationValues: [(String, Duration)] = [
    ("zero", .zero), ("1 ns", .nanoseconds(1)), ("-1 ns", .nanoseconds(-1)), ("seconds(Int64.min)", .seconds(Int64.min)),
    ("seconds(Int64.max)", .seconds(Int64.max)),
    ("Int64.max s + 999 ms", Duration(secondsComponent: .max, attosecondsComponent: 999_000_000_000_000_000)),
    ("25 days", .seconds(25 * 86_400)),
]

private let unitValues: [(String, Int)] = [("0", 0), ("1", 1), ("-1", -1), (".min", .min), (".max", .max)]

let allocExtremeRows: [AllocExtremeRow] =
    sizeValues.map { AllocExtremeRow(parameter: "allocate(byteCount:)", value: $0.0, expected: $0.2) }
    + segmentValues.map { AllocExtremeRow(parameter: "Options.segmentBytes", value: $0.0, expected: $0.2) }
    + segmentValues.map { AllocExtremeRow(parameter: "Options.maxSegmentBytes", value: $0.0, expected: $0.0 == "1" ? .invalidSize : $0.2) }
    + arenaValues.map { AllocExtremeRow(parameter: "Options.arenaCount", value: $0.0, expected: $0.2) }
    + durationValues.map { AllocExtremeRow(parameter: "Options.releaseDelay", value: $0.0,
                                           expected: $0.1 < .zero ? .invalidConfiguration : .ok) }
    + durationValues.filter { $0.0 != "25 days" }.map { AllocExtremeRow(parameter: "releaseFreeMemory(olderThan:)", value: $0.0, expected: .ok) }
    + unitValues.map { AllocExtremeRow(parameter: "purge(unit:)", value: $0.0, expected: .ok) }
    + [AllocExtremeRow(parameter: "lock() depth", value: "maxLockDepth", expected: .ok)]

@Suite("Extremes table: allocator", .serialized) struct AllocatorExtremesTable {
    @Test("a numeric parameter at an extreme: a typed error or a documented clamp, never a trap", arguments: allocExtremeRows)
    func extreme(_ row: AllocExtremeRow) async {
        setenv("VRANGE_ALLOC_EXTREME_ROW", row.key, 1)
        let label = "allocextreme-\(abs(row.key.hashValue))"
        setenv("VRANGE_ALLOC_EXTREME_LABEL", label, 1)
        let out = await ChildLog.capture(label, prefix: row.testDescription) {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect(String(cString: getenv("VRANGE_ALLOC_EXTREME_LABEL")))
                let key = String(cString: getenv("VRANGE_ALLOC_EXTREME_ROW"))
                let row = allocExtremeRows.first { $0.key == key }!
                let got = runAllocExtremeRow(row)
                ChildLog.say(got == row.expected ? "PASS: \(got)" : "FAIL: got \(got), expected \(row.expected)")
                exit(0)
            }
        }
        #expect(out.contains("PASS"), "\(row.testDescription): \(out)")
    }
}

private func outcome(_ body: () throws(VRangeError) -> Void) -> ExtremeOutcome {
    do {
        try body()
        return .ok
    } catch .invalidSize {
        return .invalidSize
    } catch .invalidConfiguration(let why) {
        ChildLog.say("invalidConfiguration: \(why)")
        return .invalidConfiguration
    } catch {
        ChildLog.say("unexpected error: \(error)")
        return .otherError
    }
}

/// Runs one row; its outcome (a trap ends the process: the row fails).
func runAllocExtremeRow(_ row: AllocExtremeRow) -> ExtremeOutcome {
    let quiet = VolatileAllocator.Options(releaseDelay: .seconds(600), arenaCount: 1)
    switch row.parameter {
    case "allocate(byteCount:)":
        let n = sizeValues.first { $0.0 == row.value }!.1
        return outcome { () throws(VRangeError) in
            let a = try VolatileAllocator(options: quiet)
            var b = try a.allocate(byteCount: n)
            b.withUnsafeMutableBytes { $0[$0.count - 1] = 1 }
            b.unlock()
            _ = b.lock()
        }
    case "Options.segmentBytes", "Options.maxSegmentBytes":
        let n = segmentValues.first { $0.0 == row.value }!.1
        return outcome { () throws(VRangeError) in
            var o = quiet
            if row.parameter == "Options.segmentBytes" {
                o.segmentBytes = n
                o.maxSegmentBytes = max(n, o.maxSegmentBytes)
            } else {
                o.maxSegmentBytes = n
            }
            let a = try VolatileAllocator(options: o)
            _ = try a.allocate(byteCount: 100)
        }
    case "Options.arenaCount":
        let n = arenaValues.first { $0.0 == row.value }!.1
        return outcome { () throws(VRangeError) in
            var o = quiet
            o.arenaCount = n
            let a = try VolatileAllocator(options: o)
            _ = try a.allocate(byteCount: 100)
        }
    case "Options.releaseDelay":
        let d = durationValues.first { $0.0 == row.value }!.1
        return outcome { () throws(VRangeError) in
            var o = quiet
            o.releaseDelay = d
            let a = try VolatileAllocator(options: o)
            for _ in 0..<3 {
                var b = try a.allocate(byteCount: 5 * page)
                b.unlock()
                b.free()
            }
            _ = a.releaseFreeMemory(olderThan: d)
        }
    case "releaseFreeMemory(olderThan:)":
        let d = durationValues.first { $0.0 == row.value }!.1
        return outcome { () throws(VRangeError) in
            let a = try VolatileAllocator(options: quiet)
            var b = try a.allocate(byteCount: 5 * page)
            b.unlock()
            b.free()
            let released = a.releaseFreeMemory(olderThan: d)
            if d > .seconds(1) && released != 0 { ChildLog.say("released \(released) bytes older than \(d)"); throw .invalidSize(released) }
        }
    case "purge(unit:)":
        let id = unitValues.first { $0.0 == row.value }!.1
        return outcome { () throws(VRangeError) in
            let a = try VolatileAllocator(options: quiet)
            var b = try a.allocate(byteCount: 5 * page)
            b.unlock()
            _ = a.purge(unit: id)
            _ = b.lock()
        }
    default:
        return outcome { () throws(VRangeError) in
            let a = try VolatileAllocator(options: quiet)
            var b = try a.allocate(byteCount: 100)
            for _ in 1..<PurgeableBuffer.maxLockDepth { b.lock() }
            for _ in 1..<PurgeableBuffer.maxLockDepth { b.unlock() }
        }
    }
}
