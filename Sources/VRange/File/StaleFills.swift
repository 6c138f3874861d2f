// Stale fills of a shared file's pages. The fault handler fills a present
// page (00) that a mapping touches; when a purge punched it meanwhile, the
// fill may have landed after the punch, leaving the page present in the
// file, as zeros, while it reads purged (11). The handler cannot take the
// purge lock (it is async-signal-safe and never waits on another process),
// so a punch of its own could never be ordered against a pin of another
// mapper that repopulates and writes the page meanwhile (the defect
// PageProtocol.pml's SPLIT_TOUCH found: MADV_REMOVE punched a pinned page).
// So it undoes the fill in its own mapping only and records the page in the
// mapping's stale-fill table (vr_region_info.stale, fault_handler.c); here
// the library takes the records and punches the pages the safe way, as an
// optimistic access's faults are punched: under the purge lock, the intent
// first, locking only the pages still purged (11 -> 10), then complete (a
// page a pin repopulated meanwhile is left alone).
//
// When: every holder of the purge lock in this process punches every
// mapping's stale fills of the file after recovery (a purge, the Purger's
// pass, an access's punch, a huge-page repopulation); a mapping's pin
// (markNonVolatile) and close() try the lock without waiting (a close hands
// what is left to the file's own table, which the next holder punches). A
// vote never does: it makes no syscall. Until then a state-11 page may be
// present as zeros: a raw touch of it reads zeros instead of raising
// SIGBUS (in other mappings; under userfaultfd in the recording one too);
// every report (pins, marks, accesses) decides from the page states
// and still says purged (RELIABILITY.md, "Known limits").
import CVRange
import Synchronization

/// A view of a stale-fill table (see vr_region_info.stale): word 0 says a
/// record was made, word 1 is the overflow flag (every page), then
/// `slotCount` slots, each 0 or 1 + a page index.
struct StaleFillTable {
    let base: UnsafeMutablePointer<UInt64>

    static let wordCount = Int(VR_STALE_WORDS)
    static let slotCount = Int(VR_STALE_SLOTS)

    private var words: UnsafeMutablePointer<Atomic<UInt64>> {
        UnsafeMutableRawPointer(base).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    /// Whether a record waits to be taken (one relaxed load).
    @inline(__always)
    var hasRecords: Bool { words[0].load(ordering: .relaxed) != 0 }

    /// Records page `index`, as the handler does (stale_record).
    func record(_ index: Int) {
        let want = UInt64(index) &+ 1
        var recorded = false
        for i in 0..<Self.slotCount where !recorded {
            let (stored, seen) = words[2 + i].compareExchange(expected: 0, desired: want, ordering: .sequentiallyConsistent)
            recorded = stored || seen == want
        }
        if !recorded { words[1].store(1, ordering: .sequentiallyConsistent) }
        words[0].store(1, ordering: .sequentiallyConsistent)
    }

    /// Takes every record: `all` after an overflow, else the page indices.
    /// The "made" word is cleared first: a record made while this runs sets
    /// it again, for the next taker.
    func take() -> (all: Bool, indices: [Int]) {
        guard words[0].exchange(0, ordering: .sequentiallyConsistent) != 0 else { return (false, []) }
        let all = words[1].exchange(0, ordering: .sequentiallyConsistent) != 0
        var indices: [Int] = []
        for i in 0..<Self.slotCount {
            let v = words[2 + i].exchange(0, ordering: .sequentiallyConsistent)
            if v != 0 { indices.append(Int(truncatingIfNeeded: v &- 1)) }
        }
        return (all, indices)
    }
}

/// A stale-fill table in memory of its own: a file's, for the records its
/// closed mappings left (file pages).
final class OwnedStaleFillTable: @unchecked Sendable {
    let table: StaleFillTable

    init() {
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: StaleFillTable.wordCount)
        words.initialize(repeating: 0, count: StaleFillTable.wordCount)
        table = StaleFillTable(base: words)
    }

    deinit { table.base.deallocate() }
}

extension FileMapping {
    /// The mapping's table, in `handlerMetadata` (after the pin record).
    var staleFills: StaleFillTable { StaleFillTable(base: staleTable) }

    /// Takes the handler's records: file pages of this mapping's region.
    func takeStaleFills() -> [Range<Int>] {
        let (all, indices) = staleFills.take()
        let region = alignedFirstPage..<pages.upperBound
        if all { return [region] }
        return indices.compactMap { i in
            let page = alignedFirstPage &+ i
            return region.contains(page) ? page..<(page + 1) : nil
        }
    }

    /// A pin's drain: punches this process's stale fills of the file now if
    /// the purge lock is free (never waits; what is left stays recorded).
    func drainStaleFills() {
        guard let token = file.beginInternalUse() else { return }
        defer { file.endUse(token) }
        file.tryPunchStaleFills()
    }

    /// close(): no record can be made any more (the region is withdrawn):
    /// what is left goes to the file's table, for the next holder of the
    /// purge lock in this process.
    func handOverStaleFills() {
        if !staleFills.hasRecords { return }
        for run in takeStaleFills() {
            if run.count > StaleFillTable.slotCount {
                for page in run.prefix(StaleFillTable.slotCount + 1) { file.orphanedStaleFills.table.record(page) }
            } else {
                for page in run { file.orphanedStaleFills.table.record(page) }
            }
        }
    }
}

extension VolatileFile {
    /// This process's usable mappings of the file with stale fills to take.
    /// The strong references are made outside the registry's lock (a
    /// mapping whose last reference one is deinitializes there, and closes).
    func mappingsWithStaleFills() -> [FileMapping] {
        let all = mappings.withLock { Array($0.values) }
        let generation = vr_fork_generation()
        return all.compactMap(\.mapping).filter { $0.forkGeneration == generation && $0.staleFills.hasRecords }
    }

    /// Punches the stale fills of `list` and those closed mappings left, where
    /// still purged. Called with the purge lock held, after recovery.
    func punchStaleFills(_ list: [FileMapping]) {
        var targets: [Range<Int>] = []
        let (all, indices) = orphanedStaleFills.table.take()
        if all {
            targets.append(0..<pageCount)
        } else {
            for page in indices where page < pageCount { targets.append(page..<(page + 1)) }
        }
        for m in list { targets += m.takeStaleFills() }
        if !targets.isEmpty { punchPurgedAgain(targets) }
    }

    /// Punches the stale fills if the purge lock is free now (never waits:
    /// a pin, a close). The caller holds a use of the file.
    func tryPunchStaleFills() {
        guard let ps = try? processState() else { return }
        let list = mappingsWithStaleFills()
        defer { withExtendedLifetime(list) {} }  // released outside the lock
        let byte = layout.purgeLockByte
        _ = purgeMutex.withLockIfAvailable { _ -> Bool in
            guard (try? ps.liveness.lock(byte)) == true else { return false }
            defer { ps.liveness.unlock(byte) }
            recoverIfNeeded()
            punchStaleFills(list)
            return true
        }
    }

    /// Pages filled with zeros after a purge punched them (an optimistic
    /// access's faults, the handler's stale fills): punches those still
    /// purged out of the file again. Called with the purge lock held. The
    /// intent first: a process killed between locking a page and punching
    /// it leaves it for the next purge-lock holder to complete (the pages
    /// were purged: completing is right); only pages still purged are
    /// locked (11 -> 10): a page a pin repopulated meanwhile is left alone.
    func punchPurgedAgain(_ targets: [Range<Int>]) {
        let control = sidecar.control
        for t in targets {
            control.beginLocking(t, pid: Kernel.processID)
            control.beginPunching(t)
            for w in VolatilityMap.wordsCovering(t) {
                let locked = lock(word: w, purged: VolatilityMap.lowMask(word: w, pages: t))
                hook(.accessLocked(word: w))
                VolatilityMap.forEachRun(in: locked, word: w) { first, count in
                    _ = complete(first..<(first + count))
                }
            }
            control.end()
        }
    }
}
