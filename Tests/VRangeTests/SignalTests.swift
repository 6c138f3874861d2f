// SIGBUS semantics, in exit tests (each runs in a fresh process): a purged
// volatile page raises SIGBUS with both mechanisms; nothing else faults; the
// library's handler chains to the application's own.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// How often the one-shot handler ran.
nonisolated(unsafe) var oneShotCalls = 0

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

/// Makes a two-page region using `mechanism`, purges its second page and
/// reads byte 8 of it (recorded in `expectedFaultAddress`): a SIGBUS.
func touchAPurgedPage(_ mechanism: FaultMechanism = .automatic) {
    let r = try! VolatileRegion(byteCount: 2 * page, options: .init(faultMechanism: mechanism))
    try! r.markVolatile(0..<(2 * page))
    try! r.purge(page..<(2 * page))
    expectedFaultAddress = r.baseAddress + page + 8
    _ = vr_read_byte(r.baseAddress + page + 8)
}

/// With the application's handler installed first, touches a purged page
/// of a region using `mechanism`: the handler must exit 42.
func touchPurgedPageWithApplicationHandler(_ mechanism: FaultMechanism) {
    installApplicationBusHandler()
    touchAPurgedPage(mechanism)
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
        await #expect(processExitsWith: .signal(SIGBUS)) { touchAPurgedPage(.userfaultfd) }
    }

    @Test func touchingAPurgedPageRaisesSIGBUS_mprotect() async {
        await #expect(processExitsWith: .signal(SIGBUS)) { touchAPurgedPage(.mprotect) }
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
        await #expect(processExitsWith: .exitCode(42)) { touchPurgedPageWithApplicationHandler(.userfaultfd) }
    }

    @Test func purgedTouchReachesTheApplicationsHandler_mprotect() async {
        await #expect(processExitsWith: .exitCode(42)) { touchPurgedPageWithApplicationHandler(.mprotect) }
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

    /// A plain (non-SA_SIGINFO) application handler is called too.
    @Test func purgedTouchReachesAPlainHandler() async {
        await #expect(processExitsWith: .exitCode(44)) {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in _exit(44) }
            sigemptyset(&action.sa_mask)
            sigaction(SIGBUS, &action, nil)
            touchAPurgedPage()
        }
    }

    /// SA_RESETHAND: the application's one-shot handler runs once; the fault
    /// recurs when it returns and then takes the default action.
    @Test func oneShotHandlerRunsOnceThenDefault() async {
        await #expect(processExitsWith: .signal(SIGBUS)) {
            var action = sigaction()
            action.sa_flags = SA_SIGINFO | Int32(bitPattern: UInt32(SA_RESETHAND))
            action.__sigaction_handler.sa_sigaction = { _, _, _ in
                oneShotCalls += 1
                if oneShotCalls > 1 { _exit(45) }  // called again: not one-shot
            }
            sigemptyset(&action.sa_mask)
            sigaction(SIGBUS, &action, nil)
            touchAPurgedPage()
        }
    }

    /// A SIGBUS the application ignores and that is not a fault stays ignored.
    @Test func ignoredSentSIGBUSStaysIgnored() async {
        await #expect(processExitsWith: .success) {
            signal(SIGBUS, SIG_IGN)
            _ = try! VolatileRegion(byteCount: page)
            _ = vr_raise_in_thread(SIGBUS)
        }
    }

    /// A fault on a purged page cannot be ignored: SIG_IGN still dies of SIGBUS.
    @Test func ignoredPurgedFaultStillKills() async {
        await #expect(processExitsWith: .signal(SIGBUS)) {
            signal(SIGBUS, SIG_IGN)
            touchAPurgedPage()
        }
    }

    /// An unrelated SIGSEGV still reaches the application's SIGSEGV handler
    /// while mprotect-mechanism regions (which use SIGSEGV) exist.
    @Test func unrelatedSIGSEGVReachesTheApplicationsHandler() async {
        await #expect(processExitsWith: .exitCode(46)) {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in _exit(46) }
            sigemptyset(&action.sa_mask)
            sigaction(SIGSEGV, &action, nil)
            let r = try! VolatileRegion(byteCount: page, options: .init(faultMechanism: .mprotect))
            try! r.markVolatile(0..<page)
            try! r.purge(0..<page)
            let guardPage = mmap(nil, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
            _ = vr_read_byte(guardPage)
        }
    }

    /// The handler preserves errno for the code it interrupted.
    @Test(arguments: mechanisms)
    func faultsPreserveErrno(_ m: FaultMechanism) throws {
        let r = try region(pages: 2, m)
        try r.markVolatile(bytes(0..<2))
        let seen = try r.withVolatileAccess(bytes(0..<2)) { buffer -> Int32 in
            _ = try? r.purge(bytes(0..<1))
            errno = 4321
            _ = vr_read_byte(buffer.baseAddress!)  // faults; the handler makes syscalls
            return errno
        }
        #expect(seen == .purged)
        errno = 0
        var preserved: Int32 = 0
        _ = try r.withVolatileAccess(bytes(1..<2)) { buffer in
            _ = try? r.purge(bytes(1..<2))
            errno = 4321
            _ = vr_read_byte(buffer.baseAddress!)
            preserved = errno
        }
        #expect(preserved == 4321)
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
