// Purging a shared file: fallocate(PUNCH_HOLE | KEEP_SIZE) once per run of
// purgeable pages, race-safe across processes through the content map's
// per-page lock state (10), with the intent record of PurgeControl so that
// a purge whose process died is finished or undone by the next one to take
// the purge lock (or by anyone who waits too long on a locked page).
//
// Protocol of one purge (the purge lock held: this process's purgeMutex and
// the OFD lock on byte `slotCount` of the sidecar):
//   1. recover a dead holder's intent, reclaim dead mapper slots;
//   2. intent := locking [range];
//   3. per map word: lock (00 -> 10) the pages purgeable in a snapshot, then
//      re-read the rule (marks, pins, slots) and unlock the ones no longer
//      purgeable — a pin published before the lock is seen here, one
//      published after it sees the lock and waits;
//   4. per run of locked pages: intent := punching [run]; punch; give every
//      party that voted the page a purge notice; 10 -> 11; intent := locking;
//   5. intent := idle.
import CVRange
import Synchronization

extension VolatileFile {
    /// Purges every page of `range` that may be purged now (DESIGN.md §1c):
    /// no private mapping covers it, no live mapper pins it, and the file
    /// marked it volatile or every live shared mapper of it voted. Mapper
    /// slots of dead processes are reclaimed first (their votes and pins
    /// stop counting).
    ///
    /// - Returns: the bytes purged by this call.
    /// - Throws: a range error, `.closed`, or `.system` when the purge lock
    ///   cannot be taken.
    @discardableResult
    public func purge(_ range: Range<Int>) throws(VRangeError) -> Int {
        try checkOpen()
        let pages = try geometry.pages(range)
        return try withUse(.filePurge) { () throws(VRangeError) -> Int in
            try withPurgeLock { purgeLocked(pages) } << geometry.pageShift
        }
    }

    /// Purges every purgeable page of the file. Returns the bytes purged.
    @discardableResult
    public func purgeAll() throws(VRangeError) -> Int {
        try purge(0..<size)
    }

    /// Runs `body` holding the purge lock, after finishing any purge a dead
    /// holder left half done.
    func withPurgeLock<R>(_ body: () -> R) throws(VRangeError) -> R {
        let ps = try processState()
        let byte = layout.purgeLockByte
        return try purgeMutex.withLock { _ throws(VRangeError) -> R in
            do throws(SystemError) { _ = try ps.liveness.lock(byte, wait: true) } catch { throw .system(error) }
            defer { ps.liveness.unlock(byte) }
            recoverIfNeeded()
            return body()
        }
    }

    private func purgeLocked(_ pages: Range<Int>) -> Int {
        reclaimDeadSlots()
        let control = sidecar.control
        let content = sidecar.content
        control.beginLocking(pages, pid: Kernel.processID)
        var total = 0
        var runs = RunCoalescer(maxRun: VolatilityMap.maxRun)
        for w in VolatilityMap.wordsCovering(pages) {
            let m = VolatilityMap.lowMask(word: w, pages: pages)
            let candidates = sidecar.purgeable(word: w) & m
            if candidates == 0 { continue }
            let locked = lock(word: w, present: candidates)
            if locked == 0 { continue }
            hook(.purgeLocked(word: w))
            let keep = locked & sidecar.purgeable(word: w)
            if keep != locked { unlock(word: w, locked & ~keep) }
            VolatilityMap.forEachRun(in: keep, word: w) { first, count in
                runs.add(first, count) { total += punch($0) }
            }
            _ = content
        }
        runs.flush { total += punch($0) }
        control.end()
        return total
    }

    /// Records the intent, then completes `run` (all locked by this purge).
    private func punch(_ run: Range<Int>) -> Int {
        sidecar.control.beginPunching(run)
        hook(.purgeBeforePunch(run))
        let n = complete(run)
        sidecar.control.endPunching()
        sidecar.control.countPurge()
        return n
    }

    /// Punches the pages of `run` still locked (10), gives every party that
    /// voted them a purge notice, and marks them purged (11). Idempotent:
    /// used by a purge and by the recovery of a dead one.
    func complete(_ run: Range<Int>) -> Int {
        var done = 0
        sidecar.content.forEachRun(of: .locked, in: run) { sub in
            let bytes = geometry.bytes(sub)
            protectLocalMappings(sub)
            do { try Kernel.punchHole(fd: descriptors.data, offset: bytes.lowerBound, length: bytes.count) } catch {
                punchFailureCount.add(1, ordering: .relaxed)
                unprotectLocalMappings(sub)
                sidecar.content.release(sub, to: .nonVolatile)
                return
            }
            notePurge(sub)
            hook(.purgeAfterPunch(sub))
            // Before the release: an optimistic access that read a punched
            // page and finds it present again afterwards sees the discard.
            sidecar.content.bumpGenerations(sub)
            sidecar.content.release(sub, to: .purged)
            done += sub.count
        }
        return done
    }

    /// Every party (the file, each non-free slot) that has a page of `run`
    /// voted gets a purge notice for it.
    private func notePurge(_ run: Range<Int>) {
        let bound = sidecar.slotBound
        for w in VolatilityMap.wordsCovering(run) {
            let m = VolatilityMap.lowMask(word: w, pages: run)
            sidecar.fileMarks.notePurge(word: w, mask: m)
            for i in 0..<bound where sidecar.slots.view(i) != nil {
                sidecar.marks(ofSlot: i).notePurge(word: w, mask: m)
            }
        }
    }

    /// Finishes what a purge-lock holder that died left in flight: completes
    /// the run it was punching, unlocks every other page it had locked.
    /// Called with the purge lock held.
    func recoverIfNeeded() {
        let control = sidecar.control
        let phase = control.phase
        if phase == .idle { return }
        let n = pageCount
        if phase == .punching {
            let (lo, hi) = control.punchRange
            let run = min(max(lo, 0), n)..<min(max(hi, lo, 0), n)
            _ = complete(run)
        }
        let (lo, hi) = control.lockRange
        let range = min(max(lo, 0), n)..<min(max(hi, lo, 0), n)
        sidecar.content.forEachRun(of: .locked, in: range) { sidecar.content.release($0, to: .nonVolatile) }
        control.end()
        control.countRecovery()
    }

    // MARK: - Page locks of the content map (one place, for the map's owner)

    /// Locks (00 -> 10) the pages of `present` in word `w` that are still
    /// present; returns the low bits of those it locked.
    func lock(word w: Int, present: UInt64) -> UInt64 {
        let word = sidecar.content.words + w
        var old = word.pointee.load(ordering: .relaxed)
        while true {
            let eligible = VolatilityMap.pages(in: old, .nonVolatile) & present
            if eligible == 0 { return 0 }
            let (done, seen) = word.pointee.compareExchange(
                expected: old, desired: old | eligible << 1, ordering: .sequentiallyConsistent)
            if done { return eligible }
            old = seen
        }
    }

    /// Locks (11 -> 10) the pages of `mask` in word `w` that are purged.
    func lock(word w: Int, purged mask: UInt64) -> UInt64 {
        let word = sidecar.content.words + w
        var old = word.pointee.load(ordering: .relaxed)
        while true {
            let eligible = VolatilityMap.pages(in: old, .purged) & mask
            if eligible == 0 { return 0 }
            let (done, seen) = word.pointee.compareExchange(
                expected: old, desired: old & ~eligible, ordering: .sequentiallyConsistent)
            if done { return eligible }
            old = seen
        }
    }

    /// Unlocks (10 -> 00) pages of word `w` this purge holds.
    func unlock(word w: Int, _ mask: UInt64) {
        sidecar.content.words[w].bitwiseAnd(~(mask << 1), ordering: .sequentiallyConsistent)
    }

    // MARK: - Waiting on a locked page

    /// Called while a page of `pages` stays locked (10): yields; every
    /// millisecond, when no purge of this process is in flight, tries the
    /// purge lock without waiting: if it is free, the page's locker died (a
    /// live one holds the lock until its pages are released) and this
    /// process recovers its intent. So a waiter is blocked at most about a
    /// millisecond plus one punch of at most `VolatilityMap.maxRun` pages
    /// by the death of a purging process.
    ///
    /// A page still locked at a second such look, a millisecond or more
    /// after the first, is held by nobody who holds the purge lock and
    /// recorded no intent: its locker died outside the intent protocol, or
    /// a peer scribbled over the sidecar. It is completed as a purge
    /// (punched, noticed, marked purged), as the fault handler takes a page
    /// locked too long for purged: so no scribble can make a waiter wait
    /// for ever. (The only locker that holds no purge lock is the fault
    /// handler re-discarding a purged page, which ends purged anyway.)
    func waitForLockedPage(_ wait: inout LockWait, pages: Range<Int>) {
        Kernel.yield()
        wait.spins += 1
        if wait.spins & 63 != 0 { return }
        let now = Kernel.monotonicNanoseconds()
        if wait.last == 0 { wait.last = now; return }
        if now - wait.last < 1_000_000 { return }
        wait.last = now
        if tryRecoverOrphanedLocks(breaking: wait.looks >= 1 ? pages : nil) { wait.looks += 1 }
    }

    /// Takes the purge lock if it is free right now and recovers a dead
    /// holder's intent; with `breaking`, also completes every page of it
    /// still locked (see `waitForLockedPage`). Returns whether it could look.
    @discardableResult
    func tryRecoverOrphanedLocks(breaking: Range<Int>? = nil) -> Bool {
        guard let ps = try? processState() else { return false }
        let byte = layout.purgeLockByte
        return purgeMutex.withLockIfAvailable { _ -> Bool in
            guard (try? ps.liveness.lock(byte, wait: false)) == true else { return false }
            defer { ps.liveness.unlock(byte) }
            recoverIfNeeded()
            if let pages = breaking { breakOrphanedLocks(in: pages) }
            return true
        } ?? false
    }

    /// Completes, as a purge would, every page of `pages` that is locked
    /// while this process holds the purge lock and nothing is in flight.
    /// Called with the purge lock held, after `recoverIfNeeded`.
    func breakOrphanedLocks(in pages: Range<Int>) {
        let control = sidecar.control
        var broken = false
        sidecar.content.forEachRun(of: .locked, in: pages) { run in
            control.beginLocking(run, pid: Kernel.processID)
            control.beginPunching(run)
            _ = complete(run)
            control.end()
            broken = true
        }
        if broken { control.countRecovery() }
    }

    // MARK: - Local mprotect-fallback mappings

    /// Mappings of this process that use the mprotect fallback are made
    /// inaccessible before a run is punched (userfaultfd mappings fault by
    /// themselves in every process).
    private func protectLocalMappings(_ run: Range<Int>) {
        let snapshot = mprotectMappings()
        hook(.mappingsSnapshot(run))
        for m in snapshot { m.protect(run, accessible: false) }
    }

    private func unprotectLocalMappings(_ run: Range<Int>) {
        for m in mprotectMappings() { m.protect(run, accessible: true) }
    }

    private func mprotectMappings() -> [FileMapping] {
        mappings.withLock { $0.values.compactMap(\.mapping).filter { $0.faultMechanism == .mprotect } }
    }
}

/// State of one wait on a locked page.
struct LockWait {
    var spins = 0
    var last: UInt64 = 0
    /// Looks taken with the purge lock held (see `waitForLockedPage`).
    var looks = 0
}
