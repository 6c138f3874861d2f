import Testing
import CVRange
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite struct Smoke {
    @Test func basic() throws {
        let r = try VolatileRegion(byteCount: 16 * 4096)
        print("mechanism", r.faultMechanism)
        r.bytes[0] = 7
        r.bytes[4096] = 9
        try r.markVolatile(0..<(8 * 4096))
        #expect(try r.purge(4096..<8192) == 4096)
        let res = try r.markNonVolatile(0..<(8 * 4096))
        #expect(res.purgedRanges == [4096..<8192])
        #expect(r.bytes[0] == 7)
        #expect(r.bytes[4096] == 0)
        try r.markVolatile(0..<4096)
        try r.purge(0..<4096)
        let a = try r.withVolatileAccess(0..<8192) { $0[0] }
        #expect(a == .purged)
    }

    @Test func dies() async {
        await #expect(processExitsWith: .signal(SIGBUS)) {
            let r = try! VolatileRegion(byteCount: 4 * 4096)
            try! r.markVolatile(0..<4096)
            try! r.purge(0..<4096)
            _ = vr_read_byte(r.baseAddress)
        }
    }
}
