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
//
// PageProtocol.pml beside this file models this protocol with the pin
// (VolatileFile.unmark), votes, the fault handler's decision
// (fault_handler.c, handle_shared_page), a crash or a stop of any process
// at any step and the recovery; .ci/model checks it exhaustively with spin.
// Change the model with the code.
import CVRange
import Synchronization

extension VolatileFile {
    /// How long a call waits on another process that shares the file (for
    /// the purge lock, or for a page its purge locked) while that process
    /// makes no progress, before it throws `.peerNotResponding`: 2 seconds.
    /// A process that died is never waited for (its locks are released by
    /// the kernel and its half-done work recovered at once); a live one
    /// that keeps making progress (its purge record's heartbeat moves) is
    /// waited for up to `peerPatienceInAll`.
    public static let peerPatience = Duration.seconds(2)

    /// The longest any one wait on other processes lasts, progress or not
    /// (a peer that keeps writing the heartbeat while holding the lock is
    /// not waited for beyond it): 60 seconds.
    public static let peerPatienceInAll = Duration.seconds(60)

    /// Purges every page of `range` that may be purged now (DESIGN.md §1c):
    /// no private mapping covers it, no live mapper pins it, and the file
    /// marked it volatile or every live shared mapper of it voted. Mapper
    /// slots of dead processes are reclaimed first (their votes and pins
    /// stop counting).
    ///
    /// - Returns: the bytes purged by this call.
    /// - Throws: a range error, `.closed`, `.peerNotResponding` when another
    ///   process holds the purge lock and made no progress for
    ///   `peerPatience` (nothing was purged then), or `.system` when the
    ///   purge lock cannot be taken.
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
    /// holder left half done. The OFD lock is tried, never waited for in
    /// the kernel: a holder that dies releases it (the next try takes it
    /// and recovers), a live one that makes no progress for `peerPatience`
    /// ends the wait with `.peerNotResponding` (DESIGN.md §9, peers).
    ///
    /// purgeMutex (which serializes this process's holders: they share one
    /// open file description, so the OFD lock does not) is held only while
    /// the OFD lock is tried or held, never across a wait for another
    /// process: the files layer's at-fork prepare takes it, and fork() must
    /// not wait for a peer. A fork child never inherits the OFD lock held:
    /// the prepare handler holds purgeMutex, so no thread holds it then.
    ///
    /// Every holder punches this process's stale fills of the file after
    /// the recovery, before `body` (StaleFills.swift).
    func withPurgeLock<R>(_ body: () -> R) throws(VRangeError) -> R {
        let ps = try processState()
        let byte = layout.purgeLockByte
        var wait = PeerWait()
        let stale = mappingsWithStaleFills()
        defer { withExtendedLifetime(stale) {} }  // released outside the lock
        while true {
            let result = try purgeMutex.withLock { _ throws(VRangeError) -> R? in
                let taken: Bool
                do throws(SystemError) { taken = try ps.liveness.lock(byte) } catch { throw .system(error) }
                guard taken else { return nil }
                defer { ps.liveness.unlock(byte) }
                recoverIfNeeded()
                punchStaleFills(stale)
                return body()
            }
            if let result { return result }
            hook(.purgeLockWait)
            try wait.pause(sidecar.control)
        }
    }

    private func purgeLocked(_ pages: Range<Int>) -> Int {
        reclaimDeadSlots()
        let control = sidecar.control
        let content = sidecar.content
        control.beginLocking(pages, pid: Kernel.processID)
        var total = 0
        var runs = RunCoalescer(maxRun: VolatilityMap.maxRun)
        let alive = AliveSlots(self)
        for w in VolatilityMap.wordsCovering(pages) {
            if w & 255 == 0 { control.beat() }
            let m = VolatilityMap.lowMask(word: w, pages: pages)
            let candidates = sidecar.purgeable(word: w, alive: alive) & m
            if candidates == 0 { continue }
            let locked = lock(word: w, present: candidates)
            if locked == 0 { continue }
            hook(.purgeLocked(word: w))
            let keep = locked & sidecar.purgeable(word: w, alive: alive)
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
        sidecar.control.beat()
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

    /// Every party (the file, each slot not free or with a live owner: see
    /// `AliveSlots`) that has a page of `run` voted gets a purge notice for it.
    private func notePurge(_ run: Range<Int>) {
        let alive = AliveSlots(self)
        let bound = alive.bound
        for w in VolatilityMap.wordsCovering(run) {
            let m = VolatilityMap.lowMask(word: w, pages: run)
            sidecar.fileMarks.notePurge(word: w, mask: m)
            for i in 0..<bound where sidecar.slots.view(i) != nil || alive(i) {
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
    /// (punched, noticed, marked purged): so no scribble can make a waiter
    /// wait for ever. (Every locker of a shared file's page holds the purge
    /// lock: the fault handler never locks one.)
    ///
    /// While the purge lock is held by a live process, the wait goes on as
    /// long as that process makes progress, and ends with
    /// `.peerNotResponding` after `peerPatience` without any (see
    /// `PeerWait`): a stopped peer never hangs a pin.
    func waitForLockedPage(_ wait: inout LockWait, pages: Range<Int>) throws(VRangeError) {
        Kernel.yield()
        wait.spins += 1
        if wait.spins & 63 != 0 { return }
        let now = Kernel.monotonicNanoseconds()
        if wait.last == 0 { wait.last = now; return }
        if now - wait.last < 1_000_000 { return }
        wait.last = now
        if tryRecoverOrphanedLocks(breaking: wait.looks >= 1 ? pages : nil) {
            wait.looks += 1
            return
        }
        try wait.peer.pause(sidecar.control)
    }

    /// The content map's half of a non-volatile mark of a shared file:
    /// every page of `pages` becomes present (00), waiting (boundedly,
    /// `waitForLockedPage`) while a purge holds one locked; calls `purged`
    /// with each run that was purged. A file's content map holds 00, 10
    /// and 11 only.
    func markPresent(_ pages: Range<Int>, purged: (Range<Int>) -> Void) throws(VRangeError) {
        let content = sidecar.content
        var wait = LockWait()
        var runs = RunCoalescer()
        defer { runs.flush(purged) }
        for w in VolatilityMap.wordsCovering(pages) {
            let m = VolatilityMap.lowMask(word: w, pages: pages)
            let fields = m | m << 1
            var old = content.words[w].load(ordering: .acquiring)
            while true {
                if VolatilityMap.pages(in: old, .locked) & m != 0 {
                    try waitForLockedPage(&wait, pages: pages)
                    old = content.words[w].load(ordering: .acquiring)
                    continue
                }
                if old & fields == 0 { break }
                let (done, seen) = content.words[w].compareExchange(
                    expected: old, desired: old & ~fields, ordering: .acquiringAndReleasing)
                if done {
                    VolatilityMap.forEachRun(in: VolatilityMap.pages(in: old, .purged) & m, word: w) { runs.add($0, $1, purged) }
                    break
                }
                old = seen
            }
        }
    }

    /// Takes the purge lock if it is free right now and recovers a dead
    /// holder's intent; with `breaking`, also completes every page of it
    /// still locked (see `waitForLockedPage`). Returns whether it could look.
    @discardableResult
    func tryRecoverOrphanedLocks(breaking: Range<Int>? = nil) -> Bool {
        guard let ps = try? processState() else { return false }
        let byte = layout.purgeLockByte
        return purgeMutex.withLockIfAvailable { _ -> Bool in
            guard (try? ps.liveness.lock(byte)) == true else { return false }
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
    /// The bound on waiting for a live holder of the purge lock.
    var peer = PeerWait()
}

/// One wait on other processes (for the purge lock, or a page a purge
/// locked): yields at first, then sleeps a millisecond between looks; ends
/// with `.peerNotResponding` once the purge record's progress has not moved
/// for `VolatileFile.peerPatience`, or after `peerPatienceInAll` in all.
/// Decides from the record, which the holder moves as it works; the clock
/// only bounds the wait.
struct PeerWait {
    private var looks = 0
    private var started: UInt64 = 0
    private var lastProgress: UInt64 = 0
    private var stamp: UInt64 = 0

    static let patience = UInt64(VolatileFile.peerPatience.components.seconds) * 1_000_000_000
    static let patienceInAll = UInt64(VolatileFile.peerPatienceInAll.components.seconds) * 1_000_000_000

    mutating func pause(_ control: PurgeControl) throws(VRangeError) {
        looks += 1
        if looks < 64 {
            Kernel.yield()
            return
        }
        Kernel.sleep(nanoseconds: 1_000_000)
        let now = Kernel.monotonicNanoseconds()
        let progress = control.progress
        if started == 0 {
            (started, lastProgress, stamp) = (now, now, progress)
            return
        }
        if progress != stamp { (lastProgress, stamp) = (now, progress) }
        if now - lastProgress >= Self.patience || now - started >= Self.patienceInAll {
            throw .peerNotResponding(pid: control.holderPID)
        }
    }
}
