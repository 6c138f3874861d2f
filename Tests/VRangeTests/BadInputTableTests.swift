// One table of bad input for the shared-file API (the region's own table is
// in RegionTests, the allocator's in AllocatorTests): every range error
// through every entry point of VolatileFile and FileMapping, every bad size
// and option of the initializers; each a typed error, and nothing changes
// (page states, marks, bytes).
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Bad input, shared files") struct BadInputTableTests {
    /// (offset, length, the error) for a space of `size` bytes.
    static func rangeCases(size: Int) -> [(offset: Int, length: Int, error: VRangeError)] {
        [
            (page, 0, .emptyRange(offset: page)),
            (2 * page, -page, .reversedRange(offset: 2 * page, length: -page)),
            (Int.min, Int.max, .outOfBounds(offset: Int.min, length: Int.max, size: size)),
            (Int.max - page + 1, 2 * page, .overflowingRange(offset: Int.max - page + 1, length: 2 * page)),
            (-page, 2 * page, .outOfBounds(offset: -page, length: 2 * page, size: size)),
            (size - page, 2 * page, .outOfBounds(offset: size - page, length: 2 * page, size: size)),
            (size, page, .outOfBounds(offset: size, length: page, size: size)),
            (1, page, .misalignedRange(offset: 1, length: page, pageSize: page)),
            (page, page + 1, .misalignedRange(offset: page, length: page + 1, pageSize: page)),
        ]
    }

    @Test func everyRangeErrorThroughEveryFileEntryPoint() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let m = try f.map()
        for p in 0..<8 { fill(m, page: p, tag: UInt8(p + 1)) }
        try f.markVolatile(bytes(0..<2))
        try m.markVolatile(bytes(4..<6))
        let snapshot = { () -> [UInt8] in
            (0..<8).flatMap { p in [f.sidecar.content.state(ofPage: p).rawValue, f.sidecar.fileMarks.state(ofPage: p)] }
        }
        let before = snapshot()
        var checked = 0
        for c in Self.rangeCases(size: f.size) {
            let range = c.offset..<max(c.offset, c.offset &+ max(c.length, 0))
            let wide = c.length < 0 || c.offset.addingReportingOverflow(c.length).overflow
            // Entry points taking (offset, length).
            #expect(throws: c.error) { try m.markVolatile(offset: c.offset, length: c.length) }
            #expect(throws: c.error) { try m.markNonVolatile(offset: c.offset, length: c.length) }
            checked += 2
            // Entry points taking a Range (only where the pair is one).
            if !wide && c.length > 0 {
                let r = c.offset..<(c.offset + c.length)
                #expect(throws: c.error) { try f.markVolatile(r) }
                #expect(throws: c.error) { try f.markNonVolatile(r) }
                #expect(throws: c.error) { try f.purge(r) }
                #expect(throws: c.error) { try f.status(r) }
                #expect(throws: c.error) { try m.markVolatile(r) }
                #expect(throws: c.error) { try m.markNonVolatile(r) }
                #expect(throws: c.error) { try m.status(r) }
                #expect(throws: c.error) { try m.withVolatileAccess(r) { _ in Issue.record("body ran") } }
                checked += 8
            }
            _ = range
            #expect(snapshot() == before, "state changed after \(c.error)")
        }
        // A Range too wide for Int to count.
        #expect(throws: VRangeError.reversedRange(offset: Int.min, length: Int.max &- Int.min)) { try f.markVolatile(Int.min..<Int.max) }
        #expect(throws: VRangeError.reversedRange(offset: Int.min, length: Int.max &- Int.min)) { try m.markNonVolatile(Int.min..<Int.max) }
        #expect(throws: VRangeError.emptyRange(offset: 0)) { try f.markVolatile(0..<0) }
        #expect(snapshot() == before)
        for p in 0..<8 { #expect(look(m, page: p, tag: UInt8(p + 1)) == "tag", "page \(p)") }
        print("[bad input] \(checked + 3) shared-file calls with bad ranges: each a typed error, nothing changed")
    }

    @Test func badSizesAndOptionsOfTheInitializers() throws {
        for size in [0, -1, Int.min, Int.max] {
            #expect(throws: VRangeError.invalidSize(size)) { try VolatileFile(byteCount: size) }
            #expect(throws: VRangeError.invalidSize(size)) { try VolatileRegion(byteCount: size) }
        }
        for mappers in [0, -1, SidecarLayout.maxSlots + 1, Int.max] {
            #expect(throws: VRangeError.unsupported("maxMappers must be within 1...\(SidecarLayout.maxSlots)")) {
                try VolatileFile(byteCount: page, options: .init(maxMappers: mappers))
            }
        }
        // Descriptors that are not a VolatileFile's pair.
        #expect(throws: (any Error).self) { try VolatileFile(adopting: SharedFileDescriptors(data: -1, sidecar: -1)) }
        let devnull = open("/dev/null", O_RDWR)
        defer { close(devnull) }
        #expect(throws: (any Error).self) { try VolatileFile(adopting: SharedFileDescriptors(data: devnull, sidecar: devnull)) }
    }

    @Test func badMappingRangesAndUseAfterClose() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        for c in Self.rangeCases(size: f.size) where c.length > 0 && !c.offset.addingReportingOverflow(c.length).overflow {
            #expect(throws: c.error) { try f.map(c.offset..<(c.offset + c.length)) }
        }
        #expect(f.sidecar.slots.census().shared == 0, "a refused mapping took no slot")
        let m = try f.map()
        let open = try f.map()
        let privately = try f.map(options: .init(privateMapping: true))
        // A private mapping: the range error first, then why it cannot mark.
        #expect(throws: VRangeError.misalignedRange(offset: 1, length: page, pageSize: page)) { try privately.markVolatile(1..<(page + 1)) }
        #expect(throws: VRangeError.unsupported("a private mapping neither votes nor pins")) { try privately.markNonVolatile(0..<page) }
        m.close()
        #expect(throws: VRangeError.closed) { try m.markVolatile(0..<page) }
        #expect(throws: VRangeError.closed) { try m.markNonVolatile(0..<page) }
        f.close()
        // The file's close() closed the mapping still open: its marks say so.
        #expect(open.isClosed)
        #expect(throws: VRangeError.closed) { try open.markVolatile(0..<page) }
        #expect(throws: VRangeError.closed) { try open.markNonVolatile(0..<page) }
        #expect(throws: VRangeError.closed) { try f.markVolatile(0..<page) }
        #expect(throws: VRangeError.closed) { try f.markNonVolatile(0..<page) }
        #expect(throws: VRangeError.closed) { try f.purgeAll() }
        #expect(throws: VRangeError.closed) { try f.map() }
    }
}
