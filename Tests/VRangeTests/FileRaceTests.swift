// Races of the shared-file protocols: pin against purge across processes
// (more processes than cores, every hook point yielding), and the
// pin/purge handshake forced in both orders with the test hooks.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Shared files, races", .serialized) struct FileRaceTests {
    @Test func pinsAgainstPurgesAcrossProcesses() throws {
        let rounds = environmentInt("VRANGE_FILE_RACE_ROUNDS", 400)
        let churners = 4
        let f = try VolatileFile(byteCount: 64 * page)
        let ps = try peers(churners + 1, sharing: f)
        for p in ps { try p.send("jitter") }
        for (i, p) in ps.prefix(churners).enumerated() {
            // Each churner is the only mapper of its page: its vote alone makes it purgeable.
            try p.send("map 1 \(i * 8) \(i * 8 + 1)")
        }
        for (i, p) in ps.prefix(churners).enumerated() { try p.write("churn 1 0 \(i + 1) \(rounds)\n") }
        try ps[churners].write("purgeloop \(rounds)\n")
        // This process purges too, until the churners are done.
        let stop = Atomic<Bool>(false)
        let purged = Atomic<Int>(0)
        let purger = TestThread {
            while !stop.load(ordering: .relaxed) { purged.add((try? f.purgeAll()) ?? 0, ordering: .relaxed) }
        }
        var lost = 0
        for (i, p) in ps.prefix(churners).enumerated() {
            let line = try p.readLine(context: "churn")
            #expect(line.hasPrefix("ok violations=0"), "churner \(i): \(line)")
            lost += Int(line.split(separator: "=").last ?? "0") ?? 0
        }
        stop.store(true, ordering: .relaxed)
        purger.join()
        #expect(try ps[churners].readLine(context: "purgeloop").hasPrefix("ok"))
        print("[file race] \(churners) churners × \(rounds) rounds: \(lost) pins found their page purged")
        #expect(f.sidecar.content.census(0..<64).locked == 0)
        #expect(f.sidecar.control.phase == .idle)
    }

    /// The purger locks a page, then a pin is published before it re-reads
    /// the rule: it must see the pin and leave the page alone.
    @Test func pinPublishedAfterTheLockWinsOverThePurge() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        fill(m, page: 0, tag: 4)
        try m.markVolatile(bytes(0..<1))
        let published = Atomic<Bool>(false)
        let pinned = Atomic<Int>(-1)
        defer { f.testHook.withLock { $0 = nil } }
        let pinner = Mutex<TestThread?>(nil)
        f.testHook.withLock { $0 = { point in
            switch point {
            case .purgeLocked:
                pinner.withLock { $0 = TestThread {
                    let r = try? m.markNonVolatile(bytes(0..<1))
                    pinned.store(r?.wasPurged == false ? 1 : 0, ordering: .relaxed)
                } }
                // Hold the purge until the pin is in the sidecar.
                _ = waitUntil { published.load(ordering: .relaxed) }
            case .published: published.store(true, ordering: .relaxed)
            default: break
            }
        } }
        #expect(try f.purgeAll() == 0)
        pinner.withLock { $0?.join() }
        f.testHook.withLock { $0 = nil }
        #expect(pinned.load(ordering: .relaxed) == 1)
        #expect(look(m, page: 0, tag: 4) == "tag")
    }

    /// A pin published while a purge holds the page after its re-check
    /// waits for it and is told the page was purged.
    @Test func pinDuringThePunchWaitsAndLearns() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        fill(m, page: 0, tag: 4)
        try m.markVolatile(bytes(0..<1))
        let published = Atomic<Bool>(false)
        let result = Mutex<NonVolatileResult?>(nil)
        let pinner = Mutex<TestThread?>(nil)
        defer { f.testHook.withLock { $0 = nil } }
        f.testHook.withLock { $0 = { point in
            switch point {
            case .purgeBeforePunch:
                pinner.withLock { $0 = TestThread {
                    let r = try? m.markNonVolatile(bytes(0..<1))
                    result.withLock { $0 = r }
                } }
                _ = waitUntil { published.load(ordering: .relaxed) }
            case .published: published.store(true, ordering: .relaxed)
            default: break
            }
        } }
        #expect(try f.purgeAll() == page)
        pinner.withLock { $0?.join() }
        f.testHook.withLock { $0 = nil }
        #expect(result.withLock { $0?.purgedRanges } == [bytes(0..<1)])
        #expect(look(m, page: 0, tag: 4) == "zero")
    }

    @Test func threadsPinAndPurgeOneFile() throws {
        let threads = 4  // more than the CI machine's cores
        let rounds = environmentInt("VRANGE_FILE_RACE_ROUNDS", 400)
        let f = try VolatileFile(byteCount: 32 * page)
        let maps = try (0..<threads).map { i in try f.map(bytes((i * 8)..<(i * 8 + 1))) }
        let violations = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let purger = TestThread { while !stop.load(ordering: .relaxed) { _ = try? f.purgeAll() } }
        let workers = maps.enumerated().map { i, m in
            TestThread {
                fill(m, page: 0, tag: UInt8(i + 1))
                for _ in 0..<rounds {
                    try? m.markVolatile(0..<page)
                    guard let r = try? m.markNonVolatile(0..<page) else { violations.add(1, ordering: .relaxed); return }
                    let seen = look(m, page: 0, tag: UInt8(i + 1))
                    if seen != (r.wasPurged ? "zero" : "tag") { violations.add(1, ordering: .relaxed) }
                    if r.wasPurged { fill(m, page: 0, tag: UInt8(i + 1)) }
                }
            }
        }
        workers.forEach { $0.join() }
        stop.store(true, ordering: .relaxed)
        purger.join()
        #expect(violations.load(ordering: .relaxed) == 0)
    }
}
