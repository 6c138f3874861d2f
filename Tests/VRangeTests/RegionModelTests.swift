// A seeded, model-based test of a real region: random mark, unmark, purge
// and optimistic access against a dictionary page -> (state, contents).
// CI runs VRANGE_MODEL_STEPS (default 20 000) steps per mechanism; millions:
// `VRANGE_MODEL_STEPS=2000000 swift test -c release --filter RegionModel`.
import Testing
@testable import VRange

@Suite("Region model") struct RegionModelTests {
    @Test(arguments: mechanisms)
    func regionModel(_ m: FaultMechanism) throws {
        let seed = testSeed("RegionModel(\(m))")
        var g = SeededGenerator(seed: seed)
        let steps = environmentInt("VRANGE_MODEL_STEPS", 20_000)
        let pages = 72
        let r = try region(pages: pages, m)
        var state = [Int: PageState]()  // absent = non-volatile
        var tags = [Int: UInt8]()       // expected contents of intact pages; absent = zero
        func s(_ p: Int) -> PageState { state[p] ?? .nonVolatile }
        for step in 0..<steps {
            let lo = Int.random(in: 0..<pages, using: &g)
            let hi = Int.random(in: (lo + 1)...min(pages, lo + [1, 4, 33, 72].randomElement(using: &g)!), using: &g)
            let range = bytes(lo..<hi)
            let context = "seed \(seed) step \(step) pages \(lo)..<\(hi)"
            switch Int.random(in: 0..<6, using: &g) {
            case 0:  // write new contents into the non-volatile pages
                let tag = UInt8.random(in: 1...255, using: &g)
                for p in lo..<hi where s(p) == .nonVolatile { fill(r, page: p, tag: tag); tags[p] = tag }
            case 1:
                try r.markVolatile(range)
                for p in lo..<hi where s(p) == .nonVolatile { state[p] = .volatile }
            case 2:
                let result = try r.markNonVolatile(range)
                let expected = runs((lo..<hi).filter { s($0) == .purged })
                #expect(pageRuns(result) == expected, "\(context)")
                for p in lo..<hi {
                    if s(p) == .purged { tags[p] = nil }
                    state[p] = nil
                    let ok = tags[p].map { holds(r, page: p, tag: $0) } ?? isZero(r, page: p)
                    if !ok { Issue.record("page \(p) contents wrong after unmark: \(context)"); return }
                }
            case 3:
                let expected = (lo..<hi).filter { s($0) == .volatile }
                #expect(try r.purge(range) == expected.count * page, "\(context)")
                for p in expected { state[p] = .purged }
            case 4:
                let anyPurged = (lo..<hi).contains { s($0) == .purged }
                let result = try r.withVolatileAccess(range) { buffer in
                    (lo..<hi).allSatisfy { p in
                        let first = buffer[(p - lo) * page + 8]
                        return first == (tags[p].map { UInt8(truncatingIfNeeded: UInt64($0) &* 0x0101_0101_0101_0101 ^ 8) } ?? 0)
                    }
                }
                if anyPurged { #expect(result == .purged, "\(context)") } else { #expect(result == .intact(true), "\(context)") }
            default:
                let st = try r.status(range)
                #expect(st.volatileBytes == (lo..<hi).filter { s($0) == .volatile }.count * page, "\(context)")
                #expect(st.purgedBytes == (lo..<hi).filter { s($0) == .purged }.count * page, "\(context)")
            }
            if step % 97 == 0 {
                let states = try r.pageStates(bytes(0..<pages))
                for p in 0..<pages where states[p] != s(p) {
                    Issue.record("page \(p) is \(states[p]), model \(s(p)): \(context)")
                    return
                }
            }
        }
    }
}
