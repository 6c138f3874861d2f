// The purge control block of the sidecar (offset 128): the intent record of
// the one purge in flight (purges of a file are serialized by an OFD lock),
// written before any page is touched, so that whoever takes the purge lock
// after a holder died finishes or undoes its work (hugetlb's
// region_chg/region_add idea: prepare, then commit).
//   0 phase: idle, locking (pages in [lockLo, lockHi) may be locked, none
//     punched: roll back), punching (pages of [punchLo, punchHi) still
//     locked may be punched: complete them; then roll back the rest)
//   8 lockLo  16 lockHi  24 punchLo  32 punchHi  40 pid of the holder
//   48 purges completed  56 recoveries made  64 high-water slot count
//   72 heartbeat: moved by the holder of the purge lock as its work goes on,
//     so that a process waiting on it tells a slow peer from a stuck one
//     (VolatileFile.peerPatience)
import Synchronization

enum PurgePhase: UInt64, Sendable {
    case idle = 0, locking = 1, punching = 2
}

struct PurgeControl: @unchecked Sendable {
    let base: UnsafeMutablePointer<Atomic<UInt64>>

    init(memory: UnsafeMutableRawPointer) { base = memory.assumingMemoryBound(to: Atomic<UInt64>.self) }

    var phase: PurgePhase { PurgePhase(rawValue: base[0].load(ordering: .sequentiallyConsistent)) ?? .locking }
    var lockRange: (Int, Int) {
        (Int(truncatingIfNeeded: base[1].load(ordering: .acquiring)), Int(truncatingIfNeeded: base[2].load(ordering: .acquiring)))
    }
    var punchRange: (Int, Int) {
        (Int(truncatingIfNeeded: base[3].load(ordering: .acquiring)), Int(truncatingIfNeeded: base[4].load(ordering: .acquiring)))
    }
    var purges: UInt64 { base[6].load(ordering: .relaxed) }
    var recoveries: UInt64 { base[7].load(ordering: .relaxed) }

    /// Records that pages of `pages` are about to be locked.
    func beginLocking(_ pages: Range<Int>, pid: Int32) {
        base[5].store(UInt64(UInt32(bitPattern: pid)), ordering: .relaxed)
        base[1].store(UInt64(pages.lowerBound), ordering: .relaxed)
        base[2].store(UInt64(pages.upperBound), ordering: .relaxed)
        base[0].store(PurgePhase.locking.rawValue, ordering: .sequentiallyConsistent)
    }

    /// Records that `run` (all locked by the holder) is about to be punched.
    func beginPunching(_ run: Range<Int>) {
        base[3].store(UInt64(run.lowerBound), ordering: .relaxed)
        base[4].store(UInt64(run.upperBound), ordering: .relaxed)
        base[0].store(PurgePhase.punching.rawValue, ordering: .sequentiallyConsistent)
    }

    /// The punch of the current run is complete (its pages released).
    func endPunching() { base[0].store(PurgePhase.locking.rawValue, ordering: .sequentiallyConsistent) }

    /// Nothing is in flight any more.
    func end() { base[0].store(PurgePhase.idle.rawValue, ordering: .sequentiallyConsistent) }

    // Wrapping: shared memory a peer may have scribbled (Atomic.add traps
    // on overflow).
    func countPurge() { base[6].wrappingAdd(1, ordering: .relaxed) }
    func countRecovery() { base[7].wrappingAdd(1, ordering: .relaxed) }

    /// Shows that the holder of the purge lock is making progress.
    func beat() { base[9].wrappingAdd(1, ordering: .relaxed) }

    /// Moves whenever the holder of the purge lock makes progress (its
    /// heartbeat, its punches, its phase).
    var progress: UInt64 {
        base[9].load(ordering: .relaxed) &+ base[6].load(ordering: .relaxed) &* 3 &+ base[0].load(ordering: .relaxed) &* 7
    }

    /// The pid the purge record names (a hint written by its holder).
    var holderPID: Int32 { Int32(truncatingIfNeeded: base[5].load(ordering: .relaxed)) }

    /// Slots at or above this were never claimed.
    var highWater: Int { Int(truncatingIfNeeded: base[8].load(ordering: .sequentiallyConsistent)) }
    func raiseHighWater(to n: Int) {
        var cur = base[8].load(ordering: .relaxed)
        while cur < UInt64(n) {
            let (done, seen) = base[8].compareExchange(expected: cur, desired: UInt64(n), ordering: .sequentiallyConsistent)
            if done { return }
            cur = seen
        }
    }
}
