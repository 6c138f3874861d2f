// Shared volatile files within one process: file marks, mapper votes and
// pins, purge with punch-hole, notices, SIGBUS-free optimistic access.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Shared files, one process", .serialized) struct FileBasicsTests {
    @Test func fileMarksPurgeAndNotice() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let m = try f.map()
        for p in 0..<8 { m.bytes[p * page] = UInt8(p + 1) }
        try f.markVolatile(bytes(0..<4))
        #expect(try f.status().purgeableBytes == 4 * page)
        #expect(try f.purgeAll() == 4 * page)
        #expect(try f.status().purgedBytes == 4 * page)
        let r = try f.markNonVolatile(bytes(0..<8))
        #expect(pageRuns(r) == [0..<4])
        #expect(m.bytes[0] == 0 && m.bytes[5 * page] == 6)
    }

    @Test func votesPinsAndNotices() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let a = try f.map(), b = try f.map()
        a.bytes[0] = 9
        try a.markVolatile(bytes(0..<2))
        #expect(try f.purgeAll() == 0)  // b has not voted
        try b.markVolatile(bytes(0..<1))
        #expect(try f.purgeAll() == page)
        let rb = try b.markNonVolatile(bytes(0..<1))
        #expect(pageRuns(rb) == [0..<1])
        #expect(b.bytes[0] == 0)
        let ra = try a.markNonVolatile(bytes(0..<2))
        #expect(pageRuns(ra) == [0..<1])
    }

    @Test func accessAndSIGBUSFree() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let a = try f.map()
        print("mechanism", a.faultMechanism)
        a.bytes[0] = 5
        try f.markVolatile(bytes(0..<1))
        #expect(try a.withVolatileAccess(bytes(0..<1)) { $0[0] } == .intact(5))
        try f.purgeAll()
        #expect(try a.withVolatileAccess(bytes(0..<1)) { $0[0] } == .purged)
        let r = try a.markNonVolatile(bytes(0..<1))
        #expect(pageRuns(r) == [0..<1])
        #expect(a.bytes[0] == 0)
    }

    @Test func mprotectFallbackMapping() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map(options: .init(faultMechanism: .mprotect))
        #expect(m.faultMechanism == .mprotect)
        m.bytes[0] = 3
        m.bytes[page] = 4
        try f.markVolatile(bytes(0..<1))
        #expect(try f.purgeAll() == page)  // this process's mprotect mappings lose access first
        #expect(try m.withVolatileAccess(bytes(0..<1)) { $0[0] } == .purged)
        #expect(m.bytes[page] == 4)
        #expect(pageRuns(try m.markNonVolatile(bytes(0..<2))) == [0..<1])
        #expect(m.bytes[0] == 0)  // accessible again, zero
        m.bytes[0] = 8
        #expect(m.bytes[0] == 8)
    }

    @Test func privateMappingBlocksPurgesAndSeesEarlierOnes() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let w = try f.map()
        w.bytes[0] = 1
        w.bytes[page] = 2
        try w.markVolatile(bytes(0..<2))
        #expect(try f.purge(bytes(0..<1)) == page)
        let p = try f.map(options: .init(privateMapping: true))
        #expect(p.isPrivate && p.faultMechanism == .mprotect)
        #expect(try f.purgeAll() == 0)  // page 1 is covered by the private mapping
        #expect(try p.withVolatileAccess(bytes(0..<1)) { $0[0] } == .purged)
        #expect(try p.withVolatileAccess(bytes(1..<2)) { $0[0] } == .intact(2))
        #expect(throws: VRangeError.unsupported("a private mapping neither votes nor pins")) { try p.markVolatile(bytes(0..<1)) }
        p.close()
        #expect(try f.purgeAll() == page)
    }

    @Test func rangeErrorsChangeNothing() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        #expect(throws: VRangeError.misalignedRange(offset: 1, length: page, pageSize: page)) { try f.markVolatile(1..<(page + 1)) }
        #expect(throws: VRangeError.outOfBounds(offset: 0, length: 5 * page, size: 4 * page)) { try m.markVolatile(0..<(5 * page)) }
        #expect(throws: VRangeError.emptyRange(offset: 0)) { try m.markNonVolatile(0..<0) }
        #expect(try f.status().fileVolatileBytes == 0)
        #expect(try m.status().votedBytes == 0)
        m.close()
        #expect(throws: VRangeError.closed) { try m.markVolatile(0..<page) }
        f.close()
        #expect(throws: VRangeError.closed) { try f.purgeAll() }
    }
}
