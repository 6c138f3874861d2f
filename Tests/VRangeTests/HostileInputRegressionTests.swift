// Regression tests for the defects the fuzzers (Fuzz/), the scribbling
// peer and the chaos run found, one test each, named after the defect (see
// RELIABILITY.md, "Defects found"). Each fails on the code before its fix.
// Sidecar scribbles are written straight into the sidecar's shared memory,
// as a peer holding the descriptors could.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a thread; false when it has not returned within
/// `seconds`. Then `unblock` (undoing whatever held it) is called, so that
/// a failing test still ends cleanly, and the thread is waited for again
/// (left behind if even that fails: the test has failed anyway).
func finishes(within seconds: Double, unblock: () -> Void = {}, _ body: @escaping @Sendable () -> Void) -> Bool {
    let done = Atomic<Bool>(false)
    let t = TestThread { body(); done.store(true, ordering: .releasing) }
    let ok = waitUntil(seconds: seconds) { done.load(ordering: .acquiring) }
    if !ok { unblock() }
    if ok || waitUntil(seconds: 30, { done.load(ordering: .acquiring) }) { t.join() }
    return ok
}

@Suite("Hostile input, regressions", .serialized) struct HostileInputRegressionTests {
    // MARK: D1 (FuzzRegionOps): a Range too wide to count trapped

    @Test func rangeTooWideToCountIsATypedError() throws {
        let wide = Int.min..<Int.max
        let expected = VRangeError.reversedRange(offset: Int.min, length: -1)
        let r = try VolatileRegion(byteCount: 4 * page)
        #expect(throws: expected) { try r.purge(wide) }
        #expect(throws: expected) { try r.status(wide) }
        #expect(throws: expected) { try r.pageStates(wide) }
        #expect(throws: expected) { try r.withVolatileAccess(wide) { _ in 0 } }
        #expect(throws: expected) { try r.markVolatile(wide) }
        #expect(throws: expected) { try r.pageOut(wide) }
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        #expect(throws: expected) { try f.purge(wide) }
        #expect(throws: expected) { try f.status(wide) }
        #expect(throws: expected) { try f.markVolatile(wide) }
        #expect(throws: expected) { try m.markVolatile(wide) }
        #expect(throws: expected) { try m.markNonVolatile(wide) }
        #expect(throws: expected) { try m.status(wide) }
        #expect(throws: expected) { try m.withVolatileAccess(wide) { _ in 0 } }
        #expect(throws: expected) { try f.map(wide) }
        #expect(throws: VRangeError.reversedRange(offset: -page, length: Int.max &+ page)) {
            try r.purge(-page..<Int.max)
        }
    }

    // MARK: D2 (FuzzSidecar): a page scribbled "locked" made pins wait for ever

    @Test func pageScribbledLockedDoesNotHangAPin() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let m = try f.map()
        fill(m, page: 1, tag: 9)
        // Page 0 locked (10) with no purge in flight: nobody will release it.
        f.sidecar.content.words[0].store(0b10, ordering: .sequentiallyConsistent)
        #expect(f.sidecar.control.phase == .idle)
        let result = Mutex<NonVolatileResult?>(nil)
        #expect(finishes(within: 10, unblock: { f.sidecar.content.words[0].store(0, ordering: .sequentiallyConsistent) }) {
            result.withLock { $0 = try? m.markNonVolatile(bytes(0..<2)) }
        }, "a pin of a page scribbled locked returned")
        // Locked with no purge in flight, at a second look: completed as a purge.
        #expect(result.withLock { $0.map(pageRuns) } == [0..<1])
        #expect(f.sidecar.content.census(0..<8).locked == 0)
        #expect(look(m, page: 0, tag: 0) == "zero")
        #expect(look(m, page: 1, tag: 9) == "tag", "the other page kept every byte")
    }

    // MARK: D3 (FuzzSidecar): a scribbled high-water mark hid every pin

    @Test func scribbledSlotHighWaterStillSeesEveryPin() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let m = try f.map()
        for p in 0..<8 { fill(m, page: p, tag: UInt8(p + 1)) }
        try m.markNonVolatile(bytes(0..<8))
        try f.markVolatile(bytes(0..<8))
        for scribble: UInt64 in [.max, 1 << 63, 5000] {
            f.sidecar.control.base[8].store(scribble, ordering: .sequentiallyConsistent)
            #expect(try f.purgeAll() == 0, "high-water \(scribble): the pins win")
        }
        for p in 0..<8 { #expect(look(m, page: p, tag: UInt8(p + 1)) == "tag") }
    }

    // MARK: D4 (FuzzFileOps): a mapping closed after its file read the unmapped sidecar

    @Test func mappingClosedAfterItsFileIsHarmless() async {
        await #expect(processExitsWith: .success) {
            for mechanism in [FaultMechanism.automatic, .mprotect] {
                let f = try! VolatileFile(byteCount: 4 * page)
                let m = try! f.map(options: .init(faultMechanism: mechanism))
                f.close()
                guard m.isClosed else { exit(2) }  // the file's close closed it
                m.close()
                guard (try? m.markVolatile(0..<page)) == nil else { exit(3) }
            }
            exit(0)
        }
    }

    // MARK: D5 (FuzzSidecar): a scribbled purge counter trapped on overflow

    @Test func scribbledCountersWrapInsteadOfTrapping() async {
        await #expect(processExitsWith: .success) {
            let f = try! VolatileFile(byteCount: 4 * page)
            f.sidecar.control.base[6].store(.max, ordering: .relaxed)
            f.sidecar.control.base[7].store(.max, ordering: .relaxed)
            try! f.markVolatile(0..<page)
            guard (try? f.purgeAll()) == page, f.sidecar.control.purges == 0 else { exit(2) }
            exit(0)
        }
    }

    // MARK: D6 (audit, then chaos): an access killed between locking and its intent

    /// The end of an optimistic access that touched a purged page punches it
    /// again under the purge lock. A process killed after locking the page
    /// and before recording its intent left it locked with nothing to
    /// recover from; now the intent comes first and the next purge-lock
    /// holder completes it.
    @Test func accessKilledWhileRepunchingLeavesNothingLocked() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let m = try f.map()
        for p in 0..<8 { fill(m, page: p, tag: UInt8(p + 1)) }
        let peer = try peers(1, sharing: f)[0]
        try peer.send("map 1 0 8")
        try peer.send("hold accesslocked")
        // The peer's access passes its pre-check, then pages 0..<4 are
        // purged, then its body touches page 0 (filled with zeros for it),
        // then its end punches the page again and is held there.
        try peer.write("accessslow 1 0 4\n")
        #expect(try peer.readLine(context: "access body") == "inbody")
        try f.markVolatile(bytes(0..<4))
        #expect(try f.purgeAll() == 4 * page)
        try peer.write("go\n")
        #expect(try peer.readLine(context: "access held") == "held")
        #expect(f.sidecar.content.census(0..<8).locked == 1, "the access locked page 0 to punch it again")
        peer.kill()
        #expect(f.sidecar.control.phase == .punching, "the intent was recorded before the lock")
        #expect(try f.purgeAll() == 0)  // takes the purge lock: completes the dead access's punch
        #expect(f.sidecar.content.census(0..<8).locked == 0, "no page left locked")
        #expect(f.sidecar.control.phase == .idle)
        #expect(pageRuns(try m.markNonVolatile(bytes(0..<8))) == [0..<4])
        for p in 0..<4 { #expect(look(m, page: p, tag: 0) == "zero") }
        for p in 4..<8 { #expect(look(m, page: p, tag: UInt8(p + 1)) == "tag") }
    }

    // MARK: Audit: scribbles the slot table may carry

    /// A free slot's marks scribbled with pins and votes are cleared when a
    /// mapping claims the slot: they never become its votes or pins.
    @Test func scribbledMarksOfAFreeSlotAreNotInherited() throws {
        let f = try VolatileFile(byteCount: 8 * page, options: .init(maxMappers: 2))
        // Slot 0: pages 0..<4 voted with notices, 4..<8 pinned.
        f.sidecar.marks(ofSlot: 0).words[0].store(0xAAFF, ordering: .relaxed)
        let m = try f.map()
        #expect(m.slot == 0)
        let s = try m.status()
        #expect(s.votedBytes == 0 && s.pinnedBytes == 0 && s.lostBytes == 0)
    }

    /// Every slot scribbled "live" (and the high-water mark to 0): a new
    /// mapping reclaims them (nobody holds their liveness locks) instead of
    /// failing with `.tooManyMappers`.
    @Test func slotsScribbledLiveAreReclaimedByAClaim() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 4))
        for i in 0..<4 { f.sidecar.slots.stateWord(i).pointee.store(MapperSlots.state(.live, generation: 7), ordering: .relaxed) }
        f.sidecar.control.base[8].store(0, ordering: .relaxed)
        let m = try f.map()
        #expect(m.slot >= 0 && m.slot < 4)
    }

    /// A slot record that never stops moving (a peer rewriting its state
    /// word in a loop) does not keep a status or a purge from returning.
    @Test func slotRecordThatKeepsMovingDoesNotStallReaders() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 2))
        let stop = Atomic<Bool>(false)
        let file = f
        let scribbler = TestThread {
            var g: UInt64 = 0
            while !stop.load(ordering: .relaxed) {
                g &+= 1
                file.sidecar.slots.stateWord(1).pointee.store(g << 8 | 2, ordering: .relaxed)
            }
        }
        defer { stop.store(true, ordering: .relaxed); scribbler.join() }
        #expect(finishes(within: 20, unblock: { stop.store(true, ordering: .relaxed) }) {
            for _ in 0..<2000 { _ = try? file.status(); _ = try? file.purgeAll() }
        })
    }

    // MARK: Audit: the fault handler's second wait on a locked page

    /// A page the handler has just filled and then finds locked (its locker
    /// dead, or the state scribbled) is waited on at most the handler's
    /// patience, then taken for purged: inside an access, `.purged`.
    @Test func handlerDoesNotWaitForeverOnAPageLockedAfterItsFill() throws {
        guard hooksAvailable("handlerDoesNotWaitForeverOnAPageLockedAfterItsFill"), userfaultfdAvailable else { return }
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()  // page 0 never touched: missing, its first touch faults
        #expect(m.faultMechanism == .userfaultfd)
        let arg = UInt(bitPattern: Int(bitPattern: m.baseAddress))
        let result = Mutex<VolatileAccess<UInt8>?>(nil)
        withHooks {
            arm(0, Int32(VR_HOOK_HANDLER_AFTER_FILL), arg: arg, set: Flag.a, waitAny: Flag.b, times: 1)
            let helper = TestThread {
                guard waitForFlags(Flag.a) else { return }
                f.sidecar.content.words[0].store(0b10, ordering: .sequentiallyConsistent)  // scribbled: locked
                vr_test_hook_set_flags(Flag.b)
            }
            let done = finishes(within: 10, unblock: { f.sidecar.content.words[0].store(0, ordering: .sequentiallyConsistent) }) {
                result.withLock { $0 = try? m.withVolatileAccess(0..<page) { $0[0] } }
            }
            helper.join()
            #expect(done, "the access returned")
        }
        #expect(result.withLock { $0 } == .purged)
    }
}
