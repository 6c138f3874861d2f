// Numbers at their extremes for shared files (issue 18, class 4; DESIGN.md
// §9): every public numeric parameter of VolatileFile and FileMapping —
// sizes (and so page counts), mapper-slot counts, ranges, offsets and
// lengths, mapper counts, descriptors — at 0, 1, −1, .min, .max and the
// overflow boundaries: a typed error or a documented clamp, never a trap.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Extremes table: shared files") struct ExtremesTableFile {
    /// What a row must give.
    enum Expected: Sendable, CustomStringConvertible {
        case ok
        case error(VRangeError)
        case systemErrno(Int32)

        func admits(_ r: Result<Int, VRangeError>) -> Bool {
            switch (self, r) {
            case (.ok, .success): return true
            case (.error(let e), .failure(let got)): return e == got
            case (.systemErrno(let n), .failure(.system(let e))): return e.errno == n
            default: return false
            }
        }

        var description: String {
            switch self {
            case .ok: "ok"
            case .error(let e): "\(e)"
            case .systemErrno(let n): "system errno \(n)"
            }
        }
    }

    struct Row: CustomStringConvertible, Sendable {
        let name: String
        let expected: Expected
        let run: @Sendable () throws(VRangeError) -> Int
        var description: String { name }
    }

    static let size = 4 * page

    /// Ranges and what the range checks say of them in a 4-page object (the
    /// order of PageGeometry.pages: empty, reversed, overflowing, out of
    /// bounds, misaligned).
    static let ranges: [(String, Range<Int>, Expected)] = [
        ("0..<0", 0..<0, .error(.emptyRange(offset: 0))),
        ("0..<1", 0..<1, .error(.misalignedRange(offset: 0, length: 1, pageSize: page))),
        ("-1..<0", -1..<0, .error(.outOfBounds(offset: -1, length: 1, size: size))),
        (".min..<0", Int.min..<0, .error(.reversedRange(offset: .min, length: .min))),
        ("0..<.max", 0..<Int.max, .error(.outOfBounds(offset: 0, length: .max, size: size))),
        ("(.max-1)..<.max", (Int.max - 1)..<Int.max, .error(.outOfBounds(offset: .max - 1, length: 1, size: size))),
        (".min..<.max", Int.min..<Int.max, .error(.reversedRange(offset: .min, length: -1))),
        ("0..<5 pages", 0..<(5 * page), .error(.outOfBounds(offset: 0, length: 5 * page, size: size))),
        ("page..<2 pages", page..<(2 * page), .ok),
    ]

    /// (offset, length) pairs for the `offset:length:` forms.
    static let pairs: [(String, Int, Int, Expected)] = [
        ("(0, 0)", 0, 0, .error(.emptyRange(offset: 0))),
        ("(0, 1)", 0, 1, .error(.misalignedRange(offset: 0, length: 1, pageSize: page))),
        ("(-1, page)", -1, page, .error(.outOfBounds(offset: -1, length: page, size: size))),
        ("(.min, page)", .min, page, .error(.outOfBounds(offset: .min, length: page, size: size))),
        ("(.max, page)", .max, page, .error(.overflowingRange(offset: .max, length: page))),
        ("(0, .max)", 0, .max, .error(.outOfBounds(offset: 0, length: .max, size: size))),
        ("(0, -1)", 0, -1, .error(.reversedRange(offset: 0, length: -1))),
        ("(0, .min)", 0, .min, .error(.reversedRange(offset: 0, length: .min))),
        ("(page, .min)", page, .min, .error(.reversedRange(offset: page, length: .min))),
        ("(.max, .max)", .max, .max, .error(.overflowingRange(offset: .max, length: .max))),
        ("(page, page)", page, page, .ok),
    ]

    static func file() throws(VRangeError) -> VolatileFile { try VolatileFile(byteCount: size) }

    static let byteCounts: [(String, Int, Expected)] = [
        ("0", 0, .error(.invalidSize(0))),
        ("1", 1, .ok),
        ("-1", -1, .error(.invalidSize(-1))),
        (".min", .min, .error(.invalidSize(.min))),
        (".max", .max, .error(.invalidSize(.max))),
        (".max - (page - 1)", .max - (page - 1), .error(.invalidSize(.max - (page - 1)))),
        ("maxPageCount + 1 pages", (SidecarLayout.maxPageCount + 1) * page, .error(.invalidSize((SidecarLayout.maxPageCount + 1) * page))),
    ]

    static let slotCounts: [(String, Int, Expected)] = [
        ("0", 0, .error(.unsupported("maxMappers must be within 1...1024"))),
        ("1", 1, .ok),
        ("-1", -1, .error(.unsupported("maxMappers must be within 1...1024"))),
        (".min", .min, .error(.unsupported("maxMappers must be within 1...1024"))),
        (".max", .max, .error(.unsupported("maxMappers must be within 1...1024"))),
        ("1024", 1024, .ok),
        ("1025", 1025, .error(.unsupported("maxMappers must be within 1...1024"))),
    ]

    static let descriptors: [(String, Int32)] = [("-1", -1), ("Int32.min", .min), ("Int32.max", .max)]

    static let rows: [Row] = {
        var rows: [Row] = []
        for (n, v, e) in byteCounts {
            rows.append(Row(name: "VolatileFile(byteCount: \(n))", expected: e) { () throws(VRangeError) in
                try VolatileFile(byteCount: v).size
            })
        }
        for (n, v, e) in slotCounts {
            rows.append(Row(name: "Options(maxMappers: \(n))", expected: e) { () throws(VRangeError) in
                try VolatileFile(byteCount: page, options: .init(maxMappers: v)).maxMappers
            })
        }
        for (n, r, e) in ranges {
            rows.append(Row(name: "file.markVolatile(\(n))", expected: e) { () throws(VRangeError) in try file().markVolatile(r); return 0 })
            rows.append(Row(name: "file.markNonVolatile(\(n))", expected: e) { () throws(VRangeError) in try file().markNonVolatile(r).range.count })
            rows.append(Row(name: "file.purge(\(n))", expected: e) { () throws(VRangeError) in try file().purge(r) })
            rows.append(Row(name: "file.status(\(n))", expected: e) { () throws(VRangeError) in try file().status(r).bytes })
            rows.append(Row(name: "file.map(\(n))", expected: e) { () throws(VRangeError) in
                let m = try file().map(r)
                defer { m.close() }
                return m.size
            })
            rows.append(Row(name: "mapping.markVolatile(\(n))", expected: e) { () throws(VRangeError) in try file().map().markVolatile(r); return 0 })
            rows.append(Row(name: "mapping.markNonVolatile(\(n))", expected: e) { () throws(VRangeError) in try file().map().markNonVolatile(r).range.count })
            rows.append(Row(name: "mapping.status(\(n))", expected: e) { () throws(VRangeError) in try file().map().status(r).bytes })
            rows.append(Row(name: "mapping.withVolatileAccess(\(n))", expected: e) { () throws(VRangeError) in
                _ = try file().map().withVolatileAccess(r) { $0.count }
                return 0
            })
        }
        for (n, o, l, e) in pairs {
            rows.append(Row(name: "mapping.markVolatile(offset:length: \(n))", expected: e) { () throws(VRangeError) in
                try file().map().markVolatile(offset: o, length: l); return 0
            })
            rows.append(Row(name: "mapping.markNonVolatile(offset:length: \(n))", expected: e) { () throws(VRangeError) in
                try file().map().markNonVolatile(offset: o, length: l).range.count
            })
        }
        for (n, fd) in descriptors {
            rows.append(Row(name: "file.send(over: \(n))", expected: .systemErrno(EBADF)) { () throws(VRangeError) in
                try file().send(over: fd); return 0
            })
            rows.append(Row(name: "VolatileFile(receivingFrom: \(n))", expected: .systemErrno(EBADF)) { () throws(VRangeError) in
                try VolatileFile(receivingFrom: fd).size
            })
            rows.append(Row(name: "VolatileFile(adopting: (\(n), \(n)))", expected: .error(.invalidSharedFile(.badDescriptor(.data, errno: EBADF)))) {
                () throws(VRangeError) in try VolatileFile(adopting: SharedFileDescriptors(data: fd, sidecar: fd)).size
            })
        }
        return rows
    }()

    /// 7 sizes + 7 slot counts + 9 ranges × 9 range operations + 11 pairs ×
    /// 2 offset/length operations + 3 descriptors × 3 descriptor operations.
    @Test func rowCount() { #expect(Self.rows.count == 7 + 7 + 81 + 22 + 9) }

    @Test(arguments: rows)
    func extremeGivesATypedErrorOrWorks(_ row: Row) {
        let got: Result<Int, VRangeError>
        do throws(VRangeError) { got = .success(try row.run()) } catch { got = .failure(error) }
        #expect(row.expected.admits(got), "\(row.name): expected \(row.expected), got \(got)")
    }

    /// `metadataBytes(mappers:)` clamps its argument to 0...maxMappers.
    @Test(arguments: [0, 1, -1, Int.min, Int.max, 8, 9])
    func metadataBytesClamps(_ mappers: Int) throws {
        let f = try VolatileFile(byteCount: 64 * page, options: .init(maxMappers: 8))
        let clamped = min(max(mappers, 0), 8)
        #expect(f.metadataBytes(mappers: mappers) == f.metadataBytes(mappers: clamped))
        #expect(f.metadataBytes(mappers: mappers) >= f.metadataBytes(mappers: 0))
        #expect(f.metadataBytes(mappers: mappers) <= f.sidecarBytes)
    }
}
