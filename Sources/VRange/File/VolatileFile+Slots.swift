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
import Synchronization

extension VolatileFile {
    /// Claims a slot of `kind` over file pages `pages` and publishes it live.
    ///
    /// - Throws: `.tooManyMappers` when every slot belongs to a live mapping;
    ///   `.system` when the OFD lock cannot be taken.
    func claimSlot(kind: SlotKind, pages: Range<Int>) throws(VRangeError) -> Int {
        let ps = try processState()
        let slots = sidecar.slots
        for attempt in 0..<2 {
            let found = try slotMutex.withLock { _ throws(VRangeError) -> Int? in
                for i in 0..<layout.slotCount {
                    guard let claimed = slots.tryClaim(i) else { continue }
                    // The previous owner may hold the byte for a moment while it
                    // finishes freeing the slot: wait for it, boundedly.
                    let deadline = Kernel.monotonicNanoseconds() + 1_000_000_000
                    var locked = false
                    repeat {
                        do throws(SystemError) { locked = try ps.liveness.lock(i) } catch { throw .system(error) }
                        if !locked { Kernel.yield() }
                    } while !locked && Kernel.monotonicNanoseconds() < deadline
                    if !locked {
                        if slots.beginReclaim(i, observed: claimed) { slots.finishReclaim(i) }
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
                    return i
                }
                return nil
            }
            if let i = found { return i }
            // Every slot taken: reclaim the dead ones, all of them (the
            // high-water hint may have been scribbled below a dead slot).
            if attempt == 0 && reclaimDeadSlots(all: true) == 0 { break }
        }
        throw .tooManyMappers(limit: layout.slotCount)
    }

    /// Withdraws a slot this process owns and keeps it: reclaiming (its
    /// votes no longer count) with its marks cleared, its OFD byte still
    /// held, so that nobody claims it until `releaseSlot` (a closed
    /// mapping's deinit: a mark of another thread that passed its range
    /// check before the close may still write into these marks).
    func withdrawSlot(_ i: Int) {
        guard let ps = try? processState(), ps.owned.contains(i) else { return }
        slotMutex.withLock { _ in
            if let v = sidecar.slots.view(i), sidecar.slots.beginReclaim(i, observed: v.state) {
                clearMarks(ofSlot: i)
            }
        }
    }

    /// Releases a slot this process owns: its marks are withdrawn first.
    func releaseSlot(_ i: Int) {
        guard let ps = try? processState(), ps.owned.contains(i) else { return }
        slotMutex.withLock { _ in
            if let v = sidecar.slots.view(i), sidecar.slots.beginReclaim(i, observed: v.state) {
                clearMarks(ofSlot: i)
                sidecar.slots.finishReclaim(i)
            }
            ps.liveness.unlock(i)
            state.withLock { _ = $0.owned.remove(i) }
        }
    }

    /// Reclaims the slots whose owner died (OFD byte unlocked), below the
    /// high-water mark (`all`: every slot). Returns how many it reclaimed.
    @discardableResult
    func reclaimDeadSlots(all: Bool = false) -> Int {
        guard let ps = try? processState() else { return 0 }
        let slots = sidecar.slots
        var reclaimed = 0
        slotMutex.withLock { _ in
            for i in 0..<(all ? layout.slotCount : sidecar.slotBound) where !ps.owned.contains(i) {
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
