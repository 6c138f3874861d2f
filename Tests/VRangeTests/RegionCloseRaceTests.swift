// An optimistic access racing close() (issue 18, 1d): the body may read the
// empty mapping that replaced the region's memory; the access must then
// throw `.closed`, never report those zeros `.intact`.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("region close races", .serialized) struct RegionCloseRaceTests {
    /// 1d: the access passes its checks, close() replaces the memory, the
    /// body reads the replacement. Held at the access's pre-check.
    @Test(arguments: mechanisms)
    func accessRacingCloseNeverReportsReplacedMemoryIntact(_ m: FaultMechanism) throws {
        guard hooksAvailable("accessRacingCloseNeverReportsReplacedMemoryIntact") else { return }
        try withHooks {
            let r = try region(pages: 2, m)
            r.bytes[0] = 42
            try r.markVolatile(0..<page)
            let result = Locked<Result<VolatileAccess<UInt8>, VRangeError>?>(nil)
            let t = TestThread {
                arm(0, Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), tid: currentTID(), set: Flag.a, waitAny: Flag.b)
                let outcome = capture { () throws(VRangeError) in try r.withVolatileAccess(0..<page) { $0[0] } }
                result.withLock { $0 = outcome }
            }
            #expect(waitForFlags(Flag.a))
            r.close()
            vr_test_hook_set_flags(Flag.b)
            t.join()
            switch result.withLock({ $0 }) {
            case .failure(.closed), .success(.intact(42)): break
            case let other: Issue.record("\(m): an access racing close() returned \(String(describing: other)) for a page that held 42")
            }
        }
    }
}
