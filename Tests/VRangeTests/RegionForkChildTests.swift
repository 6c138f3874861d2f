// fork() while another thread is inside a region operation (issue 18: 1c,
// 2c). The child has one thread: what the others held or were doing
// has no owner there. It must close the region without waiting on them, and
// a purged page must still raise SIGBUS there.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("region fork children", .serialized) struct RegionForkChildTests {
    /// 1c: a purge held inside its discard (a mapping change in flight) when
    /// the process forks: the child's close() must not wait for it.
    @Test(arguments: mechanisms)
    func childClosesARegionWhosePurgeWasInFlight(_ m: FaultMechanism) async {
        guard hooksAvailable("childClosesARegionWhosePurgeWasInFlight") else { return }
        setTestMechanism(m)
        _ = await ChildLog.capture("childClosesARegionWhosePurgeWasInFlight", prefix: "child") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("childClosesARegionWhosePurgeWasInFlight")
                let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: testMechanism()))
                r.bytes[page] = 5
                try! r.markVolatile(page..<(2 * page))
                arm(0, Int32(VR_HOOK_DISCARD), set: Flag.a, waitAny: Flag.b, deadlineMs: 30_000)
                let purger = TestThread { _ = try? r.purge(page..<(2 * page)) }
                guard waitForFlags(Flag.a) else { finish(false, "the purge never reached its discard") }
                let status = forkedWithWatchdog {
                    r.close()
                    return r.isClosed ? 0 : 2
                }
                vr_test_hook_set_flags(Flag.b)
                purger.join()
                finish(exitCode(status) == 0, "\(testMechanism()): the child's close(): \(describeStatus(status))")
            }
        }
    }

    /// 2c: another thread's optimistic access has touched a page purged
    /// under it (filled with zeros for the body, purged again when the
    /// access ends) when the process forks: in the child, where that access
    /// never ends, the page must read purged and raise SIGBUS.
    @Test(arguments: mechanisms)
    func childOfAnAccessHoldingAFilledPurgedPageStillFaults(_ m: FaultMechanism) async {
        guard hooksAvailable("childOfAnAccessHoldingAFilledPurgedPageStillFaults") else { return }
        setTestMechanism(m)
        _ = await ChildLog.capture("childOfAnAccessHoldingAFilledPurgedPageStillFaults", prefix: "child") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("childOfAnAccessHoldingAFilledPurgedPageStillFaults")
                let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: testMechanism()))
                r.bytes[0] = 42
                try! r.markVolatile(0..<page)
                arm(0, Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), set: Flag.a, waitAny: Flag.b, deadlineMs: 30_000)
                let reader = TestThread {
                    _ = try? r.withVolatileAccess(0..<page) { buffer -> UInt8 in
                        let byte = vr_read_byte(buffer.baseAddress!)  // faults: purged meanwhile
                        vr_test_hook_set_flags(Flag.c)
                        _ = waitForFlags(Flag.d, seconds: 30)
                        return byte
                    }
                }
                guard waitForFlags(Flag.a) else { finish(false, "the access never started") }
                _ = try! r.purge(0..<page)
                vr_test_hook_set_flags(Flag.b)
                guard waitForFlags(Flag.c) else { finish(false, "the body never read the page") }
                let status = forkedWithWatchdog {
                    guard (try? r.pageStates(0..<page)) == [.purged] else { return 2 }
                    return 100 + Int32(vr_read_byte(r.baseAddress) & 1)  // must die of SIGBUS
                }
                vr_test_hook_set_flags(Flag.d)
                reader.join()
                finish(terminatingSignal(status) == SIGBUS,
                       "\(testMechanism()): the child's touch of a purged page: \(describeStatus(status)), not SIGBUS")
            }
        }
    }
}
