// The allocator under concurrency: more threads than cores lock, check,
// rewrite, unlock, free and reallocate buffers of every size class while a
// purger purges everything it is offered, continuously. Content canaries
// check that no locked byte is ever lost and that every lock tells the
// truth; frees race with purges. With one arena, threads share slab pages,
// so neighbours lock and unlock one page word concurrently.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// A buffer and the tag of the pattern it should hold.
final class Held: @unchecked Sendable {
    var buffer: PurgeableBuffer
    var tag: UInt8
    init(_ buffer: consuming PurgeableBuffer, tag: UInt8) {
        self.buffer = buffer
        self.tag = tag
        fill(&self.buffer, tag: tag)
    }
}

final class RaceCounters: Sendable {
    let stop = Atomic<Bool>(false)
    let lies = Atomic<Int>(0)          // a lock result that did not match the bytes
    let lostWhileLocked = Atomic<Int>(0)
    let optimisticLies = Atomic<Int>(0)
    let purgedLocks = Atomic<Int>(0)
    let optimisticPurged = Atomic<Int>(0)
    let frees = Atomic<Int>(0)
    let purgedBytes = Atomic<Int>(0)
    let purgePasses = Atomic<Int>(0)
}

@Suite("VolatileAllocator concurrency") struct AllocatorConcurrencyTests {
    static let sizes = [16, 100, 700, 2000, page - 1, page, page + 1, 3 * page + 5]

    /// Amplified: a yield armed at every critical window of the map, the
    /// handler and the access path (the buffers' locks are map transitions),
    /// with fewer rounds.
    @Test("threads (more than cores) under continuous purges: no locked byte lost, every lock truthful",
          arguments: [1, 8], [false, true])
    func concurrentUseUnderPurges(arenas: Int, amplified: Bool) throws {
        try racing(amplified: amplified, "allocator race, \(arenas) arenas") {
            try concurrentUseUnderPurgesRounds(arenas: arenas, amplified: amplified)
        }
    }

    func concurrentUseUnderPurgesRounds(arenas: Int, amplified: Bool) throws {
        let a = try quietAllocator(arenas: arenas)
        let threads = environmentInt("VRANGE_ALLOC_THREADS", 6)
        let rounds = environmentInt("VRANGE_ALLOC_ROUNDS", 1000) / (amplified ? 4 : 1)
        let seed = testSeed("allocator race, \(arenas) arenas")
        let c = RaceCounters()
        let purger = TestThread {
            while !c.stop.load(ordering: .acquiring) {
                c.purgedBytes.add(purgeEverything(a), ordering: .relaxed)
                c.purgePasses.add(1, ordering: .relaxed)
                sched_yield()
                if c.purgePasses.load(ordering: .relaxed) % 16 == 0 { a.releaseFreeMemory() }
            }
        }
        let workers = (0..<threads).map { w in
            TestThread { Self.worker(a, c, seed: seed &+ UInt64(w), rounds: rounds) }
        }
        for t in workers { t.join() }
        c.stop.store(true, ordering: .releasing)
        purger.join()

        let report = "purge passes \(c.purgePasses.load(ordering: .relaxed)), purged \(mib(c.purgedBytes.load(ordering: .relaxed))), "
            + "locks that found a purge \(c.purgedLocks.load(ordering: .relaxed)), optimistic reads that did "
            + "\(c.optimisticPurged.load(ordering: .relaxed)), frees \(c.frees.load(ordering: .relaxed))"
        print("[allocator race, \(arenas) arenas, \(threads) threads × \(rounds) rounds] \(report)")
        #expect(c.lostWhileLocked.load(ordering: .relaxed) == 0, "locked bytes were lost")
        #expect(c.lies.load(ordering: .relaxed) == 0, "lock results disagreed with the bytes")
        #expect(c.optimisticLies.load(ordering: .relaxed) == 0, "an intact optimistic read saw other bytes")
        #expect(c.purgedLocks.load(ordering: .relaxed) > 0, "the purger never won a race: the test proved nothing")
        #expect(a.statistics.liveBuffers == 0)
    }

    static func worker(_ a: VolatileAllocator, _ c: RaceCounters, seed: UInt64, rounds: Int) {
        var rng = SeededGenerator(seed: seed)
        func newHeld() -> Held {
            let size = sizes.randomElement(using: &rng)!
            return Held(try! a.allocate(byteCount: size), tag: UInt8.random(in: 1...255, using: &rng))
        }
        var held = (0..<6).map { _ in newHeld() }
        for h in held where Bool.random(using: &rng) { h.buffer.unlock() }
        var round = 0
        // Run the rounds, and on until some lock has found a purge (bounded).
        let deadline = Kernel.nanoseconds() + 20_000_000_000
        while round < rounds || (c.purgedLocks.load(ordering: .relaxed) == 0 && Kernel.nanoseconds() < deadline) {
            round += 1
            let i = Int.random(in: 0..<held.count, using: &rng)
            let h = held[i]
            let dice = Int.random(in: 0..<10, using: &rng)
            if dice == 0 {
                // Free (locked or not) and replace: frees race with purges.
                held[i] = newHeld()
                if Bool.random(using: &rng) { held[i].buffer.unlock() }
                c.frees.add(1, ordering: .relaxed)
                continue
            }
            if dice == 1 && !h.buffer.isLocked {
                let tag = h.tag
                switch h.buffer.withVolatileAccess({ raw in (0..<raw.count).allSatisfy { raw[$0] == patternByte($0, tag) } }) {
                case .intact(let ok): if !ok { c.optimisticLies.add(1, ordering: .relaxed) }
                case .purged: c.optimisticPurged.add(1, ordering: .relaxed)
                }
                continue
            }
            let wasLocked = h.buffer.isLocked
            let r = h.buffer.lock()
            if r.wasPurged {
                c.purgedLocks.add(1, ordering: .relaxed)
                if wasLocked { c.lostWhileLocked.add(1, ordering: .relaxed) }
            }
            // Every purged byte reads zero, every other byte holds the tag.
            var kept: [Range<Int>] = []
            var at = 0
            for g in r.purgedRanges { if g.lowerBound > at { kept.append(at..<g.lowerBound) }; at = g.upperBound }
            if at < h.buffer.count { kept.append(at..<h.buffer.count) }
            let bad = mismatches(h.buffer, tag: h.tag, in: kept, limit: 3)
            if !zeros(h.buffer, r.purgedRanges) || !bad.isEmpty {
                c.lies.add(1, ordering: .relaxed)
                let found = h.buffer.withUnsafeBytes { raw in bad.map { raw[$0] } }
                print("LIE: size \(h.buffer.count) shares page \(h.buffer.sharesPage) was locked \(wasLocked) result \(r.purgedRanges) "
                      + "bad offsets \(bad) found \(found) expected \(bad.map { patternByte($0, h.tag) }) zeros ok \(zeros(h.buffer, r.purgedRanges))")
            }
            h.tag = UInt8.random(in: 1...255, using: &rng)
            fill(&h.buffer, tag: h.tag)
            // Locked: let the purger run, then every byte must still be there.
            sched_yield()
            if !mismatches(h.buffer, tag: h.tag, limit: 1).isEmpty { c.lostWhileLocked.add(1, ordering: .relaxed) }
            h.buffer.unlock()
            if wasLocked { h.buffer.unlock() }
            if Int.random(in: 0..<4, using: &rng) == 0, h.buffer.lock().wasPurged {
                fill(&h.buffer, tag: h.tag)  // some stay locked a while (refilled if purged meanwhile)
            }
        }
        held.removeAll()  // frees the rest, locked or not
    }

    @Test("threads lock and unlock neighbours on one shared page while it is purged: no locked byte lost")
    func sharedPageRace() throws {
        let a = try quietAllocator(arenas: 1)
        let threads = 4, perThread = 2
        // 8 buffers of 100 B, on one slab page of the 128-byte class; each
        // thread holds at most one locked, and yields both locked and not,
        // so the page's count often falls to 0 and rises again.
        let all = try (0..<(threads * perThread)).map { i in Held(try a.allocate(byteCount: 100), tag: UInt8(i + 1)) }
        let page = all[0].buffer.page
        #expect(all.allSatisfy { $0.buffer.page == page })
        let unit = all[0].buffer.purgeUnitID
        let c = RaceCounters()
        let rounds = environmentInt("VRANGE_SHARED_PAGE_ROUNDS", 300)
        let purger = TestThread {
            while !c.stop.load(ordering: .acquiring) {
                c.purgedBytes.add(a.purge(unit: unit), ordering: .relaxed)
                c.purgePasses.add(1, ordering: .relaxed)
            }
        }
        // The page goes volatile only while all four hold nothing locked, so
        // a scheduler that starves the purger can leave it unpurged through
        // the rounds (seen once in 12 runs under ASan on 2 cores: 1 purge,
        // 0 purged locks). The rounds go on until a lock has met a purge, for
        // at most 30 s more: the test checks a race it has seen happen.
        let deadline = Kernel.monotonicNanoseconds() + 30_000_000_000
        let workers = (0..<threads).map { t in
            let mine = Array(all[(t * perThread)..<((t + 1) * perThread)])
            return TestThread {
                for h in mine { h.buffer.unlock() }
                var round = 0
                while round < rounds
                    || (c.purgedLocks.load(ordering: .relaxed) == 0 && Kernel.monotonicNanoseconds() < deadline) {
                    round += 1
                    for h in mine {
                        let r = h.buffer.lock()
                        if r.wasPurged {
                            c.purgedLocks.add(1, ordering: .relaxed)
                            if !zeros(h.buffer, [0..<100]) { c.lies.add(1, ordering: .relaxed) }
                            fill(&h.buffer, tag: h.tag)
                        } else if !mismatches(h.buffer, tag: h.tag, limit: 1).isEmpty {
                            c.lies.add(1, ordering: .relaxed)
                        }
                        Kernel.yield()  // locked: the purger and the neighbours run
                        if !mismatches(h.buffer, tag: h.tag, limit: 1).isEmpty { c.lostWhileLocked.add(1, ordering: .relaxed) }
                        h.buffer.unlock()
                        Kernel.yield()
                    }
                }
            }
        }
        for t in workers { t.join() }
        c.stop.store(true, ordering: .releasing)
        purger.join()
        print("[shared page race] \(threads) threads × \(perThread) neighbours × at least \(rounds) rounds: purges of the page "
              + "\(c.purgedBytes.load(ordering: .relaxed) / 4096), locks that found it purged \(c.purgedLocks.load(ordering: .relaxed))")
        #expect(c.lostWhileLocked.load(ordering: .relaxed) == 0, "locked bytes were lost")
        #expect(c.lies.load(ordering: .relaxed) == 0, "lock results disagreed with the bytes")
        #expect(c.purgedLocks.load(ordering: .relaxed) > 0, "the page was never purged: the test proved nothing")
    }

    @Test("frees race with purges of the same buffers")
    func freesUnderPurge() throws {
        let a = try quietAllocator(arenas: 2)
        let c = RaceCounters()
        let rounds = environmentInt("VRANGE_ALLOC_ROUNDS", 1000)
        let purger = TestThread {
            while !c.stop.load(ordering: .acquiring) {
                c.purgedBytes.add(purgeEverything(a), ordering: .relaxed)
                sched_yield()
            }
        }
        let workers = (0..<3).map { w in
            TestThread {
                for i in 0..<rounds {
                    var b = try! a.allocate(byteCount: Self.sizes[(i + w) % Self.sizes.count])
                    fill(&b, tag: 7)
                    b.unlock()
                    if i % 3 == 0 { sched_yield() }
                    if i % 2 == 0 { _ = b.lock() }
                    b.free()
                }
            }
        }
        for t in workers { t.join() }
        c.stop.store(true, ordering: .releasing)
        purger.join()
        #expect(a.statistics.liveBuffers == 0)
        print("[frees under purge] purged \(mib(c.purgedBytes.load(ordering: .relaxed))) while 3 threads freed \(3 * rounds) buffers")
    }
}

@Suite("VolatileAllocator interleavings") struct AllocatorInterleavingTests {
    /// A neighbour's first lock found the page purged and zero-filled it,
    /// but has not published the lost bits yet (held there by a debug hook):
    /// an optimistic read of another buffer on the page reads zeros and must
    /// report `.purged`, not `.intact(zeros)`.
    @Test("an optimistic read inside a neighbour's repopulation says purged")
    func optimisticReadDuringNeighbourRepopulation() throws {
        #if DEBUG
        let a = try quietAllocator(arenas: 1)
        let reader = Held(try a.allocate(byteCount: 100), tag: 1)
        let neighbour = Held(try a.allocate(byteCount: 100), tag: 2)
        let seg = reader.buffer.segment
        expect(reader.buffer.page == neighbour.buffer.page)
        reader.buffer.unlock()
        neighbour.buffer.unlock()
        #expect(a.purge(unit: reader.buffer.purgeUnitID) == page)
        let flags = RaceCounters()  // stop: the neighbour is in the window; frees: the body ran
        seg.afterRepopulateHook = {
            flags.stop.store(true, ordering: .releasing)
            let deadline = Kernel.nanoseconds() + 30_000_000_000
            while flags.frees.load(ordering: .acquiring) == 0 && Kernel.nanoseconds() < deadline { Kernel.yield() }
            for _ in 0..<100 { Kernel.yield() }  // let the reader reach its check after the body
        }
        let locker = TestThread { _ = neighbour.buffer.lock() }
        let deadline = Kernel.nanoseconds() + 30_000_000_000
        while !flags.stop.load(ordering: .acquiring) && Kernel.nanoseconds() < deadline { Kernel.yield() }
        expect(flags.stop.load(ordering: .acquiring), "the neighbour never reached the window")
        let r = reader.buffer.withVolatileAccess { raw -> Bool in
            flags.frees.store(1, ordering: .releasing)
            return raw.allSatisfy { $0 == 0 }
        }
        locker.join()
        seg.afterRepopulateHook = nil
        #expect(r == .purged, "read the zero-filled page as intact: \(r)")
        #expect(reader.buffer.lock().purgedRanges == [0..<100])
        #else
        print("NOTE: the interleaving hook exists in debug builds only; this test checks nothing in release")
        #endif
    }
}
