// VolatileAllocator and PurgeableBuffer on real regions: lock/unlock/purge at
// every size class boundary, exact purged ranges, the sub-page sharing rule,
// nesting, NSPurgeableData's protocol, optimistic access, spans, purge units
// and a test-local victim selection, free-list reuse and merging.
import Testing
@testable import VRange

/// A test allocator whose release delay never fires during a test.
func quietAllocator(arenas: Int? = nil) throws -> VolatileAllocator {
    try VolatileAllocator(options: .init(releaseDelay: .seconds(600), arenaCount: arenas))
}

@Suite("VolatileAllocator") struct AllocatorTests {
    static let sizes = [1, page - 1, page, page + 1, 1 << 20, 256 << 20]

    @Test("lock, unlock and purge keep or report every byte", arguments: sizes)
    func lockUnlockPurge(size: Int) throws {
        let a = try quietAllocator()
        // A neighbour first, so that b does not start its segment or page
        // (unlocked: a small b shares its page, which must be purgeable).
        var spacer = try a.allocate(byteCount: size)
        spacer.unlock()
        var b = try a.allocate(byteCount: size)
        expect(b.isLocked && b.count == size)
        expect(size > 64 << 20 || b.offset > spacer.offset, "256 MiB gets a segment of its own")
        fill(&b, tag: 1)
        b.unlock()
        expect(!b.isContentDiscarded)
        var r = b.lock()
        #expect(r.outcome == .intact)
        expectTruthfulLock(b, r, tag: 1, "\(size) B, not purged")

        // A bystander of another size class: unlocked, never purged.
        var other = try a.allocate(byteCount: 3 * page + 7)
        fill(&other, tag: 9)
        other.unlock()

        b.unlock()
        let released = a.purge(unit: b.purgeUnitID)
        #expect(released > 0, "the buffer's unit purged nothing")
        expect(b.isContentDiscarded)
        #expect(b.withVolatileAccess { $0.count } == .purged)
        r = b.lock()
        #expect(r.purgedRanges == [0..<size], "\(size) B: \(r.purgedRanges)")
        expectTruthfulLock(b, r, tag: 1, "\(size) B, purged")

        // Purged memory is usable again, and survives the next round.
        fill(&b, tag: 2)
        b.unlock()
        r = b.lock()
        #expect(r.outcome == .intact)
        expectTruthfulLock(b, r, tag: 2, "\(size) B, refilled")
        b.free()

        let ro = other.lock()
        #expect(ro.outcome == .intact)
        expectTruthfulLock(other, ro, tag: 9, "bystander")
    }

    @Test("lock reports exactly the byte ranges that were purged")
    func whichRanges() throws {
        let a = try quietAllocator()
        let size = 8 * page + 100  // 9 pages, the last one partly used
        let spacer = try a.allocate(byteCount: 3 * page)  // ranges are relative to the buffer, not its segment
        var b = try a.allocate(byteCount: size)
        expect(b.offset == 3 * page && spacer.offset == 0)
        fill(&b, tag: 3)
        b.unlock()
        let seg = b.segment, base = b.offset
        for pages in [1..<2, 3..<5, 8..<9] {
            _ = seg.backing.purge((base + pages.lowerBound * page)..<(base + pages.upperBound * page))
        }
        let r = b.lock()
        #expect(r.purgedRanges == [page..<(2 * page), (3 * page)..<(5 * page), (8 * page)..<size])
        #expect(r.purgedBytes == page + 2 * page + 100)
        expectTruthfulLock(b, r, tag: 3, "partial purge")
    }

    @Test("a shared page is purged only when every buffer on it is unlocked")
    func subPageSharing() throws {
        let a = try quietAllocator(arenas: 1)
        var x = try a.allocate(byteCount: 100), y = try a.allocate(byteCount: 100), z = try a.allocate(byteCount: 100)
        #expect(x.sharesPage && y.page == x.page && z.page == x.page)
        fill(&x, tag: 1); fill(&y, tag: 2); fill(&z, tag: 3)
        x.unlock(); y.unlock()
        // z still holds the page: nothing on it may go.
        #expect(purgeEverything(a) == 0)
        #expect(a.purge(unit: x.purgeUnitID) == 0)
        #expect(x.withVolatileAccess { $0[0] } == .intact(patternByte(0, 1)))
        let rx = x.lock()
        #expect(rx.outcome == .intact)
        expectTruthfulLock(x, rx, tag: 1, "x while z held the page")
        x.unlock()

        z.unlock()  // the last one: now the page is volatile
        #expect(a.purge(unit: x.purgeUnitID) == page)
        // z locks first and learns; x and y learn too although z's lock made
        // the page non-volatile (and zero-filled) before them.
        let rz = z.lock()
        #expect(rz.purgedRanges == [0..<100])
        #expect(y.withVolatileAccess { _ in 1 } == .purged, "y's page was purged and refilled by z")
        expect(y.isContentDiscarded)
        let rx2 = x.lock(), ry = y.lock()
        #expect(rx2.purgedRanges == [0..<100] && ry.purgedRanges == [0..<100])
        #expect(zeros(x, [0..<100]) && zeros(y, [0..<100]))
        // Told once: the next round is intact.
        fill(&x, tag: 4)
        x.unlock()
        #expect(x.lock().outcome == .intact)
        #expect(mismatches(x, tag: 4).isEmpty)
    }

    @Test("nested locks: only the outermost unlock makes the buffer volatile")
    func nestedLocks() throws {
        let a = try quietAllocator()
        for size in [64, 2 * page] {
            var b = try a.allocate(byteCount: size)
            fill(&b, tag: 5)
            #expect(b.lock().outcome == .intact)  // nested: always intact
            #expect(b.lockCount == 2)
            b.unlock()
            expect(b.isLocked)
            #expect(a.purge(unit: b.purgeUnitID) == 0, "a locked buffer was purged")
            var units = 0
            a.forEachPurgeUnit { if $0.id == b.purgeUnitID { units += 1 } }
            #expect(units == 0)
            b.unlock()
            expect(!b.isLocked)
            a.forEachPurgeUnit { if $0.id == b.purgeUnitID { units += 1 } }
            #expect(units == 1)
            let r = b.lock()
            #expect(r.outcome == .intact)
            expectTruthfulLock(b, r, tag: 5, "nested \(size)")
        }
    }

    @Test("beginContentAccess returns false once discarded, until lock() takes the buffer back")
    func contentAccessProtocol() throws {
        let a = try quietAllocator()
        var b = try a.allocate(byteCount: 5 * page)
        fill(&b, tag: 6)
        b.endContentAccess()
        expect(b.beginContentAccess())
        expect(b.beginContentAccess())  // nested
        b.endContentAccess(); b.endContentAccess()
        _ = a.purge(unit: b.purgeUnitID)
        expect(!b.beginContentAccess())
        expect(!b.isLocked)
        expect(!b.beginContentAccess(), "discarded must be sticky")
        expect(b.isContentDiscarded)
        let r = b.lock()
        #expect(r.purgedRanges == [0..<(5 * page)])
        fill(&b, tag: 7)
        b.unlock()
        expect(b.beginContentAccess())
        #expect(mismatches(b, tag: 7).isEmpty)
    }

    @Test("optimistic access reads an unlocked buffer or says purged")
    func optimisticAccess() throws {
        let a = try quietAllocator()
        for size in [200, page + 1] {
            var b = try a.allocate(byteCount: size)
            fill(&b, tag: 8)
            #expect(b.withVolatileAccess { $0.count } == .intact(size))  // locked: just runs
            b.unlock()
            let sum = b.withVolatileAccess { raw in raw.reduce(0) { $0 &+ Int($1) } }
            #expect(sum == .intact((0..<size).reduce(0) { $0 &+ Int(patternByte($1, 8)) }))
            _ = a.purge(unit: b.purgeUnitID)
            #expect(b.withVolatileAccess { $0[0] } == .purged)
        }
    }

    @Test("span access: write through mutableBytes, read through bytes")
    func spans() throws {
        let a = try quietAllocator()
        for size in [10, 3 * page] {
            var b = try a.allocate(byteCount: size)
            do {
                var m = b.mutableBytes
                #expect(m.byteCount == size)
                for i in 0..<size { m.storeBytes(of: patternByte(i, 11), toByteOffset: i, as: UInt8.self) }
            }
            let s = b.bytes
            #expect(s.byteCount == size)
            #expect((0..<size).allSatisfy { s.unsafeLoad(fromByteOffset: $0, as: UInt8.self) == patternByte($0, 11) })
        }
    }

    @Test("purge units: classes and recency; a test-local purger takes free memory, then the oldest")
    func purgeUnitsAndVictimSelection() throws {
        let a = try quietAllocator(arenas: 1)
        var old = try a.allocate(byteCount: 4 * page), mid = try a.allocate(byteCount: 4 * page)
        var new = try a.allocate(byteCount: 4 * page)
        var gone = try a.allocate(byteCount: 8 * page)
        fill(&old, tag: 1); fill(&mid, tag: 2); fill(&new, tag: 3); fill(&gone, tag: 4)
        gone.free()  // free memory: class .veryLow
        old.unlock(); RecencyClock.advance()
        mid.unlock(); RecencyClock.advance()
        new.unlock()
        var units: [PurgeUnit] = []
        a.forEachPurgeUnit { units.append($0) }
        let byID = Dictionary(uniqueKeysWithValues: units.map { ($0.id, $0) })
        let (uo, um, un) = (byID[old.purgeUnitID], byID[mid.purgeUnitID], byID[new.purgeUnitID])
        #expect(uo?.priority == .normal && uo?.volatileBytes == 4 * page)
        #expect(uo!.lastUsed < um!.lastUsed && um!.lastUsed < un!.lastUsed)
        #expect(units.contains { $0.priority == .veryLow && $0.volatileBytes >= 8 * page }, "\(units)")

        // The purger's policy, in small: lowest class first, then oldest.
        // Free memory comes first, then `old`; purge those and stop.
        let order = units.sorted { ($0.priority, $0.lastUsed) < ($1.priority, $1.lastUsed) }
        let free = order.prefix { $0.priority == .veryLow }
        #expect(!free.isEmpty && order[free.count].id == old.purgeUnitID, "\(order)")
        var released = 0
        for unit in order.prefix(free.count + 1) { released += a.purge(unit: unit.id) }
        #expect(released >= 12 * page)
        expect(old.lock().wasPurged, "the oldest buffer should have gone")
        let rm = mid.lock(), rn = new.lock()
        #expect(!rm.wasPurged && !rn.wasPurged, "newer buffers should have survived")
        #expect(mismatches(mid, tag: 2).isEmpty && mismatches(new, tag: 3).isEmpty)
    }

    @Test("freed spans are reused best fit and merged with free neighbours")
    func reuseAndMerge() throws {
        let a = try quietAllocator(arenas: 1)
        var x = try a.allocate(byteCount: 2 * page), y = try a.allocate(byteCount: 3 * page)
        let z = try a.allocate(byteCount: 5 * page)
        let guardBuffer = try a.allocate(byteCount: page)  // keeps z off the segment's free tail
        #expect(y.offset == x.offset + 2 * page && z.offset == y.offset + 3 * page)
        let start = x.offset
        // Unlocked frees go to the free lists (locked ones may be kept hot).
        x.unlock(); y.unlock()
        x.free(); y.free()
        var z2 = z
        z2.unlock()
        z2.free()
        let merged = try a.allocate(byteCount: 10 * page)
        #expect(merged.offset == start, "x, y and z should have merged into one 10-page span")
        #expect(a.statistics.liveBuffers == 2)
        _ = consume guardBuffer
        _ = consume merged
        #expect(a.statistics.liveBuffers == 0)
    }

    @Test("frees of locked and unlocked buffers; statistics")
    func freesAndStatistics() throws {
        let a = try quietAllocator(arenas: 1)
        var buffers: [Int] = []
        for (i, size) in [1, 500, page, 3 * page, 1 << 20].enumerated() {
            var b = try a.allocate(byteCount: size)
            if i % 2 == 0 { b.unlock() }
            buffers.append(b.count)
            #expect(a.statistics.liveBuffers == 1)
            b.free()
            #expect(a.statistics.liveBuffers == 0)
        }
        let s = a.statistics
        #expect(s.segments == 1 && s.mappedBytes >= 4 << 20 && s.liveBytes == 0)
        #expect(s.metadataBytes > 0 && s.metadataBytes <= s.mappedBytes / 100)
        #expect(buffers.count == 5)
    }

    @Test("bad sizes and options are typed errors")
    func badInput() throws {
        let a = try quietAllocator()
        #expect(throws: VRangeError.invalidSize(0)) { _ = try a.allocate(byteCount: 0) }
        #expect(throws: VRangeError.invalidSize(-5)) { _ = try a.allocate(byteCount: -5) }
        #expect(throws: VRangeError.invalidSize(.max)) { _ = try a.allocate(byteCount: .max) }
        #expect(throws: VRangeError.invalidSize(0)) { _ = try VolatileAllocator(options: .init(segmentBytes: 0)) }
        #expect(throws: VRangeError.self) { _ = try VolatileAllocator(options: .init(arenaCount: 0)) }
        #expect(a.statistics.liveBuffers == 0)
    }

    @Test("buffers outlive their allocator")
    func buffersOutliveAllocator() throws {
        var b: PurgeableBuffer
        var small: PurgeableBuffer
        do {
            let a = try quietAllocator()
            b = try a.allocate(byteCount: 2 * page)
            small = try a.allocate(byteCount: 50)
        }
        fill(&b, tag: 1); fill(&small, tag: 2)
        b.unlock(); small.unlock()
        #expect(b.lock().outcome == .intact && small.lock().outcome == .intact)
        #expect(mismatches(b, tag: 1).isEmpty && mismatches(small, tag: 2).isEmpty)
        // Freeing the last buffers unmaps their segments (a span freed while
        // locked must not be kept hot for an allocator that is gone).
        weak let spanSegment = b.segment
        weak let slabSegment = small.segment
        let token = b.segment.cacheToken
        b.free()
        #expect(ThreadCache.census(token: token).spans == 0, "a span of a dead allocator was kept in a thread cache")
        small.free()
        #expect(spanSegment == nil && slabSegment == nil, "segments of a dead allocator outlived their buffers")
    }
}
