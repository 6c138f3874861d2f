// fork(): the child keeps marks, contents and SIGBUS semantics (the kernel
// drops the child's userfaultfd registration; VRange restores it).
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Runs `child` in a forked child and returns its wait status.
func forked(_ child: () -> Int32) -> Int32 {
    let pid = fork()
    if pid == 0 { _exit(child()) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

func exitCode(_ status: Int32) -> Int32? { status & 0x7f == 0 ? (status >> 8) & 0xff : nil }
func terminatingSignal(_ status: Int32) -> Int32? { status & 0x7f != 0 && status & 0x7f != 0x7f ? status & 0x7f : nil }

/// Exit codes of the child's checks (0 = all passed).
func checkInheritedRegion(_ r: VolatileRegion) -> Int32 {
    if Kernel.FaultTable.forkRestoreFailures != 0 { return 10 }
    guard let states = try? r.pageStates(0..<(4 * page)),
          states == [.volatile, .purged, .volatile, .nonVolatile] else { return 11 }
    guard (try? r.withVolatileAccess(0..<page) { $0.load(as: UInt8.self) }) == .intact(7) else { return 12 }
    guard (try? r.withVolatileAccess(page..<(2 * page)) { _ in 0 }) == .purged else { return 13 }
    // A purge during an access faults inside it (the child's userfaultfd
    // registration was restored, or the inherited PROT_NONE holds): the
    // handler runs (counted by the test hooks in debug builds).
    vr_test_hook_reset()
    guard (try? r.withVolatileAccess((2 * page)..<(3 * page)) { buffer -> UInt8 in
        _ = try? r.purge((2 * page)..<(3 * page))
        return buffer[0]
    }) == .purged else { return 14 }
    if vr_test_hooks_available() != 0 && vr_test_hook_count(Int32(VR_HOOK_HANDLER_STATE_LOADED)) == 0 { return 17 }
    guard let result = try? r.markNonVolatile(0..<(3 * page)),
          result.purgedRanges == [page..<(3 * page)] else { return 15 }
    guard r.bytes[0] == 7, r.bytes[page] == 0, r.bytes[3 * page] == 9 else { return 16 }
    return 0
}

@Suite("fork", .serialized) struct ForkTests {
    @Test(arguments: mechanisms)
    func childKeepsMarksContentsAndSIGBUS(_ m: FaultMechanism) async throws {
        let mechanismCode = m == .userfaultfd ? 1 : 2
        setenv("VRANGE_TEST_MECHANISM", "\(mechanismCode)", 1)
        await #expect(processExitsWith: .success) {
            let m: FaultMechanism = environmentInt("VRANGE_TEST_MECHANISM", 1) == 1 ? .userfaultfd : .mprotect
            let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: m))
            r.bytes[0] = 7
            r.bytes[3 * page] = 9
            try! r.markVolatile(0..<(3 * page))
            try! r.purge(page..<(2 * page))
            _ = try! r.pageStates(0..<page)  // warm up before forking

            // 1. Marks and contents are inherited; optimistic access and
            //    markNonVolatile work in the child.
            let checks = forked { checkInheritedRegion(r) }
            if exitCode(checks) != 0 { print("child checks failed: status \(checks)"); _exit(Int32(exitCode(checks) ?? 99)) }

            // 2. Touching a purged page in the child raises SIGBUS there.
            let touch = forked { Int32(vr_read_byte(r.baseAddress + page + 1)) + 100 }
            if terminatingSignal(touch) != SIGBUS { print("child touch: status \(touch)"); _exit(2) }

            // 3. The parent is unaffected by its children.
            if (try? r.pageStates(0..<(4 * page))) != [.volatile, .purged, .volatile, .nonVolatile] { _exit(3) }
            if r.bytes[0] != 7 { _exit(4) }
            // The parent's own registration survived the forks: a purge
            // during an access faults inside it.
            try! r.markVolatile(0..<page)
            vr_test_hook_reset()
            if (try? r.withVolatileAccess(0..<page) { buffer -> UInt8 in
                _ = try? r.purge(0..<page)
                return buffer[0]
            }) != .purged { _exit(5) }
            if vr_test_hooks_available() != 0 && vr_test_hook_count(Int32(VR_HOOK_HANDLER_STATE_LOADED)) == 0 { _exit(6) }
            _exit(0)
        }
    }

    /// A fork while another thread holds pages locked for a purge: in the
    /// child those locks have no owner. They must not stay locked for ever
    /// (markNonVolatile would wait for ever): the child sees the pages purged.
    @Test(arguments: mechanisms)
    func forkDuringAPurgeLeavesNoPageLocked(_ m: FaultMechanism) async throws {
        setenv("VRANGE_TEST_MECHANISM", m == .userfaultfd ? "1" : "2", 1)
        await #expect(processExitsWith: .success) {
            let m: FaultMechanism = environmentInt("VRANGE_TEST_MECHANISM", 1) == 1 ? .userfaultfd : .mprotect
            let r = try! VolatileRegion(byteCount: 8 * page, options: .init(faultMechanism: m))
            for p in 0..<8 { r.bytes[p * page] = UInt8(p + 1) }
            try! r.markVolatile(0..<(8 * page))
            var status: Int32 = -1
            r.map.discardRuns(in: 2..<5) { run in
                // Inside the purge: pages 2..<5 are locked by this thread.
                status = forked {
                    var unblock = sigset_t()
                    sigemptyset(&unblock)
                    sigaddset(&unblock, SIGALRM)
                    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
                    alarm(20)  // a hang dies of SIGALRM instead of blocking the suite
                    guard let result = try? r.markNonVolatile(0..<(8 * page)) else { return 20 }
                    guard result.purgedRanges == [(2 * page)..<(5 * page)] else { return 21 }
                    for p in 0..<8 where r.bytes[p * page] != ((2..<5).contains(p) ? 0 : UInt8(p + 1)) { return 22 }
                    return 0
                }
                r.discard(run)
            }
            if exitCode(status) != 0 { print("child: status \(status)"); _exit(1) }
            // The parent's purge completed normally.
            if (try? r.pageStates((2 * page)..<(5 * page))) != [.purged, .purged, .purged] { _exit(2) }
            _exit(0)
        }
    }
}
