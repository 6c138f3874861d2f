// Lifecycle table of the cache and the purger core (issue 18, class 1):
// every public cache operation held at a point in its middle (a hook, or the
// caller's own closure) × the cache cleared, its entry removed, or the cache
// dropped, from another thread and from the purger's thread, or its memory
// purged by the purger's thread; and a purger's unregister / stop / drop ×
// a pass in flight inside an object. Expected: the operation returns the
// right value or none, never wrong bytes; the cache stays consistent; after
// unregister or stop returns, the purger is not inside the object; no
// deadlock (every wait is bounded).
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// A public cache operation and where it is held.
enum CacheLifecycleOp: String, CaseIterable, Sendable {
    case bytesLocked, copyBytesLocked, withBytesBody, setBytesBeforeStore, removeValueLocked, removeAllLocked
    case containsLocked, countLocked, statisticsLocked, fetchBytesBeforeJoin, fetchBytesRebuilding
    case valueLocked, fetchValueRebuilding

    /// The hook point of the byte cache (or, for value ops, of the value
    /// cache's byte cache) where it is held; nil: in its own closure.
    var point: CacheHookPoint? {
        switch self {
        case .bytesLocked: .locked(.lookup)
        case .copyBytesLocked: .locked(.copy)
        case .setBytesBeforeStore: .beforeStore
        case .removeValueLocked: .locked(.remove)
        case .removeAllLocked: .locked(.removeAll)
        case .containsLocked: .locked(.contains)
        case .countLocked: .locked(.count)
        case .statisticsLocked: .locked(.statistics)
        case .fetchBytesBeforeJoin: .beforeJoin
        case .valueLocked: .locked(.checkIn)
        case .withBytesBody, .fetchBytesRebuilding, .fetchValueRebuilding: nil
        }
    }

    var onValueCache: Bool { self == .valueLocked || self == .fetchValueRebuilding }

    /// Runs the operation (held at its point by `gate`); a problem or nil.
    func run(_ cache: PurgeableCache<Int>, _ values: PurgeableValueCache<Int, String>, _ gate: Gate) -> String? {
        switch self {
        case .bytesLocked:
            let v = cache.bytes(forKey: 1)
            return v == nil || v == cacheValue(1) ? nil : "bytes(forKey:) served \(v!.count) wrong bytes"
        case .copyBytesLocked:
            var d = [UInt8](repeating: 0, count: 3000)
            let n = d.withUnsafeMutableBytes { cache.copyBytes(forKey: 1, into: $0) }
            return n == nil || (n == 3000 && d == cacheValue(1)) ? nil : "copyBytes returned \(String(describing: n)) and wrong bytes"
        case .withBytesBody:
            let v = cache.withBytes(forKey: 1) { raw -> [UInt8] in
                gate.hold()
                return [UInt8](raw)
            }
            return v == cacheValue(1) ? nil : "withBytes' body read \(v.map { "\($0.count) wrong bytes" } ?? "nothing") after the held window"
        case .setBytesBeforeStore:
            try! cache.setBytes(cacheValue(5), forKey: 5)
            let v = cache.bytes(forKey: 5)
            return v == nil || v == cacheValue(5) ? nil : "the stored value reads wrong"
        case .removeValueLocked: _ = cache.removeValue(forKey: 1); return nil
        case .removeAllLocked: cache.removeAll(); return nil
        case .containsLocked: _ = cache.contains(1); return nil
        case .countLocked: _ = cache.count; return nil
        case .statisticsLocked: _ = cache.statistics; return nil
        case .fetchBytesBeforeJoin:
            let v = try? cache.fetchBytes(forKey: 9) { cacheValue($0) }
            return v == cacheValue(9) ? nil : "fetchBytes returned \(v.map { "\($0.count) wrong bytes" } ?? "an error")"
        case .fetchBytesRebuilding:
            let v = try? cache.fetchBytes(forKey: 9) { k in
                gate.hold()
                return cacheValue(k)
            }
            return v == cacheValue(9) ? nil : "fetchBytes returned \(v.map { "\($0.count) wrong bytes" } ?? "an error")"
        case .valueLocked:
            let v = values.value(forKey: 1)
            return v == nil || v == "v1" ? nil : "value(forKey:) served \(v!)"
        case .fetchValueRebuilding:
            let v = try? values.fetchValue(forKey: 9) { k in
                gate.hold()
                return "v\(k)"
            }
            return v == "v9" ? nil : "fetchValue returned \(v ?? "an error")"
        }
    }
}

/// What happens to the cache while an operation is held.
enum LifecycleAction: String, CaseIterable, Sendable {
    case removeAllFromAnotherThread, removeValueFromAnotherThread, dropFromAnotherThread
    case purgeFromPurgerThread, removeAllAndDropFromPurgerThread
}

#if DEBUG
/// One cache row; the problems seen.
func runCacheLifecycleRow(_ op: CacheLifecycleOp, _ action: LifecycleAction) -> [String] {
    var problems: [String] = []
    let allocator = try! VolatileAllocator(options: .init(releaseDelay: .seconds(600)))
    let held = PurgeableCache<Int>(allocator: allocator, shards: 2)
    let heldValues = PurgeableValueCache<Int, String>(allocator: allocator, shards: 2)
    // The outside references, that a drop action lets go of.
    let outside = Locked<(PurgeableCache<Int>, PurgeableValueCache<Int, String>)?>((held, heldValues))
    for k in 0..<4 {
        try! held.setBytes(cacheValue(k), forKey: k)
        try! heldValues.setValue("v\(k)", forKey: k)
    }
    let gate = Gate()
    let worker = Atomic<UInt>(0)
    let hook: @Sendable (CacheHookPoint) -> Void = { point in
        guard point == op.point, worker.load(ordering: .acquiring) == UInt(pthread_self()) else { return }
        gate.hold()
    }
    if op.onValueCache { heldValues.bytes.testHook.set(hook) } else { held.testHook.set(hook) }
    let result = Locked<String?>(nil)
    let opThread = TestThread { [held, heldValues] in
        worker.store(UInt(pthread_self()), ordering: .releasing)
        let r = op.run(held, heldValues, gate)
        result.withLock { $0 = r }
    }
    guard gate.waitReached() else {
        gate.open()
        opThread.join()
        return ["\(op) never reached its point"]
    }
    let done = Atomic<Bool>(false)
    var actionThread: TestThread?
    var purger: Purger?
    var registered: ScriptedMemory?  // the purger holds it weakly
    switch action {
    case .removeAllFromAnotherThread:
        actionThread = TestThread {
            held.removeAll()
            heldValues.bytes.removeAll()
            done.store(true, ordering: .releasing)
        }
    case .removeValueFromAnotherThread:
        actionThread = TestThread {
            held.removeValue(forKey: 1)
            heldValues.removeValue(forKey: 1)
            done.store(true, ordering: .releasing)
        }
    case .dropFromAnotherThread:
        actionThread = TestThread {
            outside.withLock { $0 = nil }
            done.store(true, ordering: .releasing)
        }
    case .purgeFromPurgerThread:
        purger = try! Purger(.init(budget: 0, pressureSources: .none))
        purger!.register(allocator)
    case .removeAllAndDropFromPurgerThread:
        purger = try! Purger(.init(budget: 0, pressureSources: .none))
        let memory = ScriptedMemory { m, _ in
            guard let (c, v) = outside.withLock({ $0 }) else { return }
            c.removeAll()
            v.bytes.removeAll()
            outside.withLock { $0 = nil }
            done.store(true, ordering: .releasing)
        }
        purger!.register(memory)
        registered = memory
    }
    // The action overlaps the held window, or waits on the shard's mutex
    // the held operation holds (then it runs as soon as that is let go).
    if action == .purgeFromPurgerThread {
        _ = waitUntil(seconds: 2) { (purger?.statistics().purgedBytes ?? 0) > 0 }
    } else {
        _ = waitUntil(seconds: 0.3) { done.load(ordering: .acquiring) }
    }
    gate.open()
    opThread.join()
    actionThread?.join()
    if action == .removeAllAndDropFromPurgerThread {
        if !waitUntil(seconds: 10, { done.load(ordering: .acquiring) }) { problems.append("the purger's thread never ran the action") }
    }
    purger?.stop()
    registered?.setOnPurge(nil)
    if let r = result.withLock({ $0 }) { problems.append(r) }
    held.testHook.set(nil)
    heldValues.bytes.testHook.set(nil)
    // Consistent afterwards: values whole or absent, counts agree.
    for k in 0..<10 {
        if let v = held.bytes(forKey: k), v != cacheValue(k) { problems.append("key \(k) reads \(v.count) wrong bytes") }
        if let v = heldValues.value(forKey: k), v != "v\(k)" { problems.append("value \(k) reads \(v)") }
    }
    for c in [held, heldValues.bytes] {
        let s = c.statistics
        if s.entries != c.count || s.totalCost != s.residentBytes + s.purgedBytes {
            problems.append("inconsistent statistics: \(s), count \(c.count)")
        }
    }
    return problems
}
#endif

/// Unregister, stop or drop of a purger × a pass in flight.
enum PurgerLifecycleRow: String, CaseIterable, Sendable {
    /// Another thread's purgeAll is held inside purge(unit:); unregister.
    case unregisterWhilePurgeAllInsidePurge
    /// Another thread's statistics() is held inside forEachPurgeUnit.
    case unregisterWhileStatisticsInsideForEach
    /// The purger's own budget pass is held inside purge(unit:).
    case unregisterWhilePurgerThreadInsidePurge
    /// Unregister from inside purge(unit:), on the purger's thread.
    case unregisterFromInsidePurgeOnPurgerThread
    /// Unregister from inside forEachPurgeUnit, on the pass's thread.
    case unregisterFromInsideForEachOnPassThread
    /// stop() while the purger's thread is held inside purge(unit:).
    case stopWhilePurgerThreadInsidePurge
    /// stop() from inside purge(unit:), on the purger's thread.
    case stopFromInsidePurgeOnPurgerThread
    /// The last reference to the Purger dropped while its thread is inside.
    case dropPurgerWhilePurgerThreadInsidePurge
    /// The object's owner drops it while a pass is inside it.
    case dropObjectWhilePurgeAllInsidePurge
}

/// A flag one thread sets and another reads.
final class DoneFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

/// Purgeable memory that runs closures from inside its calls.
final class HoldingMemory: PurgeableMemory, Sendable {
    let inside = Atomic<Int>(0)
    let purges = Atomic<Int>(0)
    let walks = Atomic<Int>(0)
    let onPurge: Locked<(@Sendable (HoldingMemory) -> Void)?> = Locked(nil)
    let onWalk: Locked<(@Sendable (HoldingMemory) -> Void)?> = Locked(nil)
    let freed: DoneFlag?
    init(freed: DoneFlag? = nil) { self.freed = freed }
    deinit { freed?.set() }

    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        inside.add(1, ordering: .acquiringAndReleasing)
        defer { inside.subtract(1, ordering: .acquiringAndReleasing) }
        walks.add(1, ordering: .relaxed)
        if let f = onWalk.withLock({ $0 }) { f(self) }
        for id in 0..<3 { body(PurgeUnit(id: id, priority: .normal, lastUsed: 0, volatileBytes: 4096)) }
    }

    func purge(unit id: Int) -> Int {
        inside.add(1, ordering: .acquiringAndReleasing)
        defer { inside.subtract(1, ordering: .acquiringAndReleasing) }
        purges.add(1, ordering: .relaxed)
        if let f = onPurge.withLock({ $0 }) { f(self) }
        return 4096
    }
}

/// One purger row; the problems seen.
func runPurgerLifecycleRow(_ row: PurgerLifecycleRow) throws -> [String] {
    var problems: [String] = []
    let gate = Gate()
    let once = Atomic<Bool>(false)
    let holdOnce: @Sendable (HoldingMemory) -> Void = { _ in
        if !once.exchange(true, ordering: .relaxed) { gate.hold() }
    }
    switch row {
    case .unregisterWhilePurgeAllInsidePurge, .unregisterWhileStatisticsInsideForEach, .unregisterWhilePurgerThreadInsidePurge:
        let onThread = row == .unregisterWhilePurgerThreadInsidePurge
        let purger = try Purger(.init(budget: onThread ? 0 : nil, pressureSources: .none))
        defer { purger.stop() }
        let m = HoldingMemory()
        if row == .unregisterWhileStatisticsInsideForEach { m.onWalk.withLock { $0 = holdOnce } } else { m.onPurge.withLock { $0 = holdOnce } }
        purger.register(m)
        let pass: TestThread? = onThread ? nil : TestThread {
            if row == .unregisterWhileStatisticsInsideForEach { _ = purger.statistics() } else { _ = purger.purgeAll() }
        }
        guard gate.waitReached() else { return ["the pass never reached the object"] }
        let leftBeforeReturn = Atomic<Bool>(false)
        let returned = Atomic<Bool>(false)
        let u = TestThread {
            purger.unregister(m)
            leftBeforeReturn.store(m.inside.load(ordering: .acquiring) == 0, ordering: .releasing)
            returned.store(true, ordering: .releasing)
        }
        _ = waitUntil(seconds: 0.3) { returned.load(ordering: .acquiring) }
        gate.open()
        u.join()
        pass?.join()
        if !leftBeforeReturn.load(ordering: .acquiring) { problems.append("unregister returned while the pass was inside the object") }
        let calls = m.purges.load(ordering: .relaxed) + m.walks.load(ordering: .relaxed)
        _ = purger.purgeAll()
        _ = purger.statistics()
        if m.purges.load(ordering: .relaxed) + m.walks.load(ordering: .relaxed) != calls { problems.append("the purger called the object after unregister") }
    case .unregisterFromInsidePurgeOnPurgerThread, .unregisterFromInsideForEachOnPassThread:
        let onThread = row == .unregisterFromInsidePurgeOnPurgerThread
        let purger = try Purger(.init(budget: onThread ? 0 : nil, pressureSources: .none))
        defer { purger.stop() }
        let m = HoldingMemory()
        let unregistered = Atomic<Bool>(false)
        let unregisterSelf: @Sendable (HoldingMemory) -> Void = { m in
            if !unregistered.exchange(true, ordering: .relaxed) { purger.unregister(m) }
        }
        if onThread { m.onPurge.withLock { $0 = unregisterSelf } } else { m.onWalk.withLock { $0 = unregisterSelf } }
        purger.register(m)
        let pass: TestThread? = onThread ? nil : TestThread { _ = purger.purgeAll() }
        if !waitUntil(seconds: 10, { unregistered.load(ordering: .acquiring) }) { problems.append("the pass never called the object") }
        pass?.join()
        _ = purger.purgeAll()  // after the thread's pass: passes are serialised
        let purges = m.purges.load(ordering: .relaxed)
        if purges > 1 { problems.append("\(purges) purges: the pass called the object after it unregistered") }
        m.onPurge.withLock { $0 = nil }
        m.onWalk.withLock { $0 = nil }
    case .stopWhilePurgerThreadInsidePurge, .dropPurgerWhilePurgerThreadInsidePurge:
        let box = Locked<Purger?>(try Purger(.init(budget: 0, pressureSources: .none)))
        let m = HoldingMemory()
        m.onPurge.withLock { $0 = holdOnce }
        box.withLock { $0!.register(m) }
        guard gate.waitReached() else { return ["the purger's thread never reached the object"] }
        let leftBeforeReturn = Atomic<Bool>(false)
        let returned = Atomic<Bool>(false)
        let actor = TestThread {
            if row == .stopWhilePurgerThreadInsidePurge {
                box.withLock { $0 }!.stop()
            } else {
                let last = box.withLock { p -> Purger? in
                    defer { p = nil }
                    return p
                }
                _ = consume last  // the last reference: deinit stops and joins the thread
            }
            leftBeforeReturn.store(m.inside.load(ordering: .acquiring) == 0, ordering: .releasing)
            returned.store(true, ordering: .releasing)
        }
        _ = waitUntil(seconds: 0.3) { returned.load(ordering: .acquiring) }
        gate.open()
        actor.join()
        if !leftBeforeReturn.load(ordering: .acquiring) { problems.append("returned while the purger's thread was inside the object") }
        box.withLock { $0?.stop() }
    case .stopFromInsidePurgeOnPurgerThread:
        let purger = try Purger(.init(budget: 0, pressureSources: .none))
        let m = HoldingMemory()
        let stopped = Atomic<Bool>(false)
        m.onPurge.withLock { $0 = { _ in
            if !stopped.exchange(true, ordering: .relaxed) { purger.stop() }
        } }
        purger.register(m)
        if !waitUntil(seconds: 10, { stopped.load(ordering: .acquiring) }) { problems.append("the purger's thread never called the object") }
        if !waitUntil(seconds: 10, { !purger.statistics().hasThread }) { problems.append("the purger still has a thread after stop()") }
        m.onPurge.withLock { $0 = nil }
    case .dropObjectWhilePurgeAllInsidePurge:
        let purger = try Purger(.init(pressureSources: .none))
        let freed = DoneFlag()
        var m: HoldingMemory? = HoldingMemory(freed: freed)
        m!.onPurge.withLock { $0 = holdOnce }
        purger.register(m!)
        let pass = TestThread { _ = purger.purgeAll() }
        guard gate.waitReached() else { return ["the pass never reached the object"] }
        let inside = m!.inside.load(ordering: .acquiring)
        m = nil  // the owner lets go while the pass is inside
        if freed.isSet { problems.append("the object was freed while the pass was inside it (\(inside) calls in flight)") }
        gate.open()
        pass.join()
        if !waitUntil(seconds: 10, { freed.isSet }) { problems.append("the object was never freed after the pass") }
        if purger.statistics().registeredObjects != 0 { problems.append("the dropped object is still registered") }
    }
    return problems
}

@Suite("lifecycle table: cache and purger") struct CacheAndPurgerLifecycleTable {
    #if DEBUG
    @Test("a cache operation held in its middle while the cache is cleared, dropped or purged, from another thread or the purger's",
          arguments: CacheLifecycleOp.allCases, LifecycleAction.allCases)
    func cacheRow(_ op: CacheLifecycleOp, _ action: LifecycleAction) {
        for p in runCacheLifecycleRow(op, action) { Issue.record("\(op) × \(action): \(p)") }
    }
    #endif

    @Test("a purger's unregister, stop or drop while a pass is inside an object", arguments: PurgerLifecycleRow.allCases)
    func purgerRow(_ row: PurgerLifecycleRow) throws {
        for p in try runPurgerLifecycleRow(row) { Issue.record("\(row): \(p)") }
    }
}
