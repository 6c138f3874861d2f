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
}
