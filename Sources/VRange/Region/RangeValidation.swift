// Turns a caller's byte range into pages, or a typed error. Runs before any
// state changes: this is phase one of every two-phase operation.

/// Page geometry of a region: size, page size, and range validation.
@usableFromInline
struct PageGeometry: Sendable {
    @usableFromInline let size: Int
    @usableFromInline let pageSize: Int
    @usableFromInline let pageShift: Int
    var pageCount: Int { size >> pageShift }

    init(size: Int, pageSize: Int) {
        precondition(pageSize > 0 && pageSize & (pageSize - 1) == 0, "page size must be a power of two")
        self.size = size
        self.pageSize = pageSize
        self.pageShift = pageSize.trailingZeroBitCount
    }

    /// Rounds `byteCount` up to whole pages, or throws `.invalidSize`.
    static func roundedSize(_ byteCount: Int, pageSize: Int) throws(VRangeError) -> Int {
        guard byteCount > 0 else { throw .invalidSize(byteCount) }
        let (padded, overflow) = byteCount.addingReportingOverflow(pageSize - 1)
        guard !overflow else { throw .invalidSize(byteCount) }
        return padded & ~(pageSize - 1)
    }

    /// Whether `[offset, offset + length)` is a valid range of a region of
    /// `size` bytes: non-empty, within bounds (no overflow possible:
    /// `length <= size` first) and page-aligned. A handful of instructions,
    /// inlined into the mark fast paths; `pages(offset:length:)` says what is
    /// wrong otherwise. With a `size` of 0 no range is valid.
    @inlinable @inline(__always)
    func isValid(offset: Int, length: Int, size: Int) -> Bool {
        // 1 ≤ length ≤ size in one unsigned compare; then offset ≤ size −
        // length (a negative offset is a huge unsigned one); then alignment.
        UInt(bitPattern: length &- 1) < UInt(bitPattern: size)
            && UInt(bitPattern: offset) <= UInt(bitPattern: size &- length)
            && (offset | length) & (pageSize &- 1) == 0
    }

    /// The pages of `[offset, offset + length)`. Checks, in order: empty,
    /// reversed (negative length), overflowing, out of bounds, misaligned.
    func pages(offset: Int, length: Int) throws(VRangeError) -> Range<Int> {
        guard length != 0 else { throw .emptyRange(offset: offset) }
        guard length > 0 else { throw .reversedRange(offset: offset, length: length) }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow else { throw .overflowingRange(offset: offset, length: length) }
        guard offset >= 0, end <= size else {
            throw .outOfBounds(offset: offset, length: length, size: size)
        }
        guard (offset | length) & (pageSize - 1) == 0 else {
            throw .misalignedRange(offset: offset, length: length, pageSize: pageSize)
        }
        return (offset >> pageShift)..<(end >> pageShift)
    }

    /// The pages of `range`. Its length is taken wrapping, as the marks'
    /// fast paths take it: a `Range` too wide for `Int` to count (such as
    /// `Int.min..<Int.max`) has a negative length and is `.reversedRange`,
    /// never a trap.
    func pages(_ range: Range<Int>) throws(VRangeError) -> Range<Int> {
        try pages(offset: range.lowerBound, length: range.upperBound &- range.lowerBound)
    }

    func bytes(_ pages: Range<Int>) -> Range<Int> {
        (pages.lowerBound << pageShift)..<(pages.upperBound << pageShift)
    }
}
