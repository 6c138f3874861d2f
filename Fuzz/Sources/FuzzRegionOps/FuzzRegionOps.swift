// Fuzz target: sequences of VolatileRegion calls with arbitrary sizes and
// ranges, checked against a model after every call: the typed error of
// every bad input (and nothing changed), exactly which pages each
// markNonVolatile reports purged, what purge returns, status, page states,
// optimistic accesses (intact iff no page of the range is purged, and then
// the bytes the model expects), nesting depth, every byte of every page
// against its expected pattern, and `.closed` after close.
import FuzzSupport
import VRange
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRegionOps(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    RegionFuzz.run(&input)
    return 0
}

enum RegionFuzz {
    /// What the model knows of one page.
    struct Page {
        var state: PageState = .nonVolatile
        /// The pattern the page holds (0: zeros).
        var tag: UInt64 = 0
    }

    static func run(_ input: inout FuzzInput) {
        let ps = Kernel_pageSize
        let flags = input.u8()
        // Sizes: sometimes hostile (must throw .invalidSize), usually 1...96 pages.
        if flags & 0x80 != 0 {
            let bad = [0, -1, Int.min, Int.max, Int.max - ps + 2][Int(flags & 7) % 5]
            switch thrown({ () throws(VRangeError) in try VolatileRegion(byteCount: bad) }) {
            case (_, .invalidSize(let n)?): check(n == bad, "invalidSize(\(n)) for \(bad)")
            case (_, let e): fuzzFail("byteCount \(bad): \(String(describing: e)), expected invalidSize")
            }
            return
        }
        let byteCount = (1 + input.below(96)) * ps - (flags & 0x40 != 0 ? Int(input.u16()) % ps : 0)
        let mechanism: FaultMechanism = [.automatic, .userfaultfd, .mprotect][Int(flags & 3) % 3]
        let kernelDriven = flags & 4 != 0 && mechanism != .mprotect
        let region: VolatileRegion
        switch thrown({ () throws(VRangeError) in
            try VolatileRegion(byteCount: byteCount, options: .init(faultMechanism: mechanism, kernelDriven: kernelDriven))
        }) {
        case (let r?, nil): region = r
        case (_, .unsupported?): return  // no userfaultfd on this host
        case (_, let e): fuzzFail("VolatileRegion(\(byteCount)): \(String(describing: e))")
        }
        let size = region.size
        check(size >= byteCount && size % ps == 0 && size - byteCount < ps, "size \(size) for \(byteCount)")
        var model = [Page](repeating: Page(), count: size / ps)
        var closed = false
        var nextTag: UInt64 = 1

        func expectError(_ offset: Int, _ length: Int) -> VRangeError? {
            closed ? .closed : expectedRangeError(offset: offset, length: length, size: size, pageSize: ps)
        }
        func pagesOf(_ offset: Int, _ length: Int) -> Range<Int> { (offset / ps)..<((offset + length) / ps) }
        func verifyBytes(_ pages: Range<Int>) {
            guard !closed else { return }
            for p in pages where model[p].state != .purged {
                let seen = classify(region.baseAddress + p * ps, pageSize: ps, tag: model[p].tag)
                check(seen == model[p].tag, "page \(p) (\(model[p].state)) should hold \(model[p].tag), holds \(String(describing: seen))")
            }
        }

        var steps = 0
        while !input.isEmpty && steps < 64 {
            steps += 1
            let op = input.u8()
            // Half the calls go through the `Range` spelling (the only one of
            // purge, status, access), half through `offset:length:`.
            let byRange = op & 0x80 != 0 || [3, 5, 6, 7, 10].contains(op % 11)
            let range = byRange ? input.range(size: size, pageSize: ps) : 0..<0
            let (offset, length) = byRange ? (range.lowerBound, wrappedLength(range)) : input.offsetAndLength(size: size, pageSize: ps)
            let expected = expectError(offset, length)
            let pages = expected == nil ? pagesOf(offset, length) : 0..<0
            func expect(_ e: VRangeError?, _ what: String) {
                check(e == expected, "\(what)(\(offset), \(length)): \(String(describing: e)), expected \(String(describing: expected))")
            }
            switch op % 11 {
            case 0:  // markVolatile
                let r = thrown { () throws(VRangeError) in
                    byRange ? try region.markVolatile(range) : try region.markVolatile(offset: offset, length: length)
                }
                expect(r.error, "markVolatile")
                for p in pages where model[p].state == .nonVolatile { model[p].state = .volatile }
            case 1, 2:  // markNonVolatile
                let r = thrown { () throws(VRangeError) -> NonVolatileResult in
                    byRange ? try region.markNonVolatile(range) : try region.markNonVolatile(offset: offset, length: length)
                }
                expect(r.error, "markNonVolatile")
                guard let result = r.value else { break }
                let lost = pages.filter { model[$0].state == .purged }
                check(result.purgedRanges == byteRuns(lost, pageSize: ps),
                      "markNonVolatile(\(offset), \(length)) reported \(result.purgedRanges), the model lost pages \(lost)")
                check(result.range == offset..<(offset + length), "result range \(result.range)")
                check(result.wasPurged == !lost.isEmpty, "wasPurged \(result.wasPurged)")
                for p in pages {
                    if model[p].state == .purged { model[p].tag = 0 }
                    model[p].state = .nonVolatile
                }
                verifyBytes(pages)
            case 3:  // purge
                let r = thrown { () throws(VRangeError) -> Int in try region.purge(range) }
                expect(r.error, "purge")
                guard let bytes = r.value else { break }
                let n = pages.filter { model[$0].state == .volatile }.count
                check(bytes == n * ps, "purge returned \(bytes), the model has \(n) volatile pages")
                for p in pages where model[p].state == .volatile { model[p].state = .purged }
            case 4:  // purgeAll
                let r = thrown { () throws(VRangeError) -> Int in try region.purgeAll() }
                if closed { check(r.error == .closed, "purgeAll after close: \(String(describing: r.error))"); break }
                let n = model.filter { $0.state == .volatile }.count
                check(r.value == n * ps, "purgeAll returned \(String(describing: r.value)), the model has \(n) volatile pages")
                for p in model.indices where model[p].state == .volatile { model[p].state = .purged }
            case 5:  // status and page states
                let s = thrown { () throws(VRangeError) in try region.status(range) }
                let st = thrown { () throws(VRangeError) in try region.pageStates(range) }
                expect(s.error, "status")
                expect(st.error, "pageStates")
                guard let status = s.value, let states = st.value, !kernelDriven else { break }
                // (Kernel-driven status counts pages mincore finds missing: not modelled.)
                let v = pages.filter { model[$0].state == .volatile }.count
                let pu = pages.filter { model[$0].state == .purged }.count
                check(status == RegionStatus(bytes: length, volatileBytes: v * ps, purgedBytes: pu * ps),
                      "status \(status), model volatile \(v) purged \(pu)")
                check(states == pages.map { model[$0].state }, "page states \(states)")
            case 6, 7:  // optimistic access
                let r = thrown { () throws(VRangeError) -> VolatileAccess<[UInt64?]> in
                    try region.withVolatileAccess(range) { buf in
                        stride(from: 0, to: buf.count, by: ps).map { i in
                            classify(buf.baseAddress! + i, pageSize: ps, tag: model[(offset + i) / ps].tag)
                        }
                    }
                }
                expect(r.error, "withVolatileAccess")
                guard let access = r.value else { break }
                if pages.contains(where: { model[$0].state == .purged }) {
                    check(access == .purged, "access over a purged page was \(access)")
                } else {
                    check(access == .intact(pages.map { model[$0].tag }),
                          "access over intact pages: \(access), expected \(pages.map { model[$0].tag })")
                }
            case 8:  // write a pattern to a page that is not purged
                guard !closed, !pages.isEmpty else { break }
                let p = pages.lowerBound
                guard model[p].state != .purged else { break }
                model[p].tag = nextTag
                fillPage(region.baseAddress + p * ps, pageSize: ps, tag: nextTag)
                nextTag += 1
            case 9:  // nested accesses: 8 deep is allowed, the 9th throws
                guard !closed else { break }
                let depth = 1 + Int(input.u8() % 10)
                var deepest = 0
                var failure: VRangeError?
                func nest(_ level: Int) {
                    do {
                        _ = try region.withVolatileAccess(0..<ps) { _ in
                            deepest = max(deepest, level)
                            if level < depth { nest(level + 1) }
                        }
                    } catch { failure = error }
                }
                nest(1)
                let runs = model[0].state != .purged
                check(deepest == (runs ? min(depth, 8) : 0), "nesting \(depth): deepest body \(deepest)")
                check(failure == (depth > 8 && runs ? .accessNestingTooDeep : nil), "nesting \(depth): \(String(describing: failure))")
            default:  // close (rarely), else a page-out request outside kernel-driven mode
                if op >= 0xF0 {
                    region.close()
                    closed = true
                    check(region.isClosed, "isClosed after close")
                } else if !kernelDriven {
                    let r = thrown { () throws(VRangeError) in try region.pageOut(range) }
                    if r.error != nil { expect(r.error, "pageOut") }
                }
            }
            if !closed && steps % 8 == 0 { verifyBytes(0..<model.count) }
        }
        if !closed {
            verifyBytes(0..<model.count)
            let all = thrown { () throws(VRangeError) -> NonVolatileResult in try region.markNonVolatile(0..<size) }
            let lost = model.indices.filter { model[$0].state == .purged }
            check(all.value?.purgedRanges == byteRuns(lost, pageSize: ps), "final unmark: \(String(describing: all.value)), lost \(lost)")
        }
        region.close()
    }
}

let Kernel_pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
