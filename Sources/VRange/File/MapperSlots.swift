// The mapper-slot table in the sidecar: one 64-byte record per mapper,
// claimed with a compare-and-swap and held alive by an OFD lock on byte i of
// the sidecar (see Liveness.swift). Record layout (all 8-byte atomics):
//   0 state: generation << 8 | phase (free, claiming, live, reclaiming)
//   8 kind (shared or private mapping)   16 first page   24 page count
//   32 pid of the owner (for people reading a dump; never used for liveness)
import Synchronization

enum SlotPhase: UInt64, Sendable {
    case free = 0, claiming = 1, live = 2, reclaiming = 3
}

enum SlotKind: UInt64, Sendable {
    case none = 0, shared = 1, privateMapping = 2
}

/// A consistent snapshot of one record.
struct SlotView: Equatable, Sendable {
    var index: Int
    var state: UInt64
    var kind: SlotKind
    var pages: Range<Int>
    /// Whether the record is one an owner could have written: a known
    /// phase and, when live, a known kind and a page range of at least one
    /// page inside the file, as written (before `view` clamps it). A record
    /// that is not was written by a peer: whom it belongs to and what it
    /// covers is unknown (see `Sidecar.purgeable`).
    var wellFormed: Bool
    var phase: SlotPhase { SlotPhase(rawValue: state & 0xff) ?? .free }
    var generation: UInt64 { state >> 8 }
}

struct MapperSlots: @unchecked Sendable {
    let base: UnsafeMutablePointer<Atomic<UInt64>>
    let count: Int
    let pageCount: Int

    init(memory: UnsafeMutableRawPointer, count: Int, pageCount: Int) {
        base = memory.assumingMemoryBound(to: Atomic<UInt64>.self)
        self.count = count
        self.pageCount = pageCount
    }

    @inline(__always) func field(_ i: Int, _ f: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { base + i * 8 + f }
    @inline(__always) func stateWord(_ i: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { field(i, 0) }

    static func state(_ phase: SlotPhase, generation: UInt64) -> UInt64 { generation << 8 | phase.rawValue }

    /// A consistent snapshot of record `i` (state read before and after the
    /// fields, retried while it moves), or nil when it is free. A record
    /// that keeps moving (only a peer scribbling over the sidecar can make
    /// it move that often) is taken as it was read at the 1000th try.
    @inline(__always)
    func view(_ i: Int) -> SlotView? {
        var tries = 0
        while true {
            let s1 = stateWord(i).pointee.load(ordering: .sequentiallyConsistent)
            if s1 & 0xff == SlotPhase.free.rawValue { return nil }
            let rawKind = SlotKind(rawValue: field(i, 1).pointee.load(ordering: .acquiring))
            let kind = rawKind ?? .none
            let first = Int(truncatingIfNeeded: field(i, 2).pointee.load(ordering: .acquiring))
            let n = Int(truncatingIfNeeded: field(i, 3).pointee.load(ordering: .acquiring))
            let s2 = stateWord(i).pointee.load(ordering: .sequentiallyConsistent)
            tries += 1
            if s1 != s2 && tries < 1000 { continue }
            // Clamp: the sidecar is shared memory, a hostile peer may write anything.
            let lo = min(max(first, 0), pageCount)
            let hi = min(max(lo, lo &+ max(n, 0)), pageCount)
            let phase = SlotPhase(rawValue: s1 & 0xff)
            let wellFormed = phase != nil
                && (phase != .live || (rawKind != nil && kind != .none && first >= 0 && n >= 1 && n <= pageCount - first))
            return SlotView(index: i, state: s1, kind: kind, pages: lo..<hi, wellFormed: wellFormed)
        }
    }

    /// free -> claiming; returns the claiming state word, or nil if taken.
    func tryClaim(_ i: Int) -> UInt64? {
        let s = stateWord(i).pointee.load(ordering: .acquiring)
        guard s & 0xff == SlotPhase.free.rawValue else { return nil }
        let claiming = Self.state(.claiming, generation: (s >> 8) &+ 1)
        return stateWord(i).pointee.compareExchange(expected: s, desired: claiming, ordering: .sequentiallyConsistent).exchanged
            ? claiming : nil
    }

    /// claiming -> free again (same generation), for a claimer that could
    /// not take the slot's byte: its owner is alive. Nothing when the state
    /// moved meanwhile (the owner wrote its record again).
    func giveBack(_ i: Int, claimed: UInt64) {
        let free = Self.state(.free, generation: claimed >> 8)
        _ = stateWord(i).pointee.compareExchange(expected: claimed, desired: free, ordering: .sequentiallyConsistent)
    }

    /// Writes the fields of a slot this process claimed, then publishes it live.
    func publish(_ i: Int, claimed: UInt64, kind: SlotKind, pages: Range<Int>, pid: Int32) -> Bool {
        field(i, 1).pointee.store(kind.rawValue, ordering: .relaxed)
        field(i, 2).pointee.store(UInt64(pages.lowerBound), ordering: .relaxed)
        field(i, 3).pointee.store(UInt64(pages.count), ordering: .relaxed)
        field(i, 4).pointee.store(UInt64(UInt32(bitPattern: pid)), ordering: .relaxed)
        let live = Self.state(.live, generation: claimed >> 8)
        return stateWord(i).pointee.compareExchange(expected: claimed, desired: live, ordering: .sequentiallyConsistent).exchanged
    }

    /// observed -> reclaiming (same generation); false if it moved.
    func beginReclaim(_ i: Int, observed: UInt64) -> Bool {
        if observed & 0xff == SlotPhase.reclaiming.rawValue { return stateWord(i).pointee.load(ordering: .acquiring) == observed }
        let reclaiming = Self.state(.reclaiming, generation: observed >> 8)
        return stateWord(i).pointee.compareExchange(expected: observed, desired: reclaiming, ordering: .sequentiallyConsistent).exchanged
    }

    /// -> reclaiming, for the owner (who holds the slot's byte) whatever the
    /// state reads: a peer may have scribbled it free, and the marks must
    /// be withdrawn all the same.
    func beginOwnReclaim(_ i: Int) {
        let s = stateWord(i).pointee.load(ordering: .acquiring)
        stateWord(i).pointee.store(Self.state(.reclaiming, generation: s >> 8), ordering: .sequentiallyConsistent)
    }

    /// Clears the fields and frees the slot (next generation).
    func finishReclaim(_ i: Int) {
        for f in 1...4 { field(i, f).pointee.store(0, ordering: .relaxed) }
        let s = stateWord(i).pointee.load(ordering: .acquiring)
        stateWord(i).pointee.store(Self.state(.free, generation: (s >> 8) &+ 1), ordering: .sequentiallyConsistent)
    }

    /// How many slots are not free, by kind. `alive(i)` is asked about a
    /// slot that reads free: true when its owner is alive all the same (a
    /// peer scribbled the state): it counts by the kind its record names
    /// (shared unless private), as `Sidecar.purgeable` takes it to cover
    /// the file.
    func census(alive: (Int) -> Bool = { _ in false }) -> (shared: Int, privateMappings: Int, other: Int) {
        var s = 0, p = 0, o = 0
        for i in 0..<count {
            guard let v = view(i) else {
                if alive(i) {
                    if field(i, 1).pointee.load(ordering: .relaxed) == SlotKind.privateMapping.rawValue { p += 1 } else { s += 1 }
                }
                continue
            }
            switch (v.phase, v.kind) {
            case (.live, .shared): s += 1
            case (.live, .privateMapping): p += 1
            default: o += 1
            }
        }
        return (s, p, o)
    }
}
