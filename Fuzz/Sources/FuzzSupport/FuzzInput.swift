// Decoding a fuzzer's input: a cursor over its bytes that never fails (past
// the end every read is zero), and hostile integers for sizes, offsets and
// lengths: mostly valid page-aligned values, often the edges (0, -1, the
// size, one page past it, Int.min/Int.max, off by one byte).

/// A cursor over the fuzzer's input.
public struct FuzzInput {
    let bytes: UnsafeBufferPointer<UInt8>
    public private(set) var position = 0

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        bytes = UnsafeBufferPointer(start: data, count: data == nil ? 0 : size)
    }

    /// Whether every byte was consumed.
    public var isEmpty: Bool { position >= bytes.count }
    /// Bytes left.
    public var remaining: Int { max(bytes.count - position, 0) }

    public mutating func u8() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    public mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    public mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    public mutating func bool() -> Bool { u8() & 1 == 1 }

    /// A value in `0..<bound` (bound > 0).
    public mutating func below(_ bound: Int) -> Int { Int(u16()) % bound }

    /// Up to `count` of the next bytes.
    public mutating func take(_ count: Int) -> [UInt8] {
        let n = min(count, remaining)
        defer { position += n }
        return Array(bytes[position..<(position + n)])
    }

    /// A byte offset or length for a region of `size` bytes with pages of
    /// `pageSize`: usually a whole number of pages within the size, often an
    /// edge or a hostile value.
    public mutating func offsetOrLength(size: Int, pageSize: Int) -> Int {
        let pages = max(size / pageSize, 1)
        let kind = u8()
        switch kind % 16 {
        case 0: return 0
        case 1: return size
        case 2: return -pageSize
        case 3: return size + pageSize
        case 4: return Int.max
        case 5: return Int.min
        case 6: return Int.max - pageSize + 1
        case 7: return below(pages + 1) * pageSize + (kind & 0x10 != 0 ? 1 : -1)  // misaligned by a byte
        case 8: return -Int(u16()) * pageSize
        case 9: return Int(truncatingIfNeeded: u64())
        default: return below(pages + 1) * pageSize
        }
    }

    /// An offset and a length: mostly a valid range, sometimes not.
    public mutating func offsetAndLength(size: Int, pageSize: Int) -> (offset: Int, length: Int) {
        let pages = max(size / pageSize, 1)
        if u8() & 3 != 0 {
            // A valid range, as most callers make.
            let first = below(pages)
            let count = 1 + below(pages - first)
            return (first * pageSize, count * pageSize)
        }
        return (offsetOrLength(size: size, pageSize: pageSize), offsetOrLength(size: size, pageSize: pageSize))
    }

    /// A `Range` (lower ≤ upper, as Swift requires): mostly valid, sometimes
    /// empty, out of bounds, misaligned, or wider than `Int` can count.
    public mutating func range(size: Int, pageSize: Int) -> Range<Int> {
        let (offset, length) = offsetAndLength(size: size, pageSize: pageSize)
        let (end, overflow) = offset.addingReportingOverflow(length)
        if length >= 0 && !overflow { return offset..<end }
        switch u8() % 4 {
        case 0: return Int.min..<Int.max
        case 1: return Int.min..<size
        case 2: return -pageSize..<Int.max
        default: return min(offset, end)..<max(offset, end)
        }
    }
}

/// The length the library takes from a `Range`: its count, wrapping when
/// it does not fit in an `Int` (then negative: a reversed range).
public func wrappedLength(_ r: Range<Int>) -> Int { r.upperBound &- r.lowerBound }
