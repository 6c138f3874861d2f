// Reports must be exact (issue 18, defect 5b): after a failed
// beginContentAccess, lock() reports the ranges that were lost, not the
// whole buffer.
import Testing
@testable import VRange

/// Purges pages `pages` (relative to the buffer's first page) of an unlocked
/// page-span buffer.
private func purgePages(_ b: borrowing PurgeableBuffer, _ pages: Range<Int>) {
    let seg = b.segment
    _ = seg.backing.purge((b.offset + pages.lowerBound * page)..<(b.offset + pages.upperBound * page))
}

@Suite("VolatileAllocator reports") struct AllocatorReportTests {
    @Test("after a failed beginContentAccess, lock() reports exactly the pages lost")
    func failedBeginThenLockIsExact() throws {
        let a = try VolatileAllocator(options: .init(releaseDelay: .seconds(600), arenaCount: 1))
        var b = try a.allocate(byteCount: 4 * page)
        fill(&b, tag: 7)
        b.unlock()
        purgePages(b, 2..<3)
        let began = b.beginContentAccess()
        #expect(began == false)
        let discarded = b.isContentDiscarded
        #expect(discarded)
        let r = b.lock()
        #expect(r.purgedRanges == [(2 * page)..<(3 * page)], "reported \(r.purgedRanges)")
        expectTruthfulLock(b, r, tag: 7, "after a failed beginContentAccess")
        let again = b.beginContentAccess()
        #expect(again, "taken back by lock(): nested access works")
        b.endContentAccess()
        b.unlock()
    }

    @Test("a page purged after the failed beginContentAccess is reported too, merged")
    func failedBeginThenMorePurged() throws {
        let a = try VolatileAllocator(options: .init(releaseDelay: .seconds(600), arenaCount: 1))
        var b = try a.allocate(byteCount: 6 * page - 100)
        fill(&b, tag: 9)
        b.unlock()
        purgePages(b, 1..<2)
        let began = b.beginContentAccess()
        #expect(began == false)
        purgePages(b, 2..<3)
        purgePages(b, 5..<6)
        let r = b.lock()
        #expect(r.purgedRanges == [page..<(3 * page), (5 * page)..<(6 * page - 100)], "reported \(r.purgedRanges)")
        expectTruthfulLock(b, r, tag: 9, "after a failed beginContentAccess and more purges")
        // The next lock reports nothing.
        b.unlock()
        let next = b.lock()
        #expect(next.purgedRanges == [])
    }

    @Test("a buffer that shares its page loses all of it, and is reported so")
    func failedBeginSmall() throws {
        let a = try VolatileAllocator(options: .init(releaseDelay: .seconds(600), arenaCount: 1))
        var b = try a.allocate(byteCount: 100)
        fill(&b, tag: 3)
        b.unlock()
        _ = b.segment.backing.purge(b.segment.bytes(pages: b.page, 1))
        let began = b.beginContentAccess()
        #expect(began == false)
        let r = b.lock()
        #expect(r.purgedRanges == [0..<100])
        b.free()
    }
}
