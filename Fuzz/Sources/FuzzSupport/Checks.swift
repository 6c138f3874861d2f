// What a fuzz target asserts, and how it fails: a message on stderr, then
// abort(), which libFuzzer reports as a crash and saves the input for.
// Also the model of range validation (README "Semantics": empty, reversed,
// overflowing, out of bounds, misaligned, in that order) and page patterns.
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Reports a failed check and ends the process (libFuzzer keeps the input).
public func fuzzFail(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    let text = "FUZZ CHECK FAILED (\(file):\(line)): \(message)\n"
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    abort()
}

@inline(__always)
public func check(_ condition: Bool, _ message: @autoclosure () -> String,
                  file: StaticString = #fileID, line: UInt = #line) {
    if !condition { fuzzFail(message(), file: file, line: line) }
}

/// The error the documented checks give for `[offset, offset + length)` in
/// `size` bytes of `pageSize` pages, or nil when the range is valid.
public func expectedRangeError(offset: Int, length: Int, size: Int, pageSize: Int) -> VRangeError? {
    if length == 0 { return .emptyRange(offset: offset) }
    if length < 0 { return .reversedRange(offset: offset, length: length) }
    let (end, overflow) = offset.addingReportingOverflow(length)
    if overflow { return .overflowingRange(offset: offset, length: length) }
    if offset < 0 || end > size { return .outOfBounds(offset: offset, length: length, size: size) }
    if offset % pageSize != 0 || length % pageSize != 0 {
        return .misalignedRange(offset: offset, length: length, pageSize: pageSize)
    }
    return nil
}

/// Runs `body` and returns its error (nil when it did not throw).
public func thrown<T>(_ body: () throws(VRangeError) -> T) -> (value: T?, error: VRangeError?) {
    do { return (try body(), nil) } catch { return (nil, error) }
}

/// Fills a page with a pattern of `tag` (never all zero, different per
/// tag and per 8-byte word).
public func fillPage(_ base: UnsafeMutableRawPointer, pageSize: Int, tag: UInt64) {
    for i in stride(from: 0, to: pageSize, by: 8) {
        base.storeBytes(of: pattern(tag, i), toByteOffset: i, as: UInt64.self)
    }
}

/// The 8-byte word at byte `i` of a page filled with `tag`.
@inline(__always)
public func pattern(_ tag: UInt64, _ i: Int) -> UInt64 {
    (tag &* 0x9E37_79B9_7F4A_7C15 | 1) ^ UInt64(i) &* 0x0101_0101_0101_0101
}

/// What a page holds: 0 when all zero, `tag` when it holds tag's pattern,
/// nil when neither.
public func classify(_ base: UnsafeRawPointer, pageSize: Int, tag: UInt64) -> UInt64? {
    var isTag = true, isZero = true
    for i in stride(from: 0, to: pageSize, by: 8) {
        let v = base.load(fromByteOffset: i, as: UInt64.self)
        if v != pattern(tag, i) { isTag = false }
        if v != 0 { isZero = false }
        if !isTag && !isZero { return nil }
    }
    return isTag ? tag : 0
}

/// Byte ranges of the sorted page numbers in `pages`, as maximal runs.
public func byteRuns(_ pages: [Int], pageSize: Int) -> [Range<Int>] {
    var out: [Range<Int>] = []
    for p in pages {
        let r = (p * pageSize)..<((p + 1) * pageSize)
        if let last = out.last, last.upperBound == r.lowerBound {
            out[out.count - 1] = last.lowerBound..<r.upperBound
        } else {
            out.append(r)
        }
    }
    return out
}
