// VolatileRegion on real mappings, with both fault mechanisms: marks, purges,
// which-pages reporting, status, idempotence, bad input and close.
import Testing
@testable import VRange

@Suite("Volatile region") struct RegionTests {
    @Test func sizeIsRoundedUpToPages() throws {
        let r = try VolatileRegion(byteCount: 3 * page + 1)
        #expect(r.size == 4 * page)
        #expect(r.pageSize == page)
        #expect(try r.status() == RegionStatus(bytes: 4 * page, volatileBytes: 0, purgedBytes: 0))
        #expect(r.bytes.allSatisfy { $0 == 0 }, "a new region reads as zeros")
        print("fault mechanism chosen automatically: \(r.faultMechanism)")
    }

    @Test(arguments: [0, -1, Int.min, Int.max])
    func invalidSizesAreTypedErrors(_ size: Int) {
        #expect(throws: VRangeError.invalidSize(size)) { try VolatileRegion(byteCount: size) }
    }

    @Test(arguments: mechanisms)
    func intactRoundTripKeepsEveryByte(_ m: FaultMechanism) throws {
        let r = try region(pages: 40, m)
        for p in 0..<40 { fill(r, page: p, tag: UInt8(p + 1)) }
        try r.markVolatile(bytes(0..<40))
        #expect(try r.status().volatileBytes == 40 * page)
        let result = try r.markNonVolatile(bytes(0..<40))
        #expect(result.outcome == .intact)
        #expect(result.purgedRanges.isEmpty)
        #expect(result.range == bytes(0..<40))
        for p in 0..<40 { #expect(holds(r, page: p, tag: UInt8(p + 1))) }
    }

    @Test(arguments: mechanisms)
    func purgeReportsExactlyWhichPages(_ m: FaultMechanism) throws {
        let r = try region(pages: 70, m)
        for p in 0..<70 { fill(r, page: p, tag: UInt8(p + 1)) }
        try r.markVolatile(bytes(0..<70))
        #expect(try r.purge(bytes(3..<5)) == 2 * page)
        #expect(try r.purge(bytes(31..<34)) == 3 * page, "across a map word boundary")
        #expect(try r.purge(bytes(69..<70)) == page)
        #expect(try r.status() == RegionStatus(bytes: 70 * page, volatileBytes: 64 * page, purgedBytes: 6 * page))
        #expect(try r.pageStates(bytes(2..<6)) == [.volatile, .purged, .purged, .volatile])

        let result = try r.markNonVolatile(bytes(0..<70))
        #expect(result.outcome == .purged)
        #expect(result.purgedRanges == [bytes(3..<5), bytes(31..<34), bytes(69..<70)])
        #expect(result.purgedBytes == 6 * page)
        let lost: Set = [3, 4, 31, 32, 33, 69]
        for p in 0..<70 {
            if lost.contains(p) { #expect(isZero(r, page: p), "purged page \(p) reads zero") }
            else { #expect(holds(r, page: p, tag: UInt8(p + 1)), "page \(p) intact") }
        }
        // Purged pages come back writable.
        for p in lost { fill(r, page: p, tag: 0xEE) }
        for p in lost { #expect(holds(r, page: p, tag: 0xEE)) }
        #expect(try r.status() == RegionStatus(bytes: 70 * page, volatileBytes: 0, purgedBytes: 0))
    }

    @Test(arguments: mechanisms)
    func partialUnmarkReportsOnlyItsOwnPages(_ m: FaultMechanism) throws {
        let r = try region(pages: 10, m)
        try r.markVolatile(bytes(0..<10))
        try r.purge(bytes(2..<3))
        try r.purge(bytes(7..<8))
        #expect(try r.markNonVolatile(bytes(0..<5)).purgedRanges == [bytes(2..<3)])
        #expect(try r.markNonVolatile(bytes(5..<10)).purgedRanges == [bytes(7..<8)])
    }

    @Test(arguments: mechanisms)
    func purgeNeverTouchesNonVolatilePages(_ m: FaultMechanism) throws {
        let r = try region(pages: 64, m)
        for p in 0..<64 { fill(r, page: p, tag: UInt8(p + 1)) }
        for p in stride(from: 0, to: 64, by: 2) { try r.markVolatile(bytes(p..<(p + 1))) }
        #expect(try r.purgeAll() == 32 * page)
        for p in stride(from: 1, to: 64, by: 2) { #expect(holds(r, page: p, tag: UInt8(p + 1))) }
        // A volatile page that was never purged still reads fine (no fault),
        // and so do all non-volatile pages: reading them here would crash the
        // test process otherwise.
        try r.markVolatile(bytes(1..<2))
        #expect(holds(r, page: 1, tag: 2))
    }

    @Test(arguments: mechanisms)
    func marksAreIdempotent(_ m: FaultMechanism) throws {
        let r = try region(pages: 8, m)
        fill(r, page: 0, tag: 9)
        try r.markVolatile(bytes(0..<4))
        try r.markVolatile(bytes(0..<4))
        #expect(try r.purge(bytes(1..<2)) == page)
        #expect(try r.purge(bytes(1..<2)) == 0, "a purged page is not purged twice")
        try r.markVolatile(bytes(0..<4))
        #expect(try r.pageStates(bytes(0..<4)) == [.volatile, .purged, .volatile, .volatile], "re-marking keeps purged")
        #expect(try r.markNonVolatile(bytes(0..<4)).purgedRanges == [bytes(1..<2)])
        #expect(try r.markNonVolatile(bytes(0..<4)).outcome == .intact, "second unmark: nothing lost since")
        #expect(try r.markNonVolatile(bytes(4..<8)).outcome == .intact, "never volatile")
        #expect(holds(r, page: 0, tag: 9))
    }

    @Test(arguments: mechanisms)
    func purgedThenRemarkedVolatileStaysPurgedUntilUnmarked(_ m: FaultMechanism) throws {
        let r = try region(pages: 2, m)
        try r.markVolatile(bytes(0..<1))
        try r.purge(bytes(0..<1))
        try r.markVolatile(bytes(0..<2))
        #expect(try r.markNonVolatile(bytes(0..<2)).purgedRanges == [bytes(0..<1)])
    }

    /// Every kind of bad input is a typed error and changes nothing.
    @Test(arguments: mechanisms)
    func badInputIsATypedErrorAndChangesNothing(_ m: FaultMechanism) throws {
        let r = try region(pages: 8, m)
        for p in 0..<8 { fill(r, page: p, tag: UInt8(p + 1)) }
        try r.markVolatile(bytes(2..<6))
        try r.purge(bytes(3..<4))
        let before = try r.pageStates(bytes(0..<8))
        let size = r.size
        let cases: [(offset: Int, length: Int, error: VRangeError)] = [
            (page, 0, .emptyRange(offset: page)),
            (2 * page, -page, .reversedRange(offset: 2 * page, length: -page)),
            (Int.max - page + 1, 2 * page, .overflowingRange(offset: Int.max - page + 1, length: 2 * page)),
            (-page, 2 * page, .outOfBounds(offset: -page, length: 2 * page, size: size)),
            (7 * page, 2 * page, .outOfBounds(offset: 7 * page, length: 2 * page, size: size)),
            (size, page, .outOfBounds(offset: size, length: page, size: size)),
            (1, page, .misalignedRange(offset: 1, length: page, pageSize: page)),
            (page, page + 1, .misalignedRange(offset: page, length: page + 1, pageSize: page)),
            (0, 100, .misalignedRange(offset: 0, length: 100, pageSize: page)),
        ]
        for c in cases {
            #expect(throws: c.error) { try r.markVolatile(offset: c.offset, length: c.length) }
            #expect(throws: c.error) { try r.markNonVolatile(offset: c.offset, length: c.length) }
            if c.length > 0, !c.offset.addingReportingOverflow(c.length).overflow {
                let range = c.offset..<(c.offset + c.length)
                #expect(throws: c.error) { try r.markVolatile(range) }
                #expect(throws: c.error) { try r.markNonVolatile(range) }
                #expect(throws: c.error) { try r.purge(range) }
                #expect(throws: c.error) { try r.status(range) }
                #expect(throws: c.error) { try r.pageStates(range) }
                #expect(throws: c.error) { try r.withVolatileAccess(range) { _ in Issue.record("body ran") } }
            }
            #expect(try r.pageStates(bytes(0..<8)) == before, "state unchanged after \(c.error)")
        }
        // Empty Range<Int> values too.
        #expect(throws: VRangeError.emptyRange(offset: 0)) { try r.markVolatile(0..<0) }
        #expect(try r.pageStates(bytes(0..<8)) == before)
        for p in [0, 1, 2, 4, 5, 6, 7] { #expect(holds(r, page: p, tag: UInt8(p + 1))) }
    }

    @Test(arguments: mechanisms)
    func useAfterCloseIsATypedError(_ m: FaultMechanism) throws {
        let r = try region(pages: 4, m)
        try r.markVolatile(bytes(0..<2))
        r.close()
        r.close()  // idempotent
        #expect(r.isClosed)
        #expect(throws: VRangeError.closed) { try r.markVolatile(bytes(0..<1)) }
        #expect(throws: VRangeError.closed) { try r.markNonVolatile(bytes(0..<1)) }
        #expect(throws: VRangeError.closed) { try r.purge(bytes(0..<1)) }
        #expect(throws: VRangeError.closed) { try r.purgeAll() }
        #expect(throws: VRangeError.closed) { try r.status() }
        #expect(throws: VRangeError.closed) { try r.pageStates(bytes(0..<1)) }
        #expect(throws: VRangeError.closed) { try r.withVolatileAccess(bytes(0..<1)) { _ in 0 } }
    }

    @Test func kernelDrivenModeNeedsUserfaultfd() {
        #expect(throws: VRangeError.self) {
            try VolatileRegion(byteCount: page, options: .init(faultMechanism: .mprotect, kernelDriven: true))
        }
    }

    @Test func manyRegionsComeAndGo() throws {
        // Slots of the handler's region table are reused.
        for _ in 0..<3 {
            var regions: [VolatileRegion] = []
            for _ in 0..<50 { regions.append(try VolatileRegion(byteCount: page)) }
            for r in regions { try r.markVolatile(0..<page); try r.purgeAll() }
            regions.removeAll()
        }
    }
}

@Suite("Optimistic access") struct AccessTests {
    @Test(arguments: mechanisms)
    func intactAccessReturnsTheBodysValue(_ m: FaultMechanism) throws {
        let r = try region(pages: 4, m)
        fill(r, page: 1, tag: 5)
        try r.markVolatile(bytes(0..<4))
        let result = try r.withVolatileAccess(bytes(1..<2)) { buffer in buffer.load(as: UInt64.self) }
        #expect(result == .intact(UInt64(5) &* 0x0101_0101_0101_0101))
        #expect(try r.pageStates(bytes(0..<4)).allSatisfy { $0 == .volatile }, "access does not un-mark")
    }

    @Test(arguments: mechanisms)
    func knownPurgedPageSkipsTheBody(_ m: FaultMechanism) throws {
        let r = try region(pages: 4, m)
        try r.markVolatile(bytes(0..<4))
        try r.purge(bytes(2..<3))
        let result = try r.withVolatileAccess(bytes(0..<4)) { _ in Issue.record("body must not run") }
        #expect(result.value == nil)
        #expect(try r.withVolatileAccess(bytes(0..<2)) { _ in 1 } == .intact(1), "other pages unaffected")
    }

    /// A purge that lands while the body runs: the body touches the purged
    /// page, gets zeros instead of SIGBUS, and the access reports purged.
    @Test(arguments: mechanisms)
    func purgeDuringAccessIsReportedNotFatal(_ m: FaultMechanism) throws {
        let r = try region(pages: 4, m)
        fill(r, page: 1, tag: 5)
        try r.markVolatile(bytes(0..<4))
        var seen: UInt64 = 1
        let result = try r.withVolatileAccess(bytes(0..<4)) { buffer in
            _ = try? r.purge(bytes(1..<2))
            seen = buffer.load(fromByteOffset: page, as: UInt64.self)  // faults, handled
            return seen
        }
        #expect(result == .purged)
        #expect(seen == 0)
        #expect(try r.pageStates(bytes(1..<2)) == [.purged], "the page is purged again afterwards")
        #expect(try r.markNonVolatile(bytes(0..<4)).purgedRanges == [bytes(1..<2)])
    }

    @Test(arguments: mechanisms)
    func manyFaultsInOneAccessAreAllRestored(_ m: FaultMechanism) throws {
        // More faults than the per-scope record (16): the overflow path.
        let r = try region(pages: 40, m)
        try r.markVolatile(bytes(0..<40))
        var sum = 0
        let result = try r.withVolatileAccess(bytes(0..<40)) { buffer in
            _ = try? r.purge(bytes(0..<40))
            for p in 0..<40 { sum += Int(buffer[p * page]) }
            return sum
        }
        #expect(result == .purged)
        #expect(sum == 0)
        #expect(try r.status().purgedBytes == 40 * page)
        #expect(try r.markNonVolatile(bytes(0..<40)).purgedRanges == [bytes(0..<40)])
    }

    @Test(arguments: mechanisms)
    func accessesNest(_ m: FaultMechanism) throws {
        let a = try region(pages: 2, m)
        let b = try region(pages: 2, m)
        try a.markVolatile(bytes(0..<2))
        try b.markVolatile(bytes(0..<2))
        let outer = try a.withVolatileAccess(bytes(0..<2)) { outerBuffer in
            let inner = try? b.withVolatileAccess(bytes(0..<2)) { innerBuffer in
                _ = try? a.purge(bytes(0..<1))
                // A fault in the outer scope's range while the inner is open.
                return Int(outerBuffer[0]) + Int(innerBuffer[0])
            }
            return inner?.value
        }
        #expect(outer == .purged)
        #expect(try b.status().purgedBytes == 0)
    }

    @Test func nestingTooDeepIsATypedError() throws {
        let r = try VolatileRegion(byteCount: page)
        try r.markVolatile(0..<page)
        func nest(_ depth: Int) throws(VRangeError) -> Int {
            let result = try r.withVolatileAccess(0..<page) { _ -> Result<Int, VRangeError> in
                do throws(VRangeError) { return .success(try nest(depth + 1)) } catch { return .failure(error) }
            }
            switch result {
            case .intact(.success(let d)): return d
            case .intact(.failure(let e)): throw e
            case .purged: return -1
            }
        }
        #expect(throws: VRangeError.accessNestingTooDeep) { try nest(0) }
    }
}
