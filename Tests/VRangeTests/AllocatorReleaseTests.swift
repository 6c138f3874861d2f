// The release delay: freed memory stays resident while it is churned (no
// system call), and goes back to the kernel once it has been free longer
// than the delay. Measured in a child process (an exit test), so that the
// resident set size is this test's alone: other tests run in parallel.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("VolatileAllocator release delay") struct AllocatorReleaseTests {
    @Test("churn releases nothing; after the delay the memory goes back (RSS drops)")
    func delayedReleaseReturnsMemory() async {
        let r = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            // Every failure says what it was on stdout (see failChild).
            do {
                // The delay is long against the churn (a few ms), and the
                // churn's own duration is checked: on an overloaded machine a
                // churn that outlasted the delay may rightly release, so it
                // is measured again (at most 3 times), never judged.
                let mibs = 48, size = 2 << 20, delay = 1_000_000_000
                var attempt = 0
                while true {
                    attempt += 1
                    // From the allocator's creation: a segment's free remainder
                    // ages from when the segment was made, so under load a slow
                    // fill can let it expire during the churn (seen in a loaded
                    // full run: 10 MiB released 23 ms after the frees).
                    let createdAt = Kernel.nanoseconds()
                    let a = try VolatileAllocator(options: .init(releaseDelay: .nanoseconds(delay), arenaCount: 1))
                    let start = processResidentBytes()
                    var held: [Held] = []
                    for i in 0..<(mibs * (1 << 20) / size) { held.append(Held(try a.allocate(byteCount: size), tag: UInt8(i + 1))) }
                    for h in held { h.buffer.withUnsafeMutableBytes { raw in for p in stride(from: 0, to: size, by: 4096) { raw[p] = 1 } } }
                    let filled = processResidentBytes()
                    held.removeAll()  // freed while locked: kept for reuse
                    let freed = processResidentBytes()
                    // Churn well within the delay: reuses the freed spans,
                    // releases nothing, maps no new segment.
                    let segmentsBefore = a.statistics.segmentsCreated
                    for _ in 0..<2000 { let b = try a.allocate(byteCount: size); b.free() }
                    let churn = a.statistics
                    let churnNs = Kernel.nanoseconds() - createdAt
                    if churnNs >= delay {
                        print("note: attempt \(attempt): filling and the churn took \(churnNs / 1_000_000) ms, longer than the delay")
                        guard attempt < 3 else { failChild("FAIL: the churn outlasted the delay 3 times") }
                        continue
                    }
                    guard churn.releasedBytes == 0, churn.segmentsCreated == segmentsBefore else {
                        failChild("FAIL: churn (\(churnNs / 1_000_000) ms) released \(churn.releasedBytes) bytes, "
                                  + "made \(churn.segmentsCreated - segmentsBefore) segments")
                    }
                    // Wait (bounded) until the delay has passed and a later
                    // free has run the release: RSS must drop by most of what
                    // was freed.
                    let t0 = Kernel.nanoseconds()
                    var now = freed
                    while now > filled - (mibs - 8) << 20 && Kernel.nanoseconds() - t0 < 15_000_000_000 {
                        let b = try a.allocate(byteCount: 100)  // a slow-path free runs the release scan
                        b.free()
                        usleep(20_000)
                        now = processResidentBytes()
                    }
                    let waited = Double(Kernel.nanoseconds() - t0) / 1e9
                    print("RSS: start \(mib(start)), \(mibs) MiB touched \(mib(filled)), freed \(mib(freed)), "
                          + "churn \(churnNs / 1_000_000) ms, after the 1 s delay \(mib(now)) "
                          + "(waited \(waited) s; released \(mib(a.statistics.releasedBytes)))")
                    guard freed >= filled - (4 << 20) else { failChild("FAIL: memory left at free, before the delay") }
                    guard now <= filled - (mibs - 8) << 20 else { failChild("FAIL: RSS did not drop") }
                    break
                }
            } catch {
                failChild("FAIL: \(error)")
            }
        }
        let out = r.map { String(decoding: $0.standardOutputContent, as: UTF8.self) } ?? ""
        print(out, terminator: "")
        #expect(!out.contains("FAIL"), "\(out)")
        #expect(out.contains("RSS:"), "\(out)")
    }

    @Test("releaseFreeMemory gives back free memory at once; memory in use is kept")
    func explicitRelease() throws {
        let a = try quietAllocator(arenas: 1)
        var keep = try a.allocate(byteCount: 8 * page)
        fill(&keep, tag: 3)
        keep.unlock()
        do {
            var b = try a.allocate(byteCount: 64 * page)
            fill(&b, tag: 1)
            b.unlock()
            b.free()
        }
        #expect(a.releaseFreeMemory(olderThan: .seconds(60)) == 0, "nothing is that old")
        #expect(a.releaseFreeMemory() >= 64 * page)
        #expect(a.statistics.releasedBytes >= 64 * page)
        let r = keep.lock()
        #expect(r.outcome == .intact)
        expectTruthfulLock(keep, r, tag: 3, "kept buffer")
    }
}

/// Ends an exit test's child after printing why it failed, with status 0:
/// `#expect(processExitsWith:)` returns the child's output only when the
/// exit condition is met, so the parent judges the output instead.
func failChild(_ message: String) -> Never {
    print(message)
    exit(0)
}
