// C5 (stats2), beside its held-window rows in StatisticsTable.allocatorRow:
// statistics taken over and over while more threads than cores churn spans
// through their thread caches (replacing spans, freeing unlocked, exiting)
// and another thread drains the caches. No timing is asserted: every
// snapshot must keep the invariants its doc comment states.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("allocator statistics under churn") struct AllocatorStatisticsChurnTests {
    @Test("every statistics snapshot keeps its invariants while threads churn their caches and drains run")
    func invariantsUnderChurn() throws {
        guard try threadCachesAvailable("invariantsUnderChurn") else { return }
        let a = try VolatileAllocator(options: .init(segmentBytes: 4 << 20, releaseDelay: .seconds(600), arenaCount: 1))
        // Held throughout: 4 buffers of 100 pages (too large to be cached).
        let k1 = try a.allocate(byteCount: 100 * page), k2 = try a.allocate(byteCount: 100 * page)
        let k3 = try a.allocate(byteCount: 100 * page), k4 = try a.allocate(byteCount: 100 * page)
        let churners = 2 * Kernel.onlineCPUs + 2  // more threads than cores
        let iterations = 20_000
        let stop = Atomic<Bool>(false)
        let running = Atomic<Int>(churners)
        var threads: [TestThread] = []
        for t in 0..<churners {
            threads.append(TestThread {
                for i in 0..<iterations {
                    // At most one buffer of this thread is live at a time;
                    // its cache holds at most 8 spans (2 to 10 pages).
                    var b = try! a.allocate(byteCount: (2 + (i + t) % 9) * page)
                    b.withUnsafeMutableBytes { $0[0] = 1 }
                    if i % 5 == 0 { b.unlock() }  // freed unlocked: into the free lists
                    b.free()
                }
                running.subtract(1, ordering: .releasing)
            })
        }
        let drainer = TestThread {
            while !stop.load(ordering: .acquiring) { _ = a.releaseFreeMemory(olderThan: .seconds(600)); sched_yield() }
        }
        // Live buffers: the 4 held, at most one per churner, and (in a
        // snapshot that counts thread-cached spans as live) at most 8 cached
        // spans per churner. Never fewer than the 4 held.
        let most = (4 + 9 * churners, (400 + 9 * churners * 10) * page)
        var snapshots = 0
        var bad: [String] = [], high: [String] = []
        while running.load(ordering: .acquiring) > 0 || snapshots < 100 {
            let s = a.statistics
            snapshots += 1
            if s.liveBuffers < 4 || s.liveBytes < 400 * page {
                bad.append("\(s.liveBuffers) buffers, \(s.liveBytes / page) pages")
            } else if s.liveBuffers > most.0 || s.liveBytes > most.1 {
                high.append("\(s.liveBuffers) buffers, \(s.liveBytes / page) pages")
            }
        }
        for t in threads { t.join() }
        stop.store(true, ordering: .releasing)
        drainer.join()
        #expect(bad.isEmpty, "\(bad.count) of \(snapshots) snapshots below the 4 held buffers (400 pages): \(bad.prefix(5))")
        // OPEN (RELIABILITY.md): under AddressSanitizer one CI-like run saw
        // snapshots above the bound (65 buffers, 775 pages for at most 58):
        // either the bound leaves out spans a fallback snapshot may count
        // live (magazines), or a span was counted twice. Not decided yet.
        withKnownIssue("snapshots above the bound of held + one live + 8 cached per churner (seen under ASan)", isIntermittent: true) {
            #expect(high.isEmpty, "\(high.count) of \(snapshots) snapshots above \(most.0) buffers, \(most.1 / page) pages: \(high.prefix(5))")
        }
        // The churners exited (their caches went back): exact.
        let end = a.statistics
        #expect(end.liveBuffers == 4 && end.liveBytes == 400 * page, "after the churn: \(end)")
        k1.free(); k2.free(); k3.free(); k4.free()
        let last = a.statistics
        #expect(last.liveBuffers == 0 && last.liveBytes == 0, "all freed: \(last)")
    }
}
