// Mapper slots: claimed by a mapping, held alive by an OFD lock on byte i,
// released by the owner's close or reclaimed by a survivor after its death.
//
// Who may change slot i: whoever holds OFD byte i (its owner, or a
// reclaimer), except the free -> claiming CAS, after which the claimer takes
// the byte and re-checks that the state is still its own. A process can die
// at any instant:
//   - claiming, byte not yet locked: the slot reads claiming and unlocked; a
//     reclaimer frees it (the claimer, if alive, sees its state moved and
//     retries);
//   - live, or releasing (marks half cleared): the byte is unlocked at death;
//     the next purge (or a claim that finds no free slot) reclaims it:
//     -> reclaiming, marks punched out (votes, pins, notices gone), -> free;
//   - a reclaimer dying half way leaves `reclaiming` and an unlocked byte:
//     the next one redoes it (it is idempotent).
// The state word is a hint a peer may scribble; the OFD byte is the truth:
//   - a slot that reads free while its byte is held is alive: a claimer
//     gives it back (claiming -> free) and looks elsewhere, never waiting
//     on it with slotMutex held, never freeing it; a purge counts its pins,
//     gives it notices all the same (AliveSlots), and takes it to cover
//     every page without a vote, as it does a live record that no owner
//     could have written (Sidecar.purgeable);
//   - the high-water hint bounds no scan by itself: AliveSlots.bound also
//     asks the OFD bytes above it;
//   - the owner keeps a private copy of what it published (FileMapping's
//     slotState) and writes the record again when a pin or a vote finds it
//     changed (repairSlot), so its votes count again.
import Synchronization

extension VolatileFile {
    /// Claims a slot of `kind` over file pages `pages` and publishes it live.
    /// Returns its index and the state word published (the owner's private
    /// record of it: see `repairSlot`).
    ///
    /// A slot that reads free but whose OFD byte another process holds is
    /// alive (a peer scribbled its state, or its owner is finishing a
    /// release): it is given back as it was found, never reclaimed. Such
    /// slots are looked at again, slotMutex released between the looks,
    /// for at most `peerPatience` in all.
    ///
    /// - Throws: `.tooManyMappers` when no slot could be had: every slot
    ///   belongs to a live mapping (or still did after `peerPatience`);
    ///   `.system` when the OFD lock cannot be taken.
    func claimSlot(kind: SlotKind, pages: Range<Int>) throws(VRangeError) -> (index: Int, state: UInt64) {
        let ps = try processState()
        let slots = sidecar.slots
        let deadline = Kernel.monotonicNanoseconds() &+ PeerWait.patience
        var reclaimedLast = false
        while true {
            var busy = false
            let found = try slotMutex.withLock { _ throws(VRangeError) -> (index: Int, state: UInt64)? in
                // A slot this process owns that reads free (a peer scribbled
                // it) is skipped: its byte is held by this very open file
                // description, so the lock below would succeed on it.
                let owned = state.withLock { $0.owned }
                for i in 0..<layout.slotCount where !owned.contains(i) {
                    guard let claimed = slots.tryClaim(i) else { continue }
                    // A previous owner frees the slot, then unlocks its byte:
                    // a few tries cover that moment. Never waits longer here,
                    // with slotMutex held (fork() and this file's other maps
                    // and closes would wait too).
                    var locked = false
                    for _ in 0..<16 {
                        do throws(SystemError) { locked = try ps.liveness.lock(i) } catch {
                            slots.giveBack(i, claimed: claimed)
                            throw .system(error)
                        }
                        if locked { break }
                        Kernel.yield()
                    }
                    if !locked {
                        slots.giveBack(i, claimed: claimed)
                        busy = true
                        continue
                    }
                    sidecar.control.raiseHighWater(to: i + 1)
                    // A free slot's marks are zero, unless a peer scribbled
                    // over them: they must never become this mapper's votes
                    // or pins. (Punching pages already empty costs no memory.)
                    clearMarks(ofSlot: i)
                    guard slots.publish(i, claimed: claimed, kind: kind, pages: pages, pid: Kernel.processID) else {
                        ps.liveness.unlock(i)  // a reclaimer took it back meanwhile
                        continue
                    }
                    state.withLock { _ = $0.owned.insert(i) }
                    return (i, MapperSlots.state(.live, generation: claimed >> 8))
                }
                return nil
            }
            if let found { return found }
            // Every slot taken: reclaim the dead ones, all of them (the
            // high-water hint may have been scribbled below a dead slot).
            // A slot reclaimed is looked at again at once, but only every
            // other time: a peer that keeps writing a dead slot live must
            // not make this loop spin, nor outlast the deadline, which
            // holds on every round.
            let reclaimed = reclaimDeadSlots(all: true) > 0
            if !busy && !reclaimed { break }
            if Kernel.monotonicNanoseconds() >= deadline { break }
            if reclaimed && !reclaimedLast {
                reclaimedLast = true
                continue
            }
            reclaimedLast = false
            Kernel.sleep(nanoseconds: 10_000_000)
        }
        throw .tooManyMappers(limit: layout.slotCount)
    }

    /// Whether slot `i`'s record still says what its owner, this process,
    /// published (`published`, `kind`, `pages`); when a peer wrote over it,
    /// writes it again (under slotMutex, unless `isWithdrawn()`: a closing
    /// mapping's slot is being withdrawn). Only the owner, which holds the
    /// slot's OFD byte, may: a claimer that finds the byte held gives the
    /// slot back. Four loads when nothing changed. Returns whether it
    /// repaired.
    @discardableResult
    func repairSlot(_ i: Int, published: UInt64, kind: SlotKind, pages: Range<Int>, isWithdrawn: () -> Bool) -> Bool {
        let slots = sidecar.slots
        // The high-water hint too: a scan bounds itself with the OFD bytes
        // (AliveSlots.bound), but a hint that covers this slot spares it
        // the probes.
        func intact() -> Bool {
            sidecar.control.base[8].load(ordering: .relaxed) > UInt64(i)
                && slots.stateWord(i).pointee.load(ordering: .acquiring) == published
                && slots.field(i, 1).pointee.load(ordering: .relaxed) == kind.rawValue
                && slots.field(i, 2).pointee.load(ordering: .relaxed) == UInt64(pages.lowerBound)
                && slots.field(i, 3).pointee.load(ordering: .relaxed) == UInt64(pages.count)
        }
        if _fastPath(intact()) { return false }
        return slotMutex.withLock { _ -> Bool in
            guard !isWithdrawn(), !intact() else { return false }
            guard let ps = try? processState(), ps.owned.contains(i) else { return false }
            sidecar.control.raiseHighWater(to: i + 1)
            slots.field(i, 1).pointee.store(kind.rawValue, ordering: .relaxed)
            slots.field(i, 2).pointee.store(UInt64(pages.lowerBound), ordering: .relaxed)
            slots.field(i, 3).pointee.store(UInt64(pages.count), ordering: .relaxed)
            slots.field(i, 4).pointee.store(UInt64(UInt32(bitPattern: Kernel.processID)), ordering: .relaxed)
            slots.stateWord(i).pointee.store(published, ordering: .sequentiallyConsistent)
            return true
        }
    }

    /// Withdraws a slot this process owns and keeps it: reclaiming (its
    /// votes no longer count) with its marks cleared, its OFD byte still
    /// held, so that nobody claims it until `releaseSlot` (a closed
    /// mapping's deinit: a mark of another thread that passed its range
    /// check before the close may still write into these marks).
    func withdrawSlot(_ i: Int) {
        guard let ps = try? processState(), ps.owned.contains(i) else { return }
        slotMutex.withLock { _ in
            sidecar.slots.beginOwnReclaim(i)
            clearMarks(ofSlot: i)
        }
    }

    /// Releases a slot this process owns: its marks are withdrawn first.
    func releaseSlot(_ i: Int) {
        guard let ps = try? processState(), ps.owned.contains(i) else { return }
        slotMutex.withLock { _ in
            sidecar.slots.beginOwnReclaim(i)
            clearMarks(ofSlot: i)
            sidecar.slots.finishReclaim(i)
            ps.liveness.unlock(i)
            state.withLock { _ = $0.owned.remove(i) }
        }
    }

    /// Reclaims the slots whose owner died (OFD byte unlocked), below
    /// `AliveSlots.bound` (`all`: every slot). Returns how many it reclaimed.
    @discardableResult
    func reclaimDeadSlots(all: Bool = false) -> Int {
        guard let ps = try? processState() else { return 0 }
        let slots = sidecar.slots
        var reclaimed = 0
        let bound = all ? layout.slotCount : AliveSlots(self).bound
        slotMutex.withLock { _ in
            for i in 0..<bound where !ps.owned.contains(i) {
                guard slots.view(i) != nil, !ps.liveness.heldElsewhere(i) else { continue }
                guard (try? ps.liveness.lock(i)) == true else { continue }
                defer { ps.liveness.unlock(i) }
                guard let v = slots.view(i), slots.beginReclaim(i, observed: v.state) else { continue }
                clearMarks(ofSlot: i)
                slots.finishReclaim(i)
                reclaimed += 1
            }
        }
        return reclaimed
    }

    /// Zeroes slot `i`'s marks: the whole pages inside them are punched out
    /// of the sidecar (freeing their memory), the edges are stored zero.
    func clearMarks(ofSlot i: Int) {
        let bytes = sidecar.marksBytes(ofSlot: i)
        let page = SidecarLayout.alignment
        let innerLo = (bytes.lowerBound + page - 1) & ~(page - 1)
        let innerHi = bytes.upperBound & ~(page - 1)
        var zeroed: [Range<Int>] = [bytes]
        if innerHi > innerLo,
           (try? Kernel.punchHole(fd: descriptors.sidecar, offset: innerLo, length: innerHi - innerLo)) != nil {
            zeroed = [bytes.lowerBound..<innerLo, innerHi..<bytes.upperBound]
        }
        for r in zeroed where !r.isEmpty {
            let words = (sidecar.base + r.lowerBound).assumingMemoryBound(to: Atomic<UInt64>.self)
            for k in 0..<(r.count / 8) { words[k].store(0, ordering: .relaxed) }
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }
}

/// Which slots that read free still have a live owner (their OFD byte is
/// held), asked once per slot per purge (memoized: one F_OFD_GETLK each).
/// A free state word is only a hint: a peer may have scribbled it over a
/// live mapper's slot, and that mapper's pins must count all the same
/// (DESIGN.md §9, peers). Slots this process owns are alive.
///
/// `bound`: the slots a scan must look at. The high-water hint is shared
/// memory a peer may write anything into (0 included), so it only bounds
/// a scan once the OFD bytes above it are known free: one F_OFD_GETLK over
/// them (one more per lock found), taken once; a slot this process owns
/// above it raises it too; a hint out of range counts as 0. The hint is
/// read again at each use, so a slot claimed meanwhile (its claimer raises
/// the hint after taking its byte) is looked at.
final class AliveSlots {
    private let liveness: Liveness?
    private let owned: Set<Int>
    private let sidecar: Sidecar
    /// 0 not asked yet, 1 alive, 2 not.
    private var known: [UInt8] = []
    /// Slots at or above it had no live owner when probed (once).
    private lazy var probed: Int = probeBound()

    init(_ file: VolatileFile) {
        let ps = try? file.processState()
        liveness = ps?.liveness
        owned = ps?.owned ?? []
        sidecar = file.sidecar
    }

    var bound: Int { max(probed, sidecar.slotHint) }

    private func probeBound() -> Int {
        let n = sidecar.layout.slotCount
        var h = sidecar.slotHint
        if let top = owned.max(), top >= h { h = top + 1 }
        guard let liveness else { return n }  // never drop a slot on doubt
        return h < n ? liveness.heldElsewhereBound(h..<n) : n
    }

    func callAsFunction(_ i: Int) -> Bool {
        if owned.contains(i) { return true }
        guard let liveness else { return true }  // never drop a pin on doubt
        if i >= known.count { known += [UInt8](repeating: 0, count: i + 1 - known.count) }
        if known[i] == 0 { known[i] = liveness.heldElsewhere(i) ? 1 : 2 }
        return known[i] == 1
    }
}
