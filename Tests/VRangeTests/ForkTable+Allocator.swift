// Class 2 of issue 18 for the allocator (defect 2b): fork while another
// thread is held inside each public operation of VolatileAllocator and
// PurgeableBuffer (under its arena's lock, with a slab page word busy, inside
// a thread cache's fast path, inside a region call, inside an optimistic
// access). The child then uses the same arena and the same slab page:
// allocates, locks, unlocks, frees, purges, releases, reads the statistics
// and drops an allocator, and must exit 0 within 10 s (the parent kills it
// otherwise, and the row fails).
//
// Rows: 20 operations × 1 window (held at fork) = 20. Serialized: each row
// passes its name to its exit test through the environment.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// One public operation, held in another thread at fork.
enum AllocForkRow: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case allocateSpan, allocateSmall, freeSpan, freeSmall
    case lockSmall, unlockSmall, lockSpan, unlockSpan
    case beginContentAccess, endContentAccess, withVolatileAccess, isContentDiscarded
    case purgeUnit, forEachPurgeUnit, releaseFreeMemory, statistics, dropAllocator
    case threadCacheAllocate, threadCacheFree
    /// The release clock's thread, in its round (the allocator's own thread).
    case releaseClockRound

    var testDescription: String { rawValue }

    /// Whether the held thread holds its arena's lock: the fork must wait
    /// for it (the at-fork prepare handler takes every arena's lock), so the
    /// test lets it go once the prepare handler has begun.
    var holdsArenaLock: Bool {
        switch self {
        case .allocateSpan, .allocateSmall, .freeSpan, .freeSmall, .purgeUnit, .forEachPurgeUnit,
             .releaseFreeMemory, .statistics, .dropAllocator, .releaseClockRound: true
        default: false
        }
    }

    /// Where the held thread stops: a hook point and its argument.
    var hold: (point: Int32, arg: UInt) {
        let locked = Int32(VR_HOOK_ALLOC_LOCKED), busy = Int32(VR_HOOK_ALLOC_SLAB_BUSY)
        switch self {
        case .allocateSpan: return (locked, UInt(AllocHookOp.allocateSpan.rawValue))
        case .allocateSmall: return (locked, UInt(AllocHookOp.allocateSlot.rawValue))
        case .freeSpan: return (locked, UInt(AllocHookOp.freeSpan.rawValue))
        case .freeSmall: return (locked, UInt(AllocHookOp.freeSlot.rawValue))
        case .purgeUnit: return (locked, UInt(AllocHookOp.purgeUnit.rawValue))
        case .forEachPurgeUnit: return (locked, UInt(AllocHookOp.collectUnits.rawValue))
        case .releaseFreeMemory: return (locked, UInt(AllocHookOp.release.rawValue))
        case .statistics: return (locked, UInt(AllocHookOp.statistics.rawValue))
        case .dropAllocator: return (locked, UInt(AllocHookOp.abandon.rawValue))
        case .releaseClockRound: return (locked, UInt(AllocHookOp.releaseClock.rawValue))
        case .lockSmall, .beginContentAccess: return (busy, 1)
        case .unlockSmall, .endContentAccess: return (busy, 2)
        case .lockSpan, .unlockSpan: return (Int32(VR_HOOK_MAP_BEFORE_CAS), 0)
        case .withVolatileAccess: return (Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), 0)
        case .isContentDiscarded: return (Int32(VR_HOOK_ALLOC_SLAB_BUSY), 1)  // a neighbour's first lock
        case .threadCacheAllocate: return (Int32(VR_HOOK_TCACHE_INSIDE), 1)
        case .threadCacheFree: return (Int32(VR_HOOK_TCACHE_INSIDE), 2)
        }
    }
}

@Suite("Fork table: allocator", .serialized) struct AllocatorForkTable {
    @Test("fork while another thread is held inside an allocator operation: the child finishes", arguments: AllocForkRow.allCases)
    func forkWhileHeld(_ row: AllocForkRow) async {
        guard hooksAvailable("forkWhileHeld(\(row))") else { return }
        setenv("VRANGE_ALLOC_FORK_ROW", row.rawValue, 1)
        let label = "allocfork-\(row.rawValue)"
        let out = await ChildLog.capture(label, prefix: row.rawValue) {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("allocfork-" + String(cString: getenv("VRANGE_ALLOC_FORK_ROW")))
                let row = AllocForkRow(rawValue: String(cString: getenv("VRANGE_ALLOC_FORK_ROW")))!
                exit(runAllocForkRow(row))
            }
        }
        #expect(out.contains("PASS"), "\(row): \(out)")
    }
}

/// The row's process: sets up, holds a thread, forks, judges. Returns the
/// exit status of the exit test (0: the child finished in time).
func runAllocForkRow(_ row: AllocForkRow) -> Int32 {
    let small = 200, span = 3 * page
    // Only the slot holds the allocator (dropAllocator drops the last reference).
    let delay: Duration = row == .releaseClockRound ? .zero : .seconds(600)
    let slot = AllocatorSlot(try! VolatileAllocator(options: .init(releaseDelay: delay, arenaCount: 1)))
    // The held thread's buffer and a neighbour on the same slab page (or
    // segment), which the child uses.
    let spanRows: [AllocForkRow] = [.freeSpan, .lockSpan, .unlockSpan]
    let mine = BufferSlot(try! slot.allocator!.allocate(byteCount: spanRows.contains(row) ? span : small))
    let neighbour = BufferSlot(try! slot.allocator!.allocate(byteCount: small))
    do {
        var spare = try! slot.allocator!.allocate(byteCount: span)
        spare.unlock()
        spare.free()  // a free span: something to purge and release
    }
    switch row {
    case .lockSmall, .beginContentAccess, .isContentDiscarded, .lockSpan, .withVolatileAccess, .freeSpan:
        mine.with { $0.unlock() }
        neighbour.with { $0.unlock() }
    case .unlockSmall, .endContentAccess:
        neighbour.with { $0.unlock() }
    default: break
    }
    var units: [Int] = []
    slot.allocator!.forEachPurgeUnit { units.append($0.id) }
    let unit = units.first ?? 0

    let (point, arg) = row.hold
    arm(1, Int32(VR_HOOK_ALLOC_FORK_PREPARE), set: Flag.c)
    let held = TestThread {
        // Armed for this thread only: the thread-cache rows pass other
        // points of the same kind first.
        arm(0, point, arg: arg, tid: row == .releaseClockRound ? 0 : currentTID(), set: Flag.a, waitAny: Flag.b,
            deadlineMs: 20_000, times: 1)
        switch row {
        case .allocateSpan: _ = try! slot.allocator!.allocate(byteCount: 5 * page)
        case .allocateSmall: _ = try! slot.allocator!.allocate(byteCount: 1000)
        case .freeSpan, .freeSmall: mine.take().free()
        case .lockSmall, .lockSpan: mine.with { _ = $0.lock() }
        case .unlockSmall, .unlockSpan: mine.with { $0.unlock() }
        case .beginContentAccess: mine.with { _ = $0.beginContentAccess() }
        case .endContentAccess: mine.with { $0.endContentAccess() }
        case .withVolatileAccess: mine.with { b in _ = b.withVolatileAccess { $0.count } }
        case .isContentDiscarded: neighbour.with { _ = $0.lock() }  // the first lock of the shared page
        case .purgeUnit: _ = slot.allocator!.purge(unit: unit)
        case .forEachPurgeUnit: slot.allocator!.forEachPurgeUnit { _ in }
        case .releaseFreeMemory: slot.allocator!.releaseFreeMemory()
        case .statistics: _ = slot.allocator!.statistics
        case .dropAllocator: slot.allocator = nil
        case .threadCacheAllocate:
            let b = try! slot.allocator!.allocate(byteCount: 2 * page)
            b.free()  // this thread's cache now holds it (a put: not the rule's point)
            _ = try! slot.allocator!.allocate(byteCount: 2 * page)  // a take: held inside
        case .threadCacheFree:
            let b = try! slot.allocator!.allocate(byteCount: 2 * page)
            b.free()  // a put into this thread's cache: held inside
        case .releaseClockRound:
            var b = try! slot.allocator!.allocate(byteCount: 7 * page)
            b.unlock()
            b.free()  // schedules a round at once (delay 0): the clock's thread is held in it
        }
    }
    guard waitForFlags(Flag.a, seconds: 15) else {
        ChildLog.say("FAIL: the operation never reached its hold point")
        vr_test_hook_set_flags(Flag.b)
        held.join()
        return 1
    }
    // A thread holding an arena's lock must be let go once the fork's
    // prepare handler waits for that lock; any other stays held over fork.
    let releaser = TestThread {
        if row.holdsArenaLock && waitForFlags(Flag.c, seconds: 15) { vr_test_hook_set_flags(Flag.b) }
    }
    let status = forkedWithWatchdog(seconds: 10) {
        allocForkChild(row, slot: slot, buffers: [mine, neighbour])
    }
    vr_test_hook_set_flags(Flag.b | Flag.c)
    releaser.join()
    held.join()
    if status.map({ exitCode($0) == 0 }) == true {
        ChildLog.say("PASS: the child \(describeStatus(status))")
        return 0
    }
    ChildLog.say("FAIL: \(row.rawValue): the fork child \(describeStatus(status))")
    return 1
}

/// The fork child: uses the arena and the slab page the held thread was
/// in (the buffers it did not hold), then drops everything. Exit codes name
/// the step that failed.
func allocForkChild(_ row: AllocForkRow, slot: AllocatorSlot, buffers: [BufferSlot]) -> Int32 {
    // The allocator the held thread used (dropped there for dropAllocator:
    // a new one then; the old one's buffers still work).
    let a = slot.allocator ?? (try! VolatileAllocator(options: .init(releaseDelay: .seconds(600), arenaCount: 1)))
    for buffer in buffers where !buffer.isEmpty {
        buffer.with { b in
            if row == .isContentDiscarded && !b.isLocked { _ = b.isContentDiscarded }
            if b.isLocked { b.unlock() }
            _ = b.lock()
            b.withUnsafeMutableBytes { $0[0] = 5 }
            b.unlock()
            _ = b.lock()
        }
    }
    guard var s = try? a.allocate(byteCount: 100), var l = try? a.allocate(byteCount: 3 * page) else { return 2 }
    s.unlock(); l.unlock()
    _ = s.lock(); _ = l.lock()
    s.free(); l.free()
    for _ in 0..<4 {  // thread caches and magazines, both ways
        guard let b = try? a.allocate(byteCount: 2 * page) else { return 3 }
        b.free()
    }
    _ = a.statistics
    purgeEverything(a)
    a.releaseFreeMemory()
    for buffer in buffers { buffer.free() }
    slot.allocator = nil
    return 0
}
