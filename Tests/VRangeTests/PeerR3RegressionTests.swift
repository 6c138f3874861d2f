// Regression tests for the four defects hostile review round 3 found in
// the shared-file peer protocol (its probes: branch probe/r3-peers,
// HostileR3PeerProbes.swift). The peer is a second VolatileFile over the
// same descriptors (its own open file description: its OFD locks conflict
// with ours as another process's do); what it writes into the sidecar is
// written here directly. Every wait is bounded.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Peer R3 regressions", .serialized) struct PeerR3RegressionTests {
    static func scribble(_ f: VolatileFile, slot i: Int, state: UInt64) {
        f.sidecar.slots.stateWord(i).pointee.store(state, ordering: .sequentiallyConsistent)
    }

    // MARK: - R3-1: the slot high-water hint scribbled low

    /// A pinner (this process's OFD or the peer's) pins page 0; a peer
    /// writes `hint` over the high-water hint (control word 8: 0 and 1 are
    /// in range, at or below the pinner's slot; the others out of range),
    /// and with `stateFree` the pinner's state free too; the file votes
    /// page 0 and purges. The pinned page must stay, and a pin must never
    /// report it intact over other contents.
    @Test(arguments: [false, true], [0, 1, ~0, 1 << 40, nil] as [UInt64?])
    func r3HighWaterScribbledLow(peerOwned: Bool, hint: UInt64?) throws {
        try Self.highWater(peerOwned: peerOwned, hint: hint, stateFree: false)
    }

    @Test(arguments: [false, true])
    func r3HighWaterAndStateScribbled(peerOwned: Bool) throws {
        try Self.highWater(peerOwned: peerOwned, hint: 0, stateFree: true)
    }

    static func highWater(peerOwned: Bool, hint: UInt64?, stateFree: Bool) throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 3))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let other = try f.map()  // slot 0: the pinner is slot 1, above a hint of 1
        let pinner = peerOwned ? try peerSide.map() : try f.map()
        #expect(pinner.slot == 1)
        fill(pinner, page: 0, tag: 3)
        _ = try pinner.markNonVolatile(0..<page)
        if let hint { f.sidecar.control.base[8].store(hint, ordering: .sequentiallyConsistent) }
        if stateFree { scribble(f, slot: pinner.slot, state: 0) }
        try f.markVolatile(0..<page)
        let purged = try f.purge(0..<page) / page
        _ = try f.markNonVolatile(0..<page)
        let whilePinned = look(pinner, page: 0, tag: 3)
        let report = pageRuns(try pinner.markNonVolatile(0..<page))
        let after = look(pinner, page: 0, tag: 3)
        #expect(purged == 0, "a pinned page was purged: high-water hint scribbled \(String(describing: hint)), state free \(stateFree) (purged \(purged))")
        #expect(whilePinned == "tag", "the pinned page read \(whilePinned) while pinned")
        #expect(after == "tag" || report == [0..<1], "a pin reported page 0 intact (\(report)), its contents are \(after)")
        pinner.close(); other.close(); peerSide.close(); f.close()
    }

    // MARK: - R3-2: a live mapper that never voted, its record scribbled

    enum NeutralScribble: String, CaseIterable, Sendable {
        case none, stateFree, pageCountZero, pageCountNegative, firstPageHuge, kindGarbage, phaseGarbage
        func apply(_ f: VolatileFile, slot i: Int) {
            let s = f.sidecar.slots
            switch self {
            case .none: break
            case .stateFree: PeerR3RegressionTests.scribble(f, slot: i, state: 0)
            case .pageCountZero: s.field(i, 3).pointee.store(0, ordering: .relaxed)
            case .pageCountNegative: s.field(i, 3).pointee.store(~0, ordering: .relaxed)
            case .firstPageHuge: s.field(i, 2).pointee.store(1 << 62, ordering: .relaxed)
            case .kindGarbage: s.field(i, 1).pointee.store(99, ordering: .relaxed)
            case .phaseGarbage: PeerR3RegressionTests.scribble(f, slot: i, state: 1 << 8 | 7)
            }
        }
    }

    /// Mapper A (the peer's OFD) writes page 0 and never votes it; mapper B
    /// votes it; a peer writes over A's record. A purge must not take page
    /// 0 (A covers it without a vote), and A's pin must not report it
    /// intact over zeros.
    @Test(arguments: NeutralScribble.allCases)
    func r3NeutralMapperScribbled(scribble: NeutralScribble) throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 3))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let a = try peerSide.map()
        fill(a, page: 0, tag: 3)
        let b = try f.map()
        try b.markVolatile(0..<page)
        scribble.apply(f, slot: a.slot)
        let purged = try f.purge(0..<page) / page
        _ = try b.markNonVolatile(0..<page)
        let read = look(a, page: 0, tag: 3)
        let report = pageRuns(try a.markNonVolatile(0..<page))
        let after = look(a, page: 0, tag: 3)
        #expect(purged == 0, "\(scribble): a page a live mapper never voted was purged")
        #expect(read == "tag", "\(scribble): the never-voted page read \(read)")
        #expect(after == "tag" || report == [0..<1], "\(scribble): a pin reported page 0 intact (\(report)), its contents are \(after)")
        b.close(); a.close(); peerSide.close(); f.close()
    }

    /// Once A's own pin repaired its record, the scribble no longer blocks:
    /// A votes page 0 too, and the purge takes it.
    @Test func r3RepairedRecordCountsAgain() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 3))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let a = try peerSide.map()
        let b = try f.map()
        try b.markVolatile(0..<page)
        Self.scribble(f, slot: a.slot, state: 0)
        try a.markVolatile(0..<page)  // a vote repairs the record
        #expect(try f.purge(0..<page) / page == 1, "both live mappers voted page 0")
        b.close(); a.close(); peerSide.close(); f.close()
    }

    /// A private mapping (the peer's OFD) keeps every page it covers from
    /// being purged, the file's own votes included. A peer writes its state
    /// free: its kind still reads private, and it still keeps them.
    @Test func r3PrivateMapperScribbledFree() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 3))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let a = try peerSide.map(options: .init(privateMapping: true))
        try f.markVolatile(0..<page)
        Self.scribble(f, slot: a.slot, state: 0)
        let status = try f.status(0..<page)
        let purged = try f.purge(0..<page) / page
        #expect(purged == 0, "a page a live private mapping covers was purged (its state scribbled free)")
        #expect(status.purgeableBytes == 0 && status.privateMappers == 1, "status: \(status)")
        a.close(); peerSide.close(); f.close()
    }

    // MARK: - R3-3: status() with a live slot scribbled free

    @Test func r3StatusWithALiveSlotScribbledFree() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 3))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let a = try peerSide.map()
        fill(a, page: 0, tag: 3)
        let b = try f.map()
        try b.markVolatile(0..<page)
        let before = try f.status(0..<page)
        Self.scribble(f, slot: a.slot, state: 0)
        let after = try f.status(0..<page)
        #expect(before.purgeableBytes == 0 && before.sharedMappers == 2, "control: \(before)")
        #expect(after.purgeableBytes == 0, "status calls page 0 purgeable (\(after.purgeableBytes) bytes): A, alive, never voted it")
        #expect(after.sharedMappers == 2, "status counts \(after.sharedMappers) shared mappers: A is alive (its byte held)")
        b.close(); a.close(); peerSide.close(); f.close()
    }

    // MARK: - R3-4: a claim against a dead slot a peer keeps rewriting live

    /// Slot 0: live in the peer's hands, its state scribbled free (busy).
    /// Slot 1: no owner; peer threads keep writing its state live. Each
    /// look finds nothing, a reclaim frees slot 1, the peer writes it live
    /// again. map() must end within peerPatience (+ margin) all the same.
    @Test func r3ClaimAgainstADeadSlotRewrittenLive() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 2))
        let peerSide = try VolatileFile(adopting: try f.inheritableDescriptors())
        let held = try peerSide.map()
        #expect(held.slot == 0)
        Self.scribble(f, slot: 0, state: 0)
        let stop = Atomic<Bool>(false)
        let live = MapperSlots.state(.live, generation: 1)
        let started = Atomic<Bool>(false)
        let scribblers = (0..<3).map { _ in TestThread {
            let deadline = monotonicSeconds() + 20
            while !stop.load(ordering: .relaxed) && monotonicSeconds() < deadline {
                for _ in 0..<4096 { f.sidecar.slots.stateWord(1).pointee.store(live, ordering: .sequentiallyConsistent) }
                started.store(true, ordering: .relaxed)
            }
        } }
        _ = waitUntil(seconds: 5) { started.load(ordering: .relaxed) }
        let outcome = Mutex<String>("not finished")
        let bound = Double(VolatileFile.peerPatience.components.seconds) + 6
        let finished = finishes(within: bound, unblock: { stop.store(true, ordering: .relaxed) }) {
            let text: String
            let t0 = monotonicSeconds()
            do throws(VRangeError) {
                let m = try f.map()
                text = "mapped slot \(m.slot)"
                m.close()
            } catch { text = "threw \(error)" }
            outcome.withLock { $0 = text + String(format: " after %.1f s", monotonicSeconds() - t0) }
        }
        stop.store(true, ordering: .relaxed)
        for t in scribblers { t.join() }
        #expect(finished, "map() still running after peerPatience + 6 s while a peer rewrote a dead slot live: \(outcome.withLock { $0 })")
        held.close(); peerSide.close(); f.close()
    }
}
