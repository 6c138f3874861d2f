// The region API's numbers at their extremes (issue 18, class 4): every
// numeric parameter of VolatileRegion — the size, a range's bounds through
// every entry point, a purge unit's id — at 0, 1, −1, .min, .max and the
// overflow boundaries. Each row is a typed error or a documented outcome,
// never a trap, a hang or a spin, and a refused call changes nothing.
// Rows: 13 sizes + the largest size + 8 entry points × 12 ranges (a pair
// that is no Range — reversed, overflowing — goes through the (offset,
// length) entry points only) + 5 unit ids = 115.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Extremes, regions") struct RegionExtremesTable {
    /// (byteCount, what `VolatileRegion(byteCount:)` does): `nil` creates a
    /// region, else the error.
    static let sizes: [(byteCount: Int, error: VRangeError?)] = [
        (0, .invalidSize(0)),
        (1, nil),
        (-1, .invalidSize(-1)),
        (Int.min, .invalidSize(Int.min)),
        (Int.min + 1, .invalidSize(Int.min + 1)),
        (Int.max, .invalidSize(Int.max)),
        (Int.max - 4095, .invalidSize(Int.max - 4095)),  // rounds up to a page without overflow
        (Int.max - page + 1, .invalidSize(Int.max - page + 1)),
        (1 << 62, .invalidSize(1 << 62)),
        (1 << 50, .invalidSize(1 << 50)),
        (VolatileRegion.maxByteCount + 1, .invalidSize(VolatileRegion.maxByteCount + 1)),
        (page - 1, nil),
        (page + 1, nil),
    ]

    @Test(arguments: sizes.indices)
    func size(_ row: Int) {
        let (byteCount, expected) = Self.sizes[row]
        do {
            let r = try VolatileRegion(byteCount: byteCount)
            #expect(expected == nil, "\(byteCount): a region of \(r.size) bytes, not \(String(describing: expected))")
            #expect(r.size >= byteCount && r.size % page == 0 && r.size - byteCount < page)
        } catch {
            #expect(error == expected, "\(byteCount): threw \(error), expected \(String(describing: expected))")
        }
    }

    /// The largest size is not refused as too large: a region, or (when the
    /// kernel cannot map that much here) `.system(ENOMEM)`.
    @Test func theLargestSizeIsNotInvalid() {
        do {
            let r = try VolatileRegion(byteCount: VolatileRegion.maxByteCount)
            #expect(r.size == VolatileRegion.maxByteCount)
        } catch .system(let e) {
            #expect(e.errno == ENOMEM, "\(e)")
        } catch {
            Issue.record("\(VolatileRegion.maxByteCount) bytes: \(error)")
        }
    }

    enum Entry: String, CaseIterable, Sendable, CustomStringConvertible {
        case markVolatile, markNonVolatile, purge, pageStates, status, withVolatileAccess, pageOut
        case markVolatileOffsetLength  // markVolatile(offset:length:) and markNonVolatile(offset:length:)
        var description: String { rawValue }
    }

    /// (offset, length, the error) for a region of 8 pages: 12 rows.
    static let size8 = 8 * page
    static let ranges: [(offset: Int, length: Int, error: VRangeError)] = [
        (0, 0, .emptyRange(offset: 0)),
        (page, -page, .reversedRange(offset: page, length: -page)),
        (0, Int.min, .reversedRange(offset: 0, length: Int.min)),
        (Int.min, Int.max, .outOfBounds(offset: Int.min, length: Int.max, size: size8)),
        (Int.min, page, .outOfBounds(offset: Int.min, length: page, size: size8)),
        (-page, page, .outOfBounds(offset: -page, length: page, size: size8)),
        (0, Int.max, .outOfBounds(offset: 0, length: Int.max, size: size8)),
        (Int.max - 2 * page + 1, page, .outOfBounds(offset: Int.max - 2 * page + 1, length: page, size: size8)),
        (Int.max - page + 1, page, .overflowingRange(offset: Int.max - page + 1, length: page)),
        (Int.max - page + 1, 2 * page, .overflowingRange(offset: Int.max - page + 1, length: 2 * page)),
        (size8, page, .outOfBounds(offset: size8, length: page, size: size8)),
        (1, page, .misalignedRange(offset: 1, length: page, pageSize: page)),
    ]

    @Test(arguments: Entry.allCases, ranges.indices)
    func range(_ entry: Entry, _ row: Int) throws {
        let (offset, length, error) = Self.ranges[row]
        let r = try VolatileRegion(byteCount: Self.size8)
        for p in 0..<8 { fill(r, page: p, tag: UInt8(p + 1)) }
        try r.markVolatile(bytes(2..<4))
        try r.purge(bytes(3..<4))
        let before = try r.pageStates(0..<Self.size8)
        // A Range exists only for a pair whose end does not overflow and is
        // not below its start; the wrapping length of others is still tried
        // through the (offset, length) entry points.
        let (end, overflow) = offset.addingReportingOverflow(length)
        let asRange: Range<Int>? = !overflow && end >= offset ? offset..<end : nil
        switch entry {
        case .markVolatileOffsetLength:
            #expect(throws: error) { try r.markVolatile(offset: offset, length: length) }
            #expect(throws: error) { try r.markNonVolatile(offset: offset, length: length) }
        default:
            guard let range = asRange else { return }  // not a Range: nothing to pass
            #expect(throws: error) {
                switch entry {
                case .markVolatile: try r.markVolatile(range)
                case .markNonVolatile: _ = try r.markNonVolatile(range)
                case .purge: _ = try r.purge(range)
                case .pageStates: _ = try r.pageStates(range)
                case .status: _ = try r.status(range)
                case .withVolatileAccess: _ = try r.withVolatileAccess(range) { _ in Issue.record("body ran") }
                case .pageOut: try r.pageOut(range)
                case .markVolatileOffsetLength: break
                }
            }
        }
        #expect(try r.pageStates(0..<Self.size8) == before, "\(entry) \(offset) \(length): the states changed")
        for p in 0..<8 where p != 3 { #expect(holds(r, page: p, tag: UInt8(p + 1)), "\(entry): page \(p) changed") }
    }

    /// A region is one purge unit, id 0: any other id purges nothing.
    @Test(arguments: [Int.min, -1, 0, 1, Int.max])
    func purgeUnit(_ id: Int) throws {
        let r = try VolatileRegion(byteCount: 2 * page)
        fill(r, page: 0, tag: 1)
        try r.markVolatile(0..<page)
        #expect(r.purge(unit: id) == (id == 0 ? page : 0), "unit \(id)")
        #expect(try r.pageStates(0..<page) == [id == 0 ? .purged : .volatile], "unit \(id)")
    }
}
