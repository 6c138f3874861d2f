// Issue 18, class 2: fork() while one of the library's own threads runs.
// The Swift runtime's caches of type metadata and witness tables take a
// mutex when a type (a generic instantiation, a conformance) is used for
// the first time in the process, and the runtime has no at-fork handler:
// a child forked while another thread held one hangs at its own next first
// use of a type of that cache (seen: Array's Sequence conformance). So no
// thread may run Swift code that it has not run before while another forks.
// The library can promise that for its own threads: the purger's holds its
// pass lock, which fork()'s prepare handler takes, whenever it runs, and
// releases it only in poll; the release clock's holds its gate (tcache.c),
// released only while it waits for its next round. (Threads of the program
// are the program's: the fork tests warm up what their threads run while a
// child is forked.)
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("fork while a thread of the library runs", .serialized) struct LibraryThreadForkTests {

    /// Was a defect (the free-running purger's fork children, 1 in ~100
    /// hung in `swift_getWitnessTable`, on a runtime mutex whose owner was
    /// the parent's `vrange-purger` thread): the purger's thread ran its
    /// loop (sources, timers, the budget check) without any lock that
    /// fork() waits for. Held there, back from poll, until the child is
    /// forked (at most 3 s), it must not be copied while it runs: rule 1
    /// sets flag c as it goes on, and the child must see it set.
    @Test func forkWaitsUntilThePurgersThreadIsBackInPoll() async {
        guard forkTestsRun("forkWaitsUntilThePurgersThreadIsBackInPoll"),
              hooksAvailable("forkWaitsUntilThePurgersThreadIsBackInPoll") else { return }
        _ = await ChildLog.capture("purgerThreadFork", prefix: "child") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("purgerThreadFork")
                let r = try! VolatileRegion(byteCount: 4 * page)
                let p = try! Purger(.init(budget: 1 << 40, pressureSources: .none, tick: .milliseconds(1)))
                p.register(r)
                fill(r, page: 1, tag: 4)
                try! r.markVolatile(page..<(2 * page))
                // Its next return from poll is held until the fork is done
                // (flag b) or 3 s passed; then rule 1 marks that it went on.
                arm(0, Int32(VR_HOOK_PURGER_LOOP), set: Flag.a, waitAny: Flag.b, deadlineMs: 3_000, times: 1)
                arm(1, Int32(VR_HOOK_PURGER_LOOP), set: Flag.c, times: 1)
                guard waitForFlags(Flag.a) else { finish(false, "the purger's thread never came back from poll") }
                let status = forkedWithAlarm(seconds: 10) {
                    // The thread was copied in the middle of its work: in
                    // that state it may hold a runtime lock.
                    guard vr_test_hook_flags() & Flag.c != 0 else { return 3 }
                    vr_test_hook_reset()
                    guard p.purgeAll() == page else { return 4 }
                    _ = p.statistics()
                    return 0
                }
                vr_test_hook_set_flags(Flag.b)
                finish(exitCode(status) == 0,
                       "the child: \(describeStatus(status)) (exit 3: fork() copied the purger's thread while it ran, back from poll; 4: purgeAll)")
            }
        }
    }

    /// Was a defect (the same class, found by looking for the library's
    /// other thread): the release clock's thread ran its rounds without any
    /// lock that fork() waits for. Held at the start of a round until the
    /// child is forked (at most 3 s), it must not be copied while it runs.
    @Test func forkWaitsUntilTheReleaseClocksThreadWaits() async {
        guard forkTestsRun("forkWaitsUntilTheReleaseClocksThreadWaits"),
              hooksAvailable("forkWaitsUntilTheReleaseClocksThreadWaits") else { return }
        _ = await ChildLog.capture("releaseThreadFork", prefix: "child") {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("releaseThreadFork")
                let allocator = try! VolatileAllocator(options: .init(releaseDelay: .zero, arenaCount: 1))
                let round = UInt(AllocHookOp.releaseClock.rawValue)
                arm(0, Int32(VR_HOOK_ALLOC_ENTERED), arg: round, set: Flag.a, waitAny: Flag.b, deadlineMs: 3_000, times: 1)
                arm(1, Int32(VR_HOOK_ALLOC_ENTERED), arg: round, set: Flag.c, times: 1)
                var b = try! allocator.allocate(byteCount: 7 * page)
                b.unlock()
                b.free()  // schedules a round at once (delay 0)
                guard waitForFlags(Flag.a) else { finish(false, "the release clock never began a round") }
                let status = forkedWithAlarm(seconds: 10) {
                    guard vr_test_hook_flags() & Flag.c != 0 else { return 3 }
                    vr_test_hook_reset()
                    guard var c = try? allocator.allocate(byteCount: 3 * page) else { return 4 }
                    c.unlock()
                    c.free()
                    return 0
                }
                vr_test_hook_set_flags(Flag.b)
                finish(exitCode(status) == 0,
                       "the child: \(describeStatus(status)) (exit 3: fork() copied the release clock's thread in a round; 4: allocate)")
            }
        }
    }
}
