// Regression tests for issue 18, classes 2, 3 and 5, found by the second
// hostile review (probes on branch probe/files-peers): a peer that scribbles
// mapper slots' state words "free" (P2: a claim waited a second per such slot
// with slotMutex held, and freed slots whose owner is alive; P3: the pinner's
// pins stopped counting and its next pin reported a purged page intact), and
// fork() held while another thread waited for a stalled peer (P1).
//
// The peer is simulated in this process by a second VolatileFile over the
// same descriptors (its own open file description of the sidecar, so its OFD
// locks conflict with ours, as another process's do), or is a real peer
// process (VRangeTestPeer) held inside its purge.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Peers: scribbled slots, fork while waiting on a peer", .serialized) struct PeerSlotTests {
    /// Scribbles the state word of slot `i` "free" (generation 0), as a peer
    /// writing over the sidecar would.
    static func scribbleFree(_ f: VolatileFile, slot i: Int) {
        f.sidecar.slots.stateWord(i).pointee.store(0, ordering: .sequentiallyConsistent)
    }

    // MARK: - P3: a pinner's slot scribbled "free"

    /// A peer writes "free" over a live pinner's slot state. The purge counted
    /// pins only of slots that read not free (Sidecar.purgeable) and gave
    /// notices only to those (notePurge): the pinned page was purged, the
    /// file's unmark repopulated it, and the pinner's next pin reported it
    /// intact over zeros. Now a slot that reads free while its OFD byte is
    /// held is alive: its pins count (the page is not purged), and the pin
    /// writes its record again. `mapInBetween`: a map() of the scribbler
    /// first claims the slot (it must give it back, not free it).
    static func pinOfAScribbledSlot(mapInBetween: Bool) throws -> (purged: Int, whilePinned: String, report: [Range<Int>], after: String, phase: SlotPhase?) {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 2))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let pinner = try peerSide.map()
        fill(pinner, page: 0, tag: 3)
        _ = try pinner.markNonVolatile(0..<page)
        scribbleFree(f, slot: pinner.slot)
        let m = mapInBetween ? try f.map() : nil
        try f.markVolatile(0..<page)
        let purged = try f.purge(0..<page)
        _ = try f.markNonVolatile(0..<page)
        let whilePinned = look(pinner, page: 0, tag: 3)
        let r = try pinner.markNonVolatile(0..<page)
        let after = look(pinner, page: 0, tag: 3)
        let phase = f.sidecar.slots.view(pinner.slot)?.phase
        m?.close(); pinner.close(); peerSide.close(); f.close()
        return (purged / page, whilePinned, pageRuns(r), after, phase)
    }

    @Test(arguments: [false, true])
    func pinOfASlotScribbledFreeNeverReportsLostDataIntact(mapInBetween: Bool) throws {
        let o = try Self.pinOfAScribbledSlot(mapInBetween: mapInBetween)
        #expect(o.after == "tag" || o.report == [0..<1],
                "a pin reported page 0 intact (\(o.report)), its contents are \(o.after): a peer scribbled the pinner's slot state free (purged \(o.purged) page)")
        #expect(o.purged == 0, "the pinned page was purged: its pins stopped counting when a peer wrote its slot free")
        #expect(o.whilePinned == "tag", "the pinned page read \(o.whilePinned) while pinned")
        #expect(o.phase == .live, "the owner's pin did not write its slot record again: \(String(describing: o.phase))")
    }

    /// The slot of a mapping that closes reads free (scribbled): its marks
    /// are withdrawn all the same (its pins must not count while its OFD
    /// byte stays held until deinit).
    @Test func closeOfAMappingWhoseSlotReadsFreeWithdrawsItsPins() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 2))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let pinner = try peerSide.map()
        _ = try pinner.markNonVolatile(0..<page)
        Self.scribbleFree(f, slot: pinner.slot)
        pinner.close()  // withdrawn, not yet released (deinit)
        try f.markVolatile(0..<page)
        #expect(try f.purge(0..<page) == page, "a closed mapping's pin still counted")
        _ = pinner  // the mapping lives until here
        peerSide.close(); f.close()
    }

    /// A peer writes a live pinner's pin neutral (10 -> 00) in its marks: a
    /// purge then takes the page (nothing pins it in the sidecar) and gives
    /// no notice (a neutral party gets none); the file's unmark repopulates
    /// it. The pinner's next pin reported it intact over zeros. Now a pin
    /// compares its private pin record with its marks: a pin written over is
    /// reported lost.
    @Test func pinAPeerWroteNeutralIsReportedLost() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        fill(m, page: 0, tag: 3)
        _ = try m.markNonVolatile(0..<page)
        m.marks.words[0].store(0, ordering: .sequentiallyConsistent)  // the peer's scribble
        try f.markVolatile(0..<page)
        let purged = try f.purge(0..<page)
        _ = try f.markNonVolatile(0..<page)
        let r = try m.markNonVolatile(0..<page)
        let after = look(m, page: 0, tag: 3)
        #expect(after == "tag" || pageRuns(r) == [0..<1],
                "a pin reported page 0 intact (\(pageRuns(r))), its contents are \(after): a peer wrote its pin neutral (purged \(purged / page) page)")
        // Nothing was written over since: the next pin is exact again.
        fill(m, page: 0, tag: 4)
        #expect(pageRuns(try m.markNonVolatile(0..<page)).isEmpty)
        m.close(); f.close()
    }

    // MARK: - P2: claims against live slots scribbled "free"

    /// A peer holds live slots (their OFD bytes locked) and scribbles their
    /// states free. claimSlot claimed each, waited up to 1 s for its byte
    /// with slotMutex held, then freed it (its owner alive) and went on: a
    /// map() lasted a second per scribbled slot. Now it gives such a slot
    /// back at once and takes a free one; with none free it throws
    /// `.tooManyMappers` after at most `peerPatience`. Either way the peer's
    /// slots stay its own: its pins count, and its next pin writes its
    /// record back (live).
    static func mapAgainstScribbledSlots(held: Int, maxMappers: Int) throws -> (finished: Bool, outcome: String, purged: Int, phases: [SlotPhase?]) {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: maxMappers))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        var mine: [FileMapping] = []
        for _ in 0..<held { mine.append(try peerSide.map()) }
        fill(mine[0], page: 0, tag: 3)
        _ = try mine[0].markNonVolatile(0..<page)
        for m in mine { scribbleFree(f, slot: m.slot) }
        let outcome = Mutex<String>("not finished")
        let bound = Double(VolatileFile.peerPatience.components.seconds) + 3
        let finished = finishes(within: bound) {
            let text: String
            do throws(VRangeError) {
                let m = try f.map()
                text = "mapped slot \(m.slot)"
                m.close()
            } catch { text = "threw \(error)" }
            outcome.withLock { $0 = text }
        }
        try f.markVolatile(0..<page)
        let purged = try f.purge(0..<page) / page
        for m in mine { _ = try m.markNonVolatile(0..<page) }
        let phases = mine.map { f.sidecar.slots.view($0.slot)?.phase }
        for m in mine { m.close() }
        peerSide.close(); f.close()
        return (finished, outcome.withLock { $0 }, purged, phases)
    }

    /// A peer writes "free" over the state of a slot of this very process:
    /// the OFD lock of a claim succeeds on a byte this open file description
    /// already holds, so a map() took the slot of a live mapping of its own
    /// (clearing that mapping's pins, and unlocking its byte at close).
    @Test func mapWhileAnOwnSlotReadsFreeTakesAnotherSlot() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 3))
        let m = try f.map()
        fill(m, page: 0, tag: 3)
        _ = try m.markNonVolatile(0..<page)
        Self.scribbleFree(f, slot: m.slot)
        let n = try f.map()
        let slots = (m.slot, n.slot)
        n.close()
        try f.markVolatile(0..<page)
        let purged = try f.purge(0..<page)
        #expect(slots.0 != slots.1, "map() took slot \(slots.1) of a live mapping of its own process")
        #expect(purged == 0, "the pinned page was purged: its mapping's slot was taken and released by another mapping")
        #expect(look(m, page: 0, tag: 3) == "tag")
        m.close(); f.close()
    }

    @Test func mapAgainstLiveSlotsScribbledFreeTakesTheFreeOne() throws {
        let o = try Self.mapAgainstScribbledSlots(held: 6, maxMappers: 7)
        #expect(o.finished, "map() still running after peerPatience + 3 s against 6 live slots a peer scribbled free: \(o.outcome)")
        #expect(o.outcome == "mapped slot 6", "map() against 6 live slots scribbled free: \(o.outcome)")
        #expect(o.purged == 0, "the peer's pinned page was purged: its slot was freed under it")
        #expect(o.phases.allSatisfy { $0 == .live }, "the peer's slots after its pins: \(o.phases)")
    }

    @Test func mapWithEveryLiveSlotScribbledFreeThrowsTooManyMappers() throws {
        let o = try Self.mapAgainstScribbledSlots(held: 3, maxMappers: 3)
        #expect(o.finished, "map() still running after peerPatience + 3 s against 3 live slots a peer scribbled free: \(o.outcome)")
        #expect(o.outcome == "threw tooManyMappers(limit: 3)", "map() with every slot live but scribbled free: \(o.outcome)")
        #expect(o.purged == 0, "the peer's pinned page was purged: its slot was freed under it")
        #expect(o.phases.allSatisfy { $0 == .live }, "the peer's slots after its pins: \(o.phases)")
    }
}

extension PeerSlotTests {
    // MARK: - P1: fork() while a purge waits for a stalled peer

    /// A peer process holds the purge lock, held inside its purge (its
    /// heartbeat kept moving, so a waiter would wait up to
    /// `peerPatienceInAll`); thread A's purge waits for it. withPurgeLock
    /// waited holding the file's purgeMutex, which the files layer's at-fork
    /// prepare takes: fork() returned only when A's wait ended. Now the wait
    /// holds no lock of this process: fork() returns while A is still
    /// waiting (the hook says it waits; its result is not in yet), and the
    /// child maps, writes, purges (the peer still holds the lock:
    /// `.peerNotResponding`) and closes the file.
    @Test func forkWhileAPurgeWaitsForAStalledPeer() throws {
        guard forkTestsRun("forkWhileAPurgeWaitsForAStalledPeer"), hooksAvailable("forkWhileAPurgeWaitsForAStalledPeer") else { return }
        let f = try VolatileFile(byteCount: 8 * page)
        try f.markVolatile(bytes(0..<8))
        let peer = try peerHeldInAPurge(of: f, pages: 0..<8, at: "locked", kill: 0)
        defer { peer.kill() }
        let waits = Atomic<Int>(0)
        f.testHook.withLock { $0 = { p in if p == .purgeLockWait { waits.add(1, ordering: .relaxed) } } }
        defer { f.testHook.withLock { $0 = nil } }
        let stopBeat = Atomic<Bool>(false)
        let beater = TestThread {
            // The peer's heartbeat (its purge record's progress), for at most
            // 4 s: the purge before the fix ends 2 s after that.
            let deadline = monotonicSeconds() + 4
            while !stopBeat.load(ordering: .relaxed) && monotonicSeconds() < deadline {
                f.sidecar.control.beat()
                usleep(1000)
            }
        }
        let purgeDone = Atomic<Bool>(false)
        let purgeError = Mutex<String>("")
        let purger = TestThread {
            do throws(VRangeError) { _ = try f.purgeAll() } catch { purgeError.withLock { $0 = "\(error)" } }
            purgeDone.store(true, ordering: .releasing)
        }
        #expect(waitUntil { waits.load(ordering: .relaxed) > 0 }, "the purge never waited for the peer")
        let pid = fork()
        if pid == 0 {
            vr_test_hook_reset()
            childWatchdog(10)
            _exit(Self.childUsesAndClosesTheFile(f))
        }
        // Sampled as soon as fork() returns, before the child is waited for.
        let stillWaiting = !purgeDone.load(ordering: .acquiring)
        stopBeat.store(true, ordering: .relaxed)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        purger.join()
        beater.join()
        #expect(stillWaiting, "fork() returned only after the purge's wait for the peer ended (\(purgeError.withLock { $0 })): the at-fork prepare waited for purgeMutex")
        #expect(exitCode(status) == 0, "fork child: \(describeStatus(status)) (SIGALRM: hung)")
        #expect(purgeError.withLock { $0 }.hasPrefix("peerNotResponding"), "the purge: \(purgeError.withLock { $0 })")
    }

    /// The fork child's part: map, write, read back, purge (the peer still
    /// holds the purge lock: `.peerNotResponding`), close. 0 when all held.
    static func childUsesAndClosesTheFile(_ f: VolatileFile) -> Int32 {
        guard let m = try? f.map() else { return 81 }
        fill(m, page: 0, tag: 5)
        guard look(m, page: 0, tag: 5) == "tag" else { return 82 }
        do throws(VRangeError) { _ = try f.purgeAll(); return 83 } catch {
            guard isPeerNotResponding(error) else { return 84 }
        }
        m.close()
        f.close()
        return 0
    }
}
