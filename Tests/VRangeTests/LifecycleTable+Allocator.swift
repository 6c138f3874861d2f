// Class 1 of issue 18 for the allocator: a public operation of a buffer or
// of the allocator, held at a hook in its middle, while another thread drops
// the allocator's last reference, purges the buffer's unit (what a purger's
// thread does), or frees the buffer's neighbours (on its slab page and in its
// segment). The held operation must finish on memory that is still the
// library's and tell the truth: a lock reports exactly what was purged, the
// intact bytes keep their pattern, nothing faults (ASan and TSan stages too).
//
// The release clock's round is one of the operations: its thread is held
// in the round (the allocator's own thread, as a purger's is).
//
// Rows: 16 operations × 3 windows = 48.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

enum AllocatorLifecycleOp: String, CaseIterable, Sendable {
    case lockSpan, unlockSpan, lockSmall, unlockSmall, beginContentAccess, endContentAccess, withVolatileAccess
    case freeSpan, freeSmall, allocateSpan, allocateSmall, purgeUnit, forEachPurgeUnit, releaseFreeMemory, statistics
    case releaseClockRound

    /// Where the operation is held: a hook point and its argument.
    var hold: (point: Int32, arg: UInt) {
        let entered = Int32(VR_HOOK_ALLOC_ENTERED), busy = Int32(VR_HOOK_ALLOC_SLAB_BUSY)
        switch self {
        case .lockSpan, .unlockSpan: return (Int32(VR_HOOK_MAP_BEFORE_CAS), 0)
        case .lockSmall, .beginContentAccess: return (busy, 1)
        case .unlockSmall, .endContentAccess: return (busy, 2)
        case .withVolatileAccess: return (Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), 0)
        case .freeSpan: return (entered, UInt(AllocHookOp.freeSpan.rawValue))
        case .freeSmall: return (entered, UInt(AllocHookOp.freeSlot.rawValue))
        case .allocateSpan: return (entered, UInt(AllocHookOp.allocateSpan.rawValue))
        case .allocateSmall: return (entered, UInt(AllocHookOp.allocateSlot.rawValue))
        case .purgeUnit: return (entered, UInt(AllocHookOp.purgeUnit.rawValue))
        case .forEachPurgeUnit: return (entered, UInt(AllocHookOp.collectUnits.rawValue))
        case .releaseFreeMemory: return (entered, UInt(AllocHookOp.release.rawValue))
        case .statistics: return (entered, UInt(AllocHookOp.statistics.rawValue))
        case .releaseClockRound: return (entered, UInt(AllocHookOp.releaseClock.rawValue))
        }
    }

    var usesSmallBuffer: Bool { [.lockSmall, .unlockSmall, .beginContentAccess, .endContentAccess, .freeSmall].contains(self) }
}

enum LifecycleWindow: String, CaseIterable, Sendable {
    /// Another thread drops the allocator's last reference.
    case allocatorDropped
    /// Another thread purges every unit (the buffer's included), as a purger's thread does.
    case purgerPurges
    /// Another thread frees the buffer's neighbours (same slab page, same segment).
    case neighboursFreed
}

struct LifecycleRow: Sendable, CustomTestStringConvertible {
    let op: AllocatorLifecycleOp
    let window: LifecycleWindow
    var testDescription: String { "\(op.rawValue) × \(window.rawValue)" }
}

let lifecycleRows = AllocatorLifecycleOp.allCases.flatMap { op in LifecycleWindow.allCases.map { LifecycleRow(op: op, window: $0) } }

@Suite("Lifecycle table: allocator", .serialized) struct AllocatorLifecycleTable {
    @Test("an operation held in its middle while another thread drops the allocator, purges, or frees neighbours",
          arguments: lifecycleRows)
    func heldOperation(_ row: LifecycleRow) throws {
        guard hooksAvailable("heldOperation(\(row.testDescription))") else { return }
        try withHooks {
            let failures = try runLifecycleRow(row)
            for f in failures { Issue.record(Comment(rawValue: "\(row.testDescription): \(f)")) }
            #expect(vr_test_hook_timeouts() == 0, "\(row.testDescription): a hold timed out (the window blocked on the held operation)")
        }
    }
}

/// Failures seen by the threads, reported by the test's own thread.
final class FailureLog: Sendable {
    private let lines = Mutex<[String]>([])
    func add(_ s: String) { lines.withLock { $0.append(s) } }
    var all: [String] { lines.withLock { $0 } }
}

func runLifecycleRow(_ row: LifecycleRow) throws -> [String] {
    let log = FailureLog()
    let delay: Duration = row.op == .releaseClockRound ? .zero : .seconds(600)
    let slot = AllocatorSlot(try VolatileAllocator(options: .init(releaseDelay: delay, arenaCount: 1)))
    let a0 = slot.allocator!
    // The buffer the operation uses, and its neighbours.
    let span = BufferSlot(try a0.allocate(byteCount: 3 * page))
    let bigNeighbour = BufferSlot(try a0.allocate(byteCount: 2 * page))
    let small = BufferSlot(try a0.allocate(byteCount: 200))
    let smallNeighbour = BufferSlot(try a0.allocate(byteCount: 200))
    let mine = row.op.usesSmallBuffer ? small : span
    let tag: UInt8 = 0x5A
    mine.with { fill(&$0, tag: tag) }
    bigNeighbour.with { $0.unlock() }
    smallNeighbour.with { $0.unlock() }
    switch row.op {
    case .lockSpan, .lockSmall, .beginContentAccess, .withVolatileAccess, .freeSpan: mine.with { $0.unlock() }
    default: break
    }
    let unit = span.with { $0.purgeUnitID }
    _ = a0.statistics  // warm up: nothing lazy happens inside the held window
    let (point, arg) = row.op.hold
    let held = TestThread {
        // The clock's round is held on the clock's thread; anything else
        // on this one.
        arm(0, point, arg: arg, tid: row.op == .releaseClockRound ? 0 : currentTID(), set: Flag.a, waitAny: Flag.b,
            deadlineMs: 10_000, times: 1)
        let a = slot.allocator
        switch row.op {
        case .lockSpan, .lockSmall:
            mine.with { b in
                let r = b.lock()
                checkTruthful(b, r, tag: tag, log)
            }
        case .beginContentAccess:
            mine.with { b in
                if b.beginContentAccess() {
                    b.withUnsafeBytes { raw in if raw[0] != patternByte(0, tag) { log.add("beginContentAccess true, bytes changed") } }
                    b.endContentAccess()
                }
                let r = b.lock()
                checkTruthful(b, r, tag: tag, log)
            }
        case .unlockSpan, .unlockSmall: mine.with { $0.unlock() }
        case .endContentAccess: mine.with { $0.endContentAccess() }
        case .withVolatileAccess:
            mine.with { b in
                let r = b.withVolatileAccess { raw in raw[0] == patternByte(0, tag) && raw[raw.count - 1] == patternByte(raw.count - 1, tag) }
                if r == .intact(false) { log.add("withVolatileAccess: intact, but the bytes changed") }
            }
        case .freeSpan, .freeSmall: mine.take().free()
        case .allocateSpan:
            if var b = try? a?.allocate(byteCount: 5 * page) { fill(&b, tag: 1); b.free() } else { log.add("allocate failed") }
        case .allocateSmall:
            if var b = try? a?.allocate(byteCount: 300) { fill(&b, tag: 1); b.free() } else { log.add("allocate failed") }
        case .purgeUnit: _ = a?.purge(unit: unit)
        case .forEachPurgeUnit: a?.forEachPurgeUnit { _ in }
        case .releaseFreeMemory: a?.releaseFreeMemory()
        case .statistics: _ = a?.statistics
        case .releaseClockRound:
            // Freed unlocked with no delay: a round is due at once.
            if var b = try? a?.allocate(byteCount: 7 * page) { b.unlock(); b.free() } else { log.add("allocate failed") }
        }
    }
    guard waitForFlags(Flag.a, seconds: 10) else {
        vr_test_hook_set_flags(Flag.b)
        held.join()
        return ["the operation never reached its hold point"]
    }
    let window = TestThread {
        switch row.window {
        case .allocatorDropped: slot.allocator = nil
        case .purgerPurges:
            if let a = slot.allocator { purgeEverything(a) }
        case .neighboursFreed:
            bigNeighbour.free()
            smallNeighbour.free()
        }
        vr_test_hook_set_flags(Flag.b)
    }
    window.join()
    held.join()
    if row.op == .releaseClockRound {
        // The clock's thread must have left the hold before the rules are
        // reset (else it would wait there past this row): a round of a
        // probe allocator, queued behind the held one, passes a mark.
        arm(2, Int32(VR_HOOK_ALLOC_LOCKED), arg: UInt(AllocHookOp.releaseClock.rawValue), set: Flag.d)
        let probe = try VolatileAllocator(options: .init(releaseDelay: .zero, arenaCount: 1))
        var p = try probe.allocate(byteCount: 3 * page)
        p.unlock()
        p.free()
        if !waitForFlags(Flag.d, seconds: 10) { log.add("the release clock's thread did not come back from its hold") }
    }
    // Afterwards: what is left still works, then goes.
    for b in [span, small] where !b.isEmpty {
        b.with { b in
            if !b.isLocked { _ = b.lock() }
            b.withUnsafeMutableBytes { $0[0] = 1 }
            b.unlock()
        }
        b.free()
    }
    bigNeighbour.free()
    smallNeighbour.free()
    slot.allocator = nil
    return log.all
}

/// Checks a lock's report against the bytes (without Issue.record: called
/// on the held thread).
private func checkTruthful(_ b: borrowing PurgeableBuffer, _ r: PurgeableBuffer.LockResult, tag: UInt8, _ log: FailureLog) {
    if !zeros(b, r.purgedRanges) { log.add("reported purged bytes are not zero: \(r.purgedRanges)") }
    var kept: [Range<Int>] = []
    var at = 0
    for x in r.purgedRanges { if x.lowerBound > at { kept.append(at..<x.lowerBound) }; at = x.upperBound }
    if at < b.count { kept.append(at..<b.count) }
    let bad = mismatches(b, tag: tag, in: kept)
    if !bad.isEmpty { log.add("bytes reported intact changed at \(bad) (report \(r.purgedRanges))") }
}
