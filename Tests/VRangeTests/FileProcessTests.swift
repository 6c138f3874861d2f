// Shared files across real processes (VRangeTestPeer): sharing by socket
// and by inheritance, persistence of file marks, 2 and 8 processes, seals.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Shared files, processes", .serialized) struct FileProcessTests {
    @Test func twoProcessesShareDataAndMarks() throws {
        let f = try VolatileFile(byteCount: 16 * page)
        let m = try f.map()
        let ps = try peers(2, sharing: f)
        for (i, p) in ps.enumerated() {
            #expect(try p.send("map 1 0 16") == "userfaultfd")
            try p.send("fill 1 \(i) \(i + 10)")
        }
        #expect(look(m, page: 0, tag: 10) == "tag")
        #expect(look(m, page: 1, tag: 11) == "tag")
        // Pages 0..<2 become purgeable only when all three mappers voted.
        try m.markVolatile(bytes(0..<2))
        try ps[0].send("vote 1 0 2")
        #expect(try ps[1].send("purge 0 16") == "0")
        try ps[1].send("vote 1 0 2")
        #expect(try ps[1].send("purge 0 16") == "2")
        // Every voter learns, separately.
        #expect(try ps[0].send("pin 1 0 4") == "0-2")
        #expect(try ps[1].send("pin 1 0 2") == "0-2")
        #expect(pageRuns(try m.markNonVolatile(bytes(0..<2))) == [0..<2])
        #expect(try ps[1].send("look 1 0 10") == "zero")
    }
}
