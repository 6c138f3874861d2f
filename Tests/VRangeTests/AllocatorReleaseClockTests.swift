// Freed memory goes back to the kernel after the release delay even when the
// allocator is never called again (issue 18, defect 5d): the release clock's
// thread does it. Measured with mincore over the allocator's segments, polled
// with a generous bound (never a timing assertion), in a child process.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Resident bytes of the allocator's mapped segments (mincore).
func residentSegmentBytes(_ a: VolatileAllocator) -> Int {
    var total = 0
    for arena in a.arenas {
        arena.state.withLock { s in
            for case let seg? in s.lists.segments {
                let length = seg.pageCount << seg.pageShift
                var vec = [UInt8](repeating: 0, count: seg.pageCount)
                guard mincore(seg.base, length, &vec) == 0 else { continue }
                total += vec.reduce(0) { $0 + Int($1 & 1) } << seg.pageShift
            }
        }
    }
    return total
}

/// How the freed memory was freed.
enum ReleaseClockCase: String, CaseIterable, Sendable {
    /// 32 buffers of 2 MiB, freed locked (free lists and the magazine).
    case largeBuffers
    /// 8 spans of 64 pages freed by a thread that then waits: its cache.
    case threadCache
    /// Small buffers, freed unlocked, emptying their slab pages.
    case smallBuffers
}

@Suite("VolatileAllocator release clock", .serialized) struct AllocatorReleaseClockTests {
    @Test("freed memory goes back after the delay without another call to the allocator", arguments: ReleaseClockCase.allCases)
    func releasedWithoutAnotherCall(_ c: ReleaseClockCase) async {
        setenv("VRANGE_RELEASE_CLOCK_CASE", c.rawValue, 1)
        let label = "releaseclock-\(c.rawValue)"
        let out = await ChildLog.capture(label, prefix: c.rawValue) {
            await #expect(processExitsWith: .success) {
                ChildLog.redirect("releaseclock-" + String(cString: getenv("VRANGE_RELEASE_CLOCK_CASE")))
                let c = ReleaseClockCase(rawValue: String(cString: getenv("VRANGE_RELEASE_CLOCK_CASE")))!
                releaseClockChild(c)
                exit(0)
            }
        }
        #expect(out.contains("PASS"), "\(c): \(out)")
    }
}

func releaseClockChild(_ c: ReleaseClockCase) {
    let a = try! VolatileAllocator(options: .init(releaseDelay: .milliseconds(200), arenaCount: 1))
    var freed = 0
    // The thread-cache case's thread stays (an exiting thread gives its
    // cache back) until the end.
    let done = Atomic<Bool>(false), stay = Atomic<Bool>(true)
    var cacheThread: TestThread?
    switch c {
    case .largeBuffers:
        var held: [Held] = []
        for i in 0..<32 { held.append(Held(try! a.allocate(byteCount: 2 << 20), tag: UInt8(i + 1))) }
        freed = 64 << 20
        held.removeAll()
    case .threadCache:
        let allocator = a
        cacheThread = TestThread {
            var spans: [Held] = []
            for i in 0..<8 { spans.append(Held(try! allocator.allocate(byteCount: 64 * page), tag: UInt8(i + 1))) }
            spans.removeAll()  // freed locked: kept in this thread's cache
            done.store(true, ordering: .releasing)
            while stay.load(ordering: .acquiring) { usleep(10_000) }
        }
        while !done.load(ordering: .acquiring) { usleep(1_000) }
        freed = 8 * 64 * page
    case .smallBuffers:
        var small: [Held] = []
        for i in 0..<4096 { small.append(Held(try! a.allocate(byteCount: 1000), tag: UInt8(i & 0x7F))) }
        for h in small { h.buffer.unlock() }
        freed = 4096 * 1000
        small.removeAll()
    }
    let after = residentSegmentBytes(a)
    ChildLog.say("freed \(mib(freed)); resident in segments right after: \(mib(after))")
    // Nothing calls the allocator from here on (mincore only reads).
    let bound = 20.0, start = monotonicSeconds()
    var now = after
    while now > (c == .smallBuffers ? 12 * page * 4 : 2 * page) && monotonicSeconds() - start < bound {
        usleep(50_000)
        now = residentSegmentBytes(a)
    }
    let waited = monotonicSeconds() - start
    if now > (c == .smallBuffers ? 12 * page * 4 : 2 * page) {
        ChildLog.say("FAIL: \(mib(now)) still resident in the segments \(Int(waited)) s after the frees (delay 200 ms)")
    } else {
        ChildLog.say("PASS: \(mib(now)) resident after \(Int(waited * 1000)) ms (delay 200 ms)")
    }
    stay.store(false, ordering: .releasing)
    cacheThread?.join()
    withExtendedLifetime(a) {}
}
