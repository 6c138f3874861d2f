// fork() while another thread is inside a region operation (issue 18: 1c,
// 2c, 2d, 2e). The child has one thread: what the others held or were doing
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
        guard forkTestsRun("childClosesARegionWhosePurgeWasInFlight") else { return }
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
                let status = forkedWithAlarm {
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
        guard forkTestsRun("childOfAnAccessHoldingAFilledPurgedPageStillFaults") else { return }
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
                let status = forkedWithAlarm {
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

    /// 2d: the first purge of a chunk (userfaultfd) is held before it
    /// registers the chunk when the process forks: the child resolves the
    /// locked page as purged, and must register the chunk so that it faults.
    @Test func childOfTheFirstPurgeOfAChunkRegistersIt() async {
        guard forkTestsRun("childOfTheFirstPurgeOfAChunkRegistersIt") else { return }
        guard userfaultfdAvailable else { print("NOTE: childOfTheFirstPurgeOfAChunkRegistersIt: userfaultfd unavailable, no chunk to register; it did not run"); return }
        guard hooksAvailable("childOfTheFirstPurgeOfAChunkRegistersIt") else { return }
        _ = await ChildLog.capture("childOfTheFirstPurgeOfAChunkRegistersIt", prefix: "child") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("childOfTheFirstPurgeOfAChunkRegistersIt")
                let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: .userfaultfd))
                r.bytes[page] = 5
                try! r.markVolatile(page..<(2 * page))
                arm(0, Int32(VR_HOOK_DISCARD), set: Flag.a, waitAny: Flag.b, deadlineMs: 30_000)
                let purger = TestThread { _ = try? r.purge(page..<(2 * page)) }
                guard waitForFlags(Flag.a) else { finish(false, "the purge never reached its discard") }
                let status = forkedWithAlarm {
                    guard (try? r.pageStates(0..<(2 * page))) == [.nonVolatile, .purged] else { return 2 }
                    guard r.bytes[0] == 0 else { return 3 }
                    return 100 + Int32(vr_read_byte(r.baseAddress + page) & 1)  // must die of SIGBUS
                }
                vr_test_hook_set_flags(Flag.b)
                purger.join()
                finish(terminatingSignal(status) == SIGBUS,
                       "the child's touch of the page purged at fork: \(describeStatus(status)), not SIGBUS")
            }
        }
    }

    /// 2e: a registered chunk whose pages were never written: in the child,
    /// a non-volatile page of it reads zeros without a fault (SIGBUS is
    /// blocked there: a fault would kill), and a purged one still faults.
    @Test func childReadsNeverWrittenPagesOfARegisteredChunk() async {
        guard forkTestsRun("childReadsNeverWrittenPagesOfARegisteredChunk") else { return }
        guard userfaultfdAvailable else { print("NOTE: childReadsNeverWrittenPagesOfARegisteredChunk: userfaultfd unavailable, no chunk to register; it did not run"); return }
        _ = await ChildLog.capture("childReadsNeverWrittenPagesOfARegisteredChunk", prefix: "child") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("childReadsNeverWrittenPagesOfARegisteredChunk")
                let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: .userfaultfd))
                try! r.markVolatile(page..<(2 * page))
                _ = try! r.purge(page..<(2 * page))  // registers the chunk; nothing was ever written
                let status = forkedWithAlarm {
                    var block = sigset_t()
                    sigemptyset(&block)
                    sigaddset(&block, SIGBUS)
                    pthread_sigmask(SIG_BLOCK, &block, nil)
                    return vr_read_byte(r.baseAddress) == 0 && vr_read_byte(r.baseAddress + 3 * page) == 0 ? 0 : 2
                }
                guard exitCode(status) == 0 else {
                    finish(false, "the child's reads of never-written non-volatile pages of a registered chunk: \(describeStatus(status))")
                }
                let touch = childTouchRaisesSIGBUS(r.baseAddress + page)
                finish(touch.ok, "the child's touch of the purged page: \(touch.status), not SIGBUS")
            }
        }
    }

    /// 2e, kernel-driven: a never-written page marked volatile (its chunk
    /// registered, lazily freed) was never reclaimed: the child's
    /// markNonVolatile must find it intact.
    @Test func kernelDrivenChildFindsANeverWrittenVolatilePageIntact() async {
        guard forkTestsRun("kernelDrivenChildFindsANeverWrittenVolatilePageIntact") else { return }
        guard userfaultfdAvailable else { print("NOTE: kernelDrivenChildFindsANeverWrittenVolatilePageIntact: userfaultfd unavailable, kernel-driven mode cannot run here; it did not run"); return }
        _ = await ChildLog.capture("kernelDrivenChildFindsANeverWrittenVolatilePageIntact", prefix: "child") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("kernelDrivenChildFindsANeverWrittenVolatilePageIntact")
                let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: .userfaultfd, kernelDriven: true))
                try! r.markVolatile(0..<page)
                let status = forkedWithAlarm {
                    guard let result = try? r.markNonVolatile(0..<page) else { return 2 }
                    return result.purgedRanges.isEmpty ? 0 : 3
                }
                finish(exitCode(status) == 0,
                       "the child's markNonVolatile of a never-written, never-reclaimed volatile page: \(describeStatus(status)) (3: reported purged)")
            }
        }
    }
}
