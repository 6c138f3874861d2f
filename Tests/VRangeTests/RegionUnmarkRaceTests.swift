// markNonVolatile against a mark and a purge slipped in between its map CAS
// and its repopulation (issue 18, 5h): the page the repopulation fills may
// be purged again by then, and must stay inaccessible (SIGBUS), not read
// zeros.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("region unmark races", .serialized) struct RegionUnmarkRaceTests {
    /// 5h: thread A unmarks purged page 0 (map CAS 11 -> 00) and is held
    /// before repopulating; meanwhile the page is marked volatile and purged
    /// again; then A repopulates. The page must still fault. `pages` 1: the
    /// one-word fast path; 33: the slow path over two words.
    @Test(arguments: mechanisms, [1, 33])
    func repopulateDoesNotRevealAPageRepurgedMeanwhile(_ m: FaultMechanism, pages: Int) throws {
        guard hooksAvailable("repopulateDoesNotRevealAPageRepurgedMeanwhile") else { return }
        try withHooks {
            let r = try region(pages: 40, m)
            fill(r, page: 0, tag: 7)
            try r.markVolatile(bytes(0..<pages))
            try r.purge(bytes(0..<1))
            let unmarked = Locked<NonVolatileResult?>(nil)
            let a = TestThread {
                arm(0, Int32(VR_HOOK_UNMARK_CLEARED), tid: currentTID(), set: Flag.a, waitAny: Flag.b)
                let result = try? r.markNonVolatile(bytes(0..<pages))
                unmarked.withLock { $0 = result }
            }
            #expect(waitForFlags(Flag.a))
            try r.markVolatile(bytes(0..<1))
            #expect(try r.purge(bytes(0..<1)) == page)
            vr_test_hook_set_flags(Flag.b)
            a.join()
            #expect(unmarked.withLock { $0.map(pageRuns) } == [0..<1])
            #expect(try r.pageStates(bytes(0..<1)) == [.purged])
            #expect(touchFaults(r.baseAddress), "\(m), \(pages) pages: the re-purged page read without a fault after the unmark's repopulation")
        }
    }
}
