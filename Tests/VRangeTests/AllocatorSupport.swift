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

/// The step between bytes checked or written: every byte up to 1 MiB, then
/// one a page (plus the last byte), so that 256 MiB stays quick.
@inline(__always)
func sampleStep(_ count: Int) -> Int { count <= 1 << 20 ? 1 : 4096 }

/// Calls `body` with each sampled offset of `ranges` (whole buffer if nil).
@inline(__always)
func forEachSample(_ count: Int, in ranges: [Range<Int>]? = nil, _ body: (Int) -> Bool) {
    let step = sampleStep(count)
    for r in ranges ?? [0..<count] {
        var i = r.lowerBound
        while i < r.upperBound {
            if !body(i) { return }
            i += step
        }
        if step > 1 && r.upperBound > r.lowerBound && !body(r.upperBound - 1) { return }
    }
}

/// Writes the pattern of `tag` into a locked buffer.
func fill(_ b: inout PurgeableBuffer, tag: UInt8) {
    let count = b.count
    b.withUnsafeMutableBytes { raw in
        let p = raw.baseAddress!
        forEachSample(count) { i in p.storeBytes(of: patternByte(i, tag), toByteOffset: i, as: UInt8.self); return true }
    }
}

/// The offsets of a locked buffer that do not hold `tag`'s pattern, at most
/// `limit` of them.
func mismatches(_ b: borrowing PurgeableBuffer, tag: UInt8, in ranges: [Range<Int>]? = nil, limit: Int = 4) -> [Int] {
    let count = b.count
    return b.withUnsafeBytes { raw in
        let p = raw.baseAddress!
        var bad: [Int] = []
        forEachSample(count, in: ranges) { i in
            if p.load(fromByteOffset: i, as: UInt8.self) != patternByte(i, tag) { bad.append(i) }
            return bad.count < limit
        }
        return bad
    }
}

/// Whether every sampled byte of `ranges` of a locked buffer is zero.
func zeros(_ b: borrowing PurgeableBuffer, _ ranges: [Range<Int>]) -> Bool {
    let count = b.count
    return b.withUnsafeBytes { raw in
        let p = raw.baseAddress!
        var ok = true
        forEachSample(count, in: ranges) { i in
            ok = p.load(fromByteOffset: i, as: UInt8.self) == 0
            return ok
        }
        return ok
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
func processResidentBytes() -> Int {
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
