// SIGBUS semantics, in exit tests (each runs in a fresh process): a purged
// volatile page raises SIGBUS with both mechanisms; nothing else faults; the
// library's handler chains to the application's own.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The page the application's handler expects to see in si_addr.
nonisolated(unsafe) var expectedFaultAddress: UnsafeMutableRawPointer?

/// Installs an application SIGBUS handler that exits with 42 when si_addr is
/// `expectedFaultAddress`, 43 when it is something else. Must run before
/// VRange installs its own (the first region), which then chains to it.
func installApplicationBusHandler() {
    var action = sigaction()
    action.sa_flags = SA_SIGINFO
    action.__sigaction_handler.sa_sigaction = { _, info, _ in
        let address = info!.pointee._sifields._sigfault.si_addr
        _exit(address == expectedFaultAddress.map { UnsafeMutableRawPointer($0) } ? 42 : 43)
    }
    sigemptyset(&action.sa_mask)
    sigaction(SIGBUS, &action, nil)
}

/// A real SIGBUS that has nothing to do with VRange: a shared mapping past
/// the end of an empty memfd.
func touchBeyondEndOfFile() {
    let fd = try! Kernel.memfdCreate(name: "unrelated")
    let p = try! Kernel.mapShared(fd: fd, length: page)
    expectedFaultAddress = p
    _ = vr_read_byte(p)
}

@Suite("SIGBUS", .serialized) struct SignalTests {
    @Test func touchingAPurgedPageRaisesSIGBUS_userfaultfd() async throws {
        try #require(userfaultfdAvailable, "userfaultfd unavailable: covered by the mprotect variant only")
        await #expect(processExitsWith: .signal(SIGBUS)) {
            let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: .userfaultfd))
            try! r.markVolatile(0..<(4 * page))
            try! r.purge(page..<(2 * page))
            _ = vr_read_byte(r.baseAddress + page + 100)
        }
    }

    @Test func touchingAPurgedPageRaisesSIGBUS_mprotect() async {
        await #expect(processExitsWith: .signal(SIGBUS)) {
            let r = try! VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: .mprotect))
            try! r.markVolatile(0..<(4 * page))
            try! r.purge(page..<(2 * page))
            _ = vr_read_byte(r.baseAddress + page + 100)
        }
    }

    @Test func writingAPurgedPageRaisesSIGBUS() async {
        await #expect(processExitsWith: .signal(SIGBUS)) {
            let r = try! VolatileRegion(byteCount: 2 * page)
            try! r.markVolatile(0..<page)
            try! r.purge(0..<page)
            r.bytes[5] = 1
        }
    }

    /// The application's handler sees the SIGBUS with the purged address,
    /// with both mechanisms (mprotect's SIGSEGV is converted).
    @Test func purgedTouchReachesTheApplicationsHandler_userfaultfd() async throws {
        try #require(userfaultfdAvailable, "userfaultfd unavailable: covered by the mprotect variant only")
        await #expect(processExitsWith: .exitCode(42)) {
            installApplicationBusHandler()
            let r = try! VolatileRegion(byteCount: 2 * page, options: .init(faultMechanism: .userfaultfd))
            try! r.markVolatile(0..<(2 * page))
            try! r.purge(page..<(2 * page))
            expectedFaultAddress = r.baseAddress + page + 8
            _ = vr_read_byte(r.baseAddress + page + 8)
        }
    }

    @Test func purgedTouchReachesTheApplicationsHandler_mprotect() async {
        await #expect(processExitsWith: .exitCode(42)) {
            installApplicationBusHandler()
            let r = try! VolatileRegion(byteCount: 2 * page, options: .init(faultMechanism: .mprotect))
            try! r.markVolatile(0..<(2 * page))
            try! r.purge(page..<(2 * page))
            expectedFaultAddress = r.baseAddress + page + 8
            _ = vr_read_byte(r.baseAddress + page + 8)
        }
    }

    /// An unrelated SIGBUS still reaches the application's own handler.
    @Test func unrelatedSIGBUSReachesTheApplicationsHandler() async {
        await #expect(processExitsWith: .exitCode(42)) {
            installApplicationBusHandler()
            let r = try! VolatileRegion(byteCount: page)
            try! r.markVolatile(0..<page)
            try! r.purge(0..<page)
            touchBeyondEndOfFile()
        }
    }

    /// Without an application handler, an unrelated SIGBUS still kills with
    /// SIGBUS (through the Swift runtime's handler or the default action).
    @Test func unrelatedSIGBUSWithoutHandlerStillKills() async {
        await #expect(processExitsWith: .signal(SIGBUS)) {
            _ = try! VolatileRegion(byteCount: page)
            touchBeyondEndOfFile()
        }
    }

    /// A SIGBUS sent with kill(), not a fault, is passed on too.
    @Test func raisedSIGBUSIsPassedOn() async {
        await #expect(processExitsWith: .signal(SIGBUS)) {
            _ = try! VolatileRegion(byteCount: page)
            _ = vr_raise_in_thread(SIGBUS)
        }
    }

    /// A page already marked non-volatile whose repopulation has not happened
    /// (another thread is inside markNonVolatile, or repopulation failed) is
    /// filled by the handler on touch: zeros, no signal.
    @Test func nonVolatileButNotRepopulatedPageIsHealedOnTouch() async {
        await #expect(processExitsWith: .success) {
            for m in [FaultMechanism.userfaultfd, .mprotect] {
                guard let r = try? VolatileRegion(byteCount: 4 * page, options: .init(faultMechanism: m)) else { continue }
                r.bytes[page] = 5
                try! r.markVolatile(0..<(4 * page))
                try! r.purge(page..<(2 * page))
                // Commit the map change only, as markNonVolatile does before repopulating.
                r.map.markNonVolatile(1..<2, wait: {}) { _ in }
                if vr_read_byte(r.baseAddress + page) != 0 { _exit(1) }
                r.bytes[page] = 6
                if r.bytes[page] != 6 { _exit(2) }
            }
        }
    }

    /// Everything that is not a purged volatile page reads and writes without
    /// a fault, with both mechanisms, around purged pages.
    @Test func nothingElseFaults() async {
        await #expect(processExitsWith: .success) {
            for m in [FaultMechanism.userfaultfd, .mprotect] {
                guard let r = try? VolatileRegion(byteCount: 64 * page, options: .init(faultMechanism: m)) else { continue }
                try! r.markVolatile(0..<(32 * page))
                try! r.purge((10 * page)..<(12 * page))
                for p in 0..<64 where !(10..<12).contains(p) {
                    r.bytes[p * page] &+= 1
                    r.bytes[p * page + page - 1] &+= 1
                }
                _ = try! r.markNonVolatile(0..<(32 * page))
                for p in 0..<64 { r.bytes[p * page] &+= 1 }
            }
        }
    }
}
