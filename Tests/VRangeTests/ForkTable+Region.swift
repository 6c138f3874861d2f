// fork() while another thread is held inside each public region operation
// (issue 18, class 2). The child, which has only the forking thread, must
// find every page in a state it can use: a page that reads purged faults
// (SIGBUS, probed here without a signal), a page that reads otherwise holds
// its contents (or zeros, where it was purged under the vanished thread);
// it then uses every operation, purges a page and finds that it faults,
// closes the region, and exits, all within a watchdog's 10 s.
// Rows: (9 operations + a Purger's purge + an access body on a page purged
// under it + the first purge of a chunk) × 2 mechanisms + 4 kernel-driven
// operations = 28 (12 where userfaultfd is missing).
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Fork, regions", .serialized) struct RegionForkTable {
    typealias Operation = RegionLifecycleTable.Operation

    /// Where the other thread is when the process forks: held inside an
    /// operation (the lifecycle table's hold points), or two windows of
    /// their own: an access body holding a page purged under it (filled
    /// for the body until the access ends), and the first purge of a
    /// chunk, held before it registers the chunk (userfaultfd).
    enum Window: Sendable, Hashable, CustomStringConvertible {
        case held(Operation)
        case bodyOnPurgedPage
        case firstPurgeOfAChunk

        var name: String {
            switch self {
            case .held(let op): op.rawValue
            case .bodyOnPurgedPage: "bodyOnPurgedPage"
            case .firstPurgeOfAChunk: "firstPurgeOfAChunk"
            }
        }
        var description: String { name }

        init?(name: String) {
            switch name {
            case "bodyOnPurgedPage": self = .bodyOnPurgedPage
            case "firstPurgeOfAChunk": self = .firstPurgeOfAChunk
            default:
                guard let op = Operation(rawValue: name) else { return nil }
                self = .held(op)
            }
        }

        var kernelDriven: Bool { if case .held(let op) = self { op.kernelDriven } else { false } }
    }

    struct Row: Sendable, CustomStringConvertible {
        var window: Window
        var mechanism: FaultMechanism
        var description: String { "\(window), \(mechanism)" }
    }

    static var rows: [Row] {
        let windows = Operation.allCases.map(Window.held) + [.bodyOnPurgedPage, .firstPurgeOfAChunk]
        return windows.flatMap { w in
            (w.kernelDriven ? (userfaultfdAvailable ? [.userfaultfd] : []) : mechanisms).map { Row(window: w, mechanism: $0) }
        }
    }

    @Test(arguments: rows)
    func forkWhileAnOperationIsHeld(_ row: Row) async {
        guard forkTestsRun("forkWhileAnOperationIsHeld") else { return }
        guard hooksAvailable("forkWhileAnOperationIsHeld") else { return }
        setTestMechanism(row.mechanism)
        setenv("VRANGE_TEST_WINDOW", row.window.name, 1)
        _ = await ChildLog.capture("forkTable", prefix: "\(row) child") {
            await #expect(processExitsWith: .success, "\(row)") {
                ChildLog.redirect("forkTable")
                let window = Window(name: String(cString: getenv("VRANGE_TEST_WINDOW")))!
                RegionForkTable.forkWhileHeld(window, testMechanism())
            }
        }
    }

    /// The exit test's body: a region, another thread held, a fork.
    static func forkWhileHeld(_ window: Window, _ m: FaultMechanism) -> Never {
        let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: m, kernelDriven: window.kernelDriven))
        fill(r, page: 0, tag: 1)
        fill(r, page: 1, tag: 2)
        r.bytes[2 * page] = 42
        try! r.markVolatile(bytes(0..<1))
        let page0Purged = window != .firstPurgeOfAChunk
        if page0Purged { try! r.purge(bytes(0..<1)) }
        try! r.markVolatile(bytes(2..<3))
        var worker: TestThread?
        var purger: Purger?
        switch window {
        case .held(.purgerPurge):
            let hold = Operation.purgerPurge.hold
            arm(0, hold.point, arg: hookArg(r, page: 2), set: Flag.a, waitAny: Flag.b, deadlineMs: 30_000, times: 1)
            purger = try! Purger(.init(budget: 0, pressureSources: .none, tick: .milliseconds(5)))
            purger!.register(r)
        case .held(let op):
            let hold = op.hold
            let holdArg = hold.page.map { hookArg(r, page: $0) } ?? 0
            worker = TestThread {
                arm(0, hold.point, arg: holdArg, tid: currentTID(), set: Flag.a, waitAny: Flag.b, deadlineMs: 30_000, times: 1)
                _ = RegionLifecycleTable.run(op, on: r)
                vr_test_hook_set_flags(Flag.e)
            }
        case .firstPurgeOfAChunk:
            worker = TestThread {
                arm(0, Int32(VR_HOOK_DISCARD), tid: currentTID(), set: Flag.a, waitAny: Flag.b, deadlineMs: 30_000, times: 1)
                _ = try? r.purge(bytes(2..<3))
                vr_test_hook_set_flags(Flag.e)
            }
        case .bodyOnPurgedPage:
            worker = TestThread {
                arm(0, Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), tid: currentTID(), set: Flag.c, waitAny: Flag.d, deadlineMs: 30_000, times: 1)
                _ = try? r.withVolatileAccess(bytes(2..<3)) { buffer -> UInt8 in
                    let byte = vr_read_byte(buffer.baseAddress!)  // purged meanwhile: filled for the body
                    vr_test_hook_set_flags(Flag.a)
                    _ = waitForFlags(Flag.b, seconds: 30)
                    return byte
                }
                vr_test_hook_set_flags(Flag.e)
            }
            guard waitForFlags(Flag.c) else { finish(false, "\(window), \(m): the access never started") }
            _ = try! r.purge(bytes(2..<3))
            vr_test_hook_set_flags(Flag.d)
        }
        guard waitForFlags(Flag.a) else { finish(false, "\(window), \(m): the other thread never reached its hold") }
        let status = forkedWithAlarm { childChecks(r, page0Purged: page0Purged) }
        vr_test_hook_set_flags(Flag.b)
        if let worker {
            guard waitForFlags(Flag.e, seconds: 20) else { finish(false, "\(window), \(m): the parent's operation hung after the fork") }
            worker.join()
        }
        purger?.stop()
        finish(exitCode(status) == 0, "\(window), \(m): the child: \(describeStatus(status))")
    }

    /// The child's side: 0, or the number of the check that failed (said
    /// in the log).
    static func childChecks(_ r: VolatileRegion, page0Purged: Bool) -> Int32 {
        func fail(_ code: Int32, _ why: String) -> Int32 {
            ChildLog.say("check \(code): \(why)")
            return code
        }
        // Every page is in a usable state: purged pages fault, the others
        // hold their contents, or zeros where a vanished thread purged them.
        guard let states = try? r.pageStates(bytes(0..<4)) else { return fail(2, "pageStates threw") }
        if states.contains(.locked) { return fail(3, "a page stays locked: \(states)") }
        for p in 0..<4 where states[p] == .purged && !touchFaults(r.baseAddress + p * page) {
            return fail(4, "page \(p) reads purged (\(states)) but a touch does not fault")
        }
        if page0Purged && states[0] != .purged && !isZero(r, page: 0) { return fail(5, "page 0, purged before the fork, reads as data: \(states)") }
        if !page0Purged && states[0] == .volatile && !holds(r, page: 0, tag: 1) { return fail(5, "page 0, volatile, lost its contents: \(states)") }
        // Every operation works.
        guard (try? r.status()) != nil else { return fail(6, "status threw") }
        guard (try? r.withVolatileAccess(bytes(0..<1)) { _ in 0 }) != nil else { return fail(7, "withVolatileAccess threw") }
        guard (try? r.pageOut(bytes(3..<4))) != nil else { return fail(8, "pageOut threw") }
        guard let unmarked = try? r.markNonVolatile(bytes(0..<4)) else { return fail(9, "markNonVolatile threw") }
        let lost = Set(pageRuns(unmarked).flatMap { Array($0) })
        if states[0] == .purged && !lost.contains(0) { return fail(10, "page 0 read purged, the unmark calls it intact") }
        for p in lost where !isZero(r, page: p) { return fail(11, "page \(p) reported purged, not zero") }
        if !lost.contains(0) && !page0Purged && !holds(r, page: 0, tag: 1) { return fail(12, "page 0 lost its contents unreported") }
        if !lost.contains(1) && states[1] != .purged && !holds(r, page: 1, tag: 2) { return fail(12, "page 1 lost its contents unreported") }
        if !lost.contains(2) && states[2] != .purged && r.bytes[2 * page] != 42 { return fail(13, "page 2 lost its contents unreported") }
        if r.bytes[3 * page] != 0 { return fail(14, "page 3, never written, is not zero") }
        // A purge in the child faults.
        r.bytes[2 * page] = 7
        guard (try? r.markVolatile(bytes(2..<3))) != nil, (try? r.purge(bytes(2..<3))) == page else {
            return fail(15, "the child's purge of page 2 failed")
        }
        if !touchFaults(r.baseAddress + 2 * page) { return fail(16, "page 2, purged in the child, does not fault") }
        guard (try? r.withVolatileAccess(bytes(2..<3)) { _ in 0 }) == .purged else { return fail(17, "the access of a purged page is not .purged") }
        guard (try? r.purgeAll()) != nil else { return fail(18, "purgeAll threw") }
        r.close()
        guard (try? r.pageStates(bytes(0..<1))) == nil else { return fail(19, "pageStates after close did not throw") }
        return 0
    }
}
