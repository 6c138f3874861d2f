// Helpers for the allocator and cache tests: byte patterns in buffers, a
// purge-everything purger, resident set size.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Byte `i` of the pattern of `tag`: never zero.
@inline(__always)
func patternByte(_ i: Int, _ tag: UInt8) -> UInt8 { UInt8(truncatingIfNeeded: i &* 131 &+ Int(tag)) | 1 }

/// Bytes checked or written per buffer: every byte up to 1 MiB, then a
/// sample (one a page, plus the last byte) so 256 MiB stays quick.
func sampleOffsets(_ count: Int) -> [Int] {
    if count <= 1 << 20 { return Array(0..<count) }
    return Array(stride(from: 0, to: count, by: 4096)) + [count - 1]
}

/// Writes the pattern of `tag` into a locked buffer.
func fill(_ b: inout PurgeableBuffer, tag: UInt8) {
    let offsets = sampleOffsets(b.count)
    b.withUnsafeMutableBytes { raw in for i in offsets { raw[i] = patternByte(i, tag) } }
}

/// The offsets of a locked buffer that do not hold `tag`'s pattern, at most
/// `limit` of them.
func mismatches(_ b: borrowing PurgeableBuffer, tag: UInt8, in ranges: [Range<Int>]? = nil, limit: Int = 4) -> [Int] {
    let offsets = sampleOffsets(b.count)
    return b.withUnsafeBytes { raw in
        var bad: [Int] = []
        for i in offsets where ranges.map({ $0.contains { $0.contains(i) } }) ?? true {
            if raw[i] != patternByte(i, tag) { bad.append(i); if bad.count == limit { break } }
        }
        return bad
    }
}

/// Whether every sampled byte of `ranges` of a locked buffer is zero.
func zeros(_ b: borrowing PurgeableBuffer, _ ranges: [Range<Int>]) -> Bool {
    let offsets = sampleOffsets(b.count)
    return b.withUnsafeBytes { raw in
        offsets.allSatisfy { i in !ranges.contains { $0.contains(i) } || raw[i] == 0 }
    }
}

/// After `lock()` returned `result`: purged ranges read zero and the rest
/// holds `tag`. Records an issue otherwise.
func expectTruthfulLock(_ b: borrowing PurgeableBuffer, _ result: PurgeableBuffer.LockResult, tag: UInt8,
                        _ context: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation) {
    let lost = result.purgedRanges
    if !zeros(b, lost) { Issue.record("\(context()): reported purged bytes are not zero", sourceLocation: sourceLocation) }
    var kept: [Range<Int>] = []
    var at = 0
    for r in lost { if r.lowerBound > at { kept.append(at..<r.lowerBound) }; at = r.upperBound }
    if at < b.count { kept.append(at..<b.count) }
    let bad = mismatches(b, tag: tag, in: kept)
    if !bad.isEmpty { Issue.record("\(context()): intact bytes changed at \(bad)", sourceLocation: sourceLocation) }
}

/// A purger in one line: purges every unit the allocator offers. Returns
/// the bytes released.
@discardableResult
func purgeEverything(_ a: VolatileAllocator) -> Int {
    var ids: [Int] = []
    a.forEachPurgeUnit { ids.append($0.id) }
    return ids.reduce(0) { $0 + a.purge(unit: $1) }
}

/// This process's resident set size in bytes (/proc/self/statm, field 2).
func residentBytes() -> Int {
    guard let f = fopen("/proc/self/statm", "r") else { return -1 }
    defer { fclose(f) }
    var buffer = [CChar](repeating: 0, count: 128)
    guard fgets(&buffer, 128, f) != nil else { return -1 }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let fields = line.split(separator: " ")
    guard fields.count >= 2, let pages = Int(fields[1]) else { return -1 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Mebibytes, for printing.
func mib(_ bytes: Int) -> String {
    let tenths = (bytes * 10) >> 20
    return "\(tenths / 10).\(abs(tenths % 10)) MiB"
}

/// `#expect` for conditions over `~Copyable` values, which the macro cannot
/// take apart (it copies the operands it shows).
func expect(_ condition: Bool, _ comment: @autoclosure () -> String = "",
            sourceLocation: SourceLocation = #_sourceLocation) {
    if !condition { Issue.record(Comment(rawValue: "expectation failed: " + comment()), sourceLocation: sourceLocation) }
}
