// Helpers shared by the tests: a seeded generator, real threads, page
// patterns, and the mechanisms this host offers.
import CVRange
import Synchronization
import Testing
@testable import VRange
import VRangeChaosLedger
#if canImport(Glibc)
import Glibc
#endif

let page = Kernel.pageSize

/// SplitMix64 (VRangeChaosLedger): the chaos participants draw from the same.
typealias SeededGenerator = SplitMix64

/// An integer from the environment, or `fallback`.
func environmentInt(_ name: String, _ fallback: Int) -> Int {
    guard let raw = getenv(name), let value = Int(String(cString: raw)) else { return fallback }
    return value
}

/// A seed from VRANGE_SEED, or a fresh one; printed so a failure can be replayed.
func testSeed(_ label: String) -> UInt64 {
    if let raw = getenv("VRANGE_SEED"), let s = UInt64(String(cString: raw)) { return s }
    var g = SystemRandomNumberGenerator()
    let s = g.next()
    print("[\(label)] seed \(s) (replay with VRANGE_SEED=\(s))")
    return s
}

/// Whether userfaultfd works here; prints which mechanisms the suite covers.
let userfaultfdAvailable: Bool = {
    let ok = (try? Kernel.UserFault.shared()) != nil
    if !ok {
        print("NOTE: userfaultfd is unavailable on this host: userfaultfd and kernel-driven tests run the mprotect fallback only")
    }
    return ok
}()

/// The mechanisms to test on this host (both where userfaultfd works).
var mechanisms: [FaultMechanism] {
    userfaultfdAvailable ? [.userfaultfd, .mprotect] : [.mprotect]
}

func region(pages: Int, _ mechanism: FaultMechanism, kernelDriven: Bool = false) throws -> VolatileRegion {
    let r = try VolatileRegion(
        byteCount: pages * page,
        options: .init(faultMechanism: mechanism, kernelDriven: kernelDriven))
    #expect(r.faultMechanism == mechanism)
    return r
}

/// Byte range of pages `pages`.
func bytes(_ pages: Range<Int>) -> Range<Int> { (pages.lowerBound * page)..<(pages.upperBound * page) }

/// Fills page `p` with a pattern derived from `tag` (never all zero).
func fill(_ r: VolatileRegion, page p: Int, tag: UInt8) {
    let base = r.baseAddress + p * page
    for i in stride(from: 0, to: page, by: 8) { base.storeBytes(of: UInt64(tag) &* 0x0101_0101_0101_0101 ^ UInt64(i), toByteOffset: i, as: UInt64.self) }
}

/// Whether page `p` holds the pattern of `tag`.
func holds(_ r: VolatileRegion, page p: Int, tag: UInt8) -> Bool {
    let base = UnsafeRawPointer(r.baseAddress + p * page)
    for i in stride(from: 0, to: page, by: 8)
    where base.load(fromByteOffset: i, as: UInt64.self) != UInt64(tag) &* 0x0101_0101_0101_0101 ^ UInt64(i) {
        return false
    }
    return true
}

/// Whether page `p` is all zeros.
func isZero(_ r: VolatileRegion, page p: Int) -> Bool {
    let base = UnsafeRawPointer(r.baseAddress + p * page)
    for i in stride(from: 0, to: page, by: 8) where base.load(fromByteOffset: i, as: UInt64.self) != 0 { return false }
    return true
}

/// A real POSIX thread running `body`; `join()` waits for it.
final class TestThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Void

    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self)
        let rc = pthread_create(&thread, nil, { raw in
            let me = Unmanaged<TestThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    func join() { pthread_join(thread, nil) }
}

/// Page runs as page ranges (for comparing with `purgedRanges`).
func pageRuns(_ result: NonVolatileResult) -> [Range<Int>] {
    result.purgedRanges.map { ($0.lowerBound / page)..<($0.upperBound / page) }
}

/// Maximal runs of the sorted page numbers in `pages`.
func runs(_ pages: [Int]) -> [Range<Int>] {
    var out: [Range<Int>] = []
    for p in pages.sorted() {
        if let last = out.last, last.upperBound == p { out[out.count - 1] = last.lowerBound..<(p + 1) } else { out.append(p..<(p + 1)) }
    }
    return out
}

/// After `markNonVolatile` of `pages` returned `result`: every page reported
/// purged must read zero and every other page must still hold `tag`. Records
/// an issue for each page that does not; returns how many pages were intact
/// and which were reported purged.
@discardableResult
func expectTruthfulUnmark(
    _ r: VolatileRegion, _ result: NonVolatileResult, pages: Range<Int>, tag: UInt8,
    _ context: @autoclosure () -> String
) -> (intact: Int, lost: Set<Int>) {
    let lost = Set(pageRuns(result).flatMap { Array($0) })
    var intact = 0
    for p in pages {
        if lost.contains(p) {
            if !isZero(r, page: p) { Issue.record("\(context()) page \(p): reported purged, not zero") }
        } else {
            intact += 1
            if !holds(r, page: p, tag: tag) { Issue.record("\(context()) page \(p): reported intact, changed") }
        }
    }
    return (intact, lost)
}

/// Has the kernel reclaim the (volatile, lazily freed) pages `pages` of a
/// kernel-driven region. MADV_PAGEOUT is a request: a page still in a
/// per-CPU LRU batch is skipped (seen under ThreadSanitizer, and on 16
/// cores). Asks up to 20 times; pages still resident are then dropped with
/// MADV_DONTNEED, which is what reclaim does to a lazily freed page (the
/// mapping stays, the page goes), and the test output says so. Returns
/// whether every page of `pages` reads purged at the end.
@discardableResult
func reclaimAll(_ r: VolatileRegion, _ pages: Range<Int>) throws -> Bool {
    let allPurged = { try r.pageStates(bytes(pages)).allSatisfy { $0 == .purged } }
    for _ in 0..<20 {
        try r.pageOut(bytes(pages))
        if try allPurged() { return true }
    }
    let states = try r.pageStates(bytes(pages))
    let left = pages.filter { states[$0 - pages.lowerBound] != .purged }
    print("NOTE: MADV_PAGEOUT declined pages \(left) 20 times: dropping them with MADV_DONTNEED as reclaim would")
    for p in left { _ = madvise(r.baseAddress + p * page, page, MADV_DONTNEED) }
    return try allPurged()
}
