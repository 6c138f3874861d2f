// sqlite3_pcache_methods2's contract, method by method, on a cache instance
// called directly (no SQLite: the instance is what SQLite's callbacks reach),
// with purges made by hand between the calls.
import CSQLite
import Synchronization
import Testing
import VRange
@testable import VRangeSQLite
#if canImport(Glibc)
import Glibc
#endif

/// A cache instance of its own allocator, as xCreate makes one.
private func makeCache(pageSize: Int = 4096, extraSize: Int = 120, purgeable: Bool = true,
                       cacheSize: Int32 = 100) throws -> PageCache {
    let allocator = try VolatileAllocator()
    let cache = PageCache(pageSize: pageSize, extraSize: extraSize, purgeable: purgeable, allocator: allocator)
    cache.setCacheSize(cacheSize)
    return cache
}

/// Purges every unit of the cache's allocator (what a purger does under
/// critical pressure). Returns the bytes released.
@discardableResult
private func purgeEverything(_ cache: PageCache) -> Int {
    var ids: [Int] = []
    cache.allocator.forEachPurgeUnit { ids.append($0.id) }
    return ids.reduce(0) { $0 + cache.allocator.purge(unit: $1) }
}

private func fill(_ page: UnsafeMutablePointer<sqlite3_pcache_page>, size: Int, with byte: UInt8) {
    page.pointee.pBuf.initializeMemory(as: UInt8.self, repeating: byte, count: size)
}

private func holds(_ page: UnsafeMutablePointer<sqlite3_pcache_page>, size: Int, _ byte: UInt8) -> Bool {
    UnsafeRawBufferPointer(start: page.pointee.pBuf, count: size).allSatisfy { $0 == byte }
}

private func firstExtraPointer(_ page: UnsafeMutablePointer<sqlite3_pcache_page>) -> UnsafeRawPointer? {
    page.pointee.pExtra.load(as: UnsafeRawPointer?.self)
}

private func setFirstExtraPointer(_ page: UnsafeMutablePointer<sqlite3_pcache_page>) {
    page.pointee.pExtra.storeBytes(of: UnsafeRawPointer(page), as: UnsafeRawPointer?.self)
}

@Suite("Page cache contract", .serialized) struct PageCacheContractTests {
    @Test func fetchCreateFlagsAndPinning() throws {
        let cache = try makeCache()
        #expect(cache.fetch(1, 0) == nil)  // absent, createFlag 0: nil
        #expect(cache.pageCount() == 0)
        let page = try #require(cache.fetch(1, 1))
        #expect(firstExtraPointer(page) == nil)  // a new page: PgHdr.pPage null
        // Its data alone on its OS page, the extra elsewhere.
        let data = UInt(bitPattern: page.pointee.pBuf), extra = UInt(bitPattern: page.pointee.pExtra)
        #expect(data % 4096 == 0)
        #expect(extra < data || extra >= data + 4096)
        fill(page, size: 4096, with: 0xA5)
        setFirstExtraPointer(page)
        // No reference counting: a second fetch of a pinned page is the same
        // page, and one unpin unpins it.
        #expect(cache.fetch(1, 0) == page)
        #expect(cache.fetch(1, 2) == page)
        cache.unpin(page, discard: false)
        // Unpinned: one purge unit of exactly its 4 KiB.
        var units: [PurgeUnit] = []
        cache.allocator.forEachPurgeUnit { if $0.priority == .normal { units.append($0) } }
        #expect(units.count == 1 && units.first?.volatileBytes == 4096)
        // Fetched again, not purged: the same page, data and extra intact.
        let again = try #require(cache.fetch(1, 0))
        #expect(again == page && holds(again, size: 4096, 0xA5))
        #expect(firstExtraPointer(again) == UnsafeRawPointer(page))
        #expect(cache.pageCount() == 1)
        cache.unpin(again, discard: true)  // discard: gone
        #expect(cache.pageCount() == 0 && cache.fetch(1, 0) == nil)
    }

    @Test func aPurgedPageIsDroppedAndAnsweredAbsent() throws {
        let cache = try makeCache()
        let before = PurgeablePageCache.statistics
        let page = try #require(cache.fetch(7, 1))
        fill(page, size: 4096, with: 0x5A)
        setFirstExtraPointer(page)
        cache.unpin(page, discard: false)
        #expect(purgeEverything(cache) >= 4096)
        // createFlag 0: absent (SQLite then asks for a fresh page).
        #expect(cache.fetch(7, 0) == nil)
        #expect(cache.pageCount() == 0)
        let fresh = try #require(cache.fetch(7, 1))
        #expect(firstExtraPointer(fresh) == nil)  // SQLite reinitialises it and reads the file
        cache.unpin(fresh, discard: false)
        purgeEverything(cache)
        // createFlag 1 on a purged page: a fresh page at once.
        let again = try #require(cache.fetch(7, 1))
        #expect(firstExtraPointer(again) == nil)
        let after = PurgeablePageCache.statistics
        #expect(after.purgedRefetches - before.purgedRefetches == 2)
        #expect(after.pagesCreated - before.pagesCreated == 3)
        cache.removeAll()
    }

    @Test func createFlagOneRefusesWhenNinetyPercentIsPinned() throws {
        let cache = try makeCache(cacheSize: 10)
        var pinned: [UnsafeMutablePointer<sqlite3_pcache_page>] = []
        for key in 1...9 { pinned.append(try #require(cache.fetch(UInt32(key), 1))) }
        #expect(cache.fetch(10, 1) == nil)  // 9 of 10 pinned: not "easy and convenient"
        let forced = try #require(cache.fetch(10, 2))  // every effort
        #expect(cache.pageCount() == 10)
        cache.unpin(forced, discard: false)
        for p in pinned { cache.unpin(p, discard: false) }
        // Full: a new page recycles the least recently unpinned one (key 10).
        let recycled = try #require(cache.fetch(11, 1))
        #expect(recycled == forced && firstExtraPointer(recycled) == nil)
        #expect(cache.pageCount() == 10 && cache.fetch(10, 0) == nil)
        // A smaller cache size frees unpinned pages beyond it now.
        cache.setCacheSize(3)
        #expect(cache.pageCount() == 3)
        cache.removeAll()
    }

    @Test func rekeyTruncateAndShrink() throws {
        let cache = try makeCache()
        var pages: [UInt32: UnsafeMutablePointer<sqlite3_pcache_page>] = [:]
        for key: UInt32 in 1...8 {
            let p = try #require(cache.fetch(key, 1))
            fill(p, size: 4096, with: UInt8(key))
            pages[key] = p
        }
        cache.unpin(pages[5]!, discard: false)
        // Rekey 3 -> 5: the unpinned page at 5 is discarded.
        cache.rekey(pages[3]!, from: 3, to: 5)
        #expect(cache.fetch(3, 0) == nil)
        #expect(cache.fetch(5, 0) == pages[3] && holds(pages[3]!, size: 4096, 3))
        #expect(cache.pageCount() == 7)
        // Truncate at 6: keys 6, 7, 8 go, pinned or not.
        cache.unpin(pages[7]!, discard: false)
        cache.truncate(6)
        #expect(cache.pageCount() == 4)
        for key: UInt32 in 6...8 { #expect(cache.fetch(key, 0) == nil) }
        #expect(cache.fetch(4, 0) == pages[4])
        // Shrink: every unpinned page freed, pinned ones kept.
        cache.unpin(pages[1]!, discard: false)
        cache.unpin(pages[2]!, discard: false)
        cache.shrink()
        #expect(cache.pageCount() == 2)  // 4 and 5 (ex-3) stay pinned
        cache.truncate(0)
        #expect(cache.pageCount() == 0)
    }

    @Test func inMemoryDatabasePagesAreNeverPurged() throws {
        let cache = try makeCache(purgeable: false)
        let page = try #require(cache.fetch(1, 1))
        fill(page, size: 4096, with: 0x77)
        // SQLite never does this for bPurgeable false; if it did, the page
        // would still stay locked.
        cache.unpin(page, discard: false)
        var volatile = 0
        cache.allocator.forEachPurgeUnit { if $0.priority == .normal { volatile += $0.volatileBytes } }
        #expect(volatile == 0)
        purgeEverything(cache)
        let again = try #require(cache.fetch(1, 0))
        #expect(again == page && holds(again, size: 4096, 0x77))
        cache.removeAll()
    }

    @Test(arguments: [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536])
    func everyPageSize(pageSize: Int) throws {
        let cache = try makeCache(pageSize: pageSize, extraSize: 200)
        for key: UInt32 in 1...20 {
            let p = try #require(cache.fetch(key, 1))
            fill(p, size: pageSize, with: UInt8(key))
            setFirstExtraPointer(p)
            let data = UInt(bitPattern: p.pointee.pBuf), extra = UInt(bitPattern: p.pointee.pExtra)
            #expect(extra < data || extra >= data + UInt(pageSize))
            if pageSize >= 4096 { #expect(data % 4096 == 0) }
            cache.unpin(p, discard: false)
        }
        for key: UInt32 in 1...20 {
            let p = try #require(cache.fetch(key, 0))
            #expect(holds(p, size: pageSize, UInt8(key)))
            cache.unpin(p, discard: false)
        }
        purgeEverything(cache)
        // Every page was purged (slab pages too: all their buffers unlocked).
        for key: UInt32 in 1...20 { #expect(cache.fetch(key, 0) == nil) }
        #expect(cache.pageCount() == 0)
    }

    /// Threads fetch, check, write and unpin pages of one instance while
    /// another purges at random: a page handed out holds its key's bytes or
    /// is fresh (extra pointer null), never anything else.
    @Test func concurrentUseWithPurges() throws {
        let cache = try makeCache(cacheSize: 64)
        let stop = Atomic<Bool>(false), wrong = Atomic<Int>(0)
        let purger = Thread {
            while !stop.load(ordering: .relaxed) { purgeEverything(cache) }
        }
        var threads: [Thread] = []
        for t in 0..<3 {
            threads.append(Thread {
                var r = UInt64(t + 1)
                for _ in 0..<20_000 {
                    r = r &* 6364136223846793005 &+ 1442695040888963407
                    let key = UInt32(t * 100 + Int(r >> 33) % 40 + 1)
                    guard let p = cache.fetch(key, 2) else { wrong.add(1, ordering: .relaxed); continue }
                    if firstExtraPointer(p) == nil {
                        fill(p, size: 4096, with: UInt8(truncatingIfNeeded: key))
                        setFirstExtraPointer(p)
                    } else if !holds(p, size: 4096, UInt8(truncatingIfNeeded: key)) {
                        wrong.add(1, ordering: .relaxed)
                    }
                    cache.unpin(p, discard: r & 0xff == 0)
                }
            })
        }
        for t in threads { t.join() }
        stop.store(true, ordering: .relaxed)
        purger.join()
        #expect(wrong.load(ordering: .relaxed) == 0)
        cache.removeAll()
        #expect(cache.pageCount() == 0)
    }

    @Test func costOfACachedPage() {
        // A 4 KiB page with SQLite 3.40's usual extra (~ 216 bytes on 64-bit)
        // costs its OS page plus a few hundred bytes.
        let cost = PurgeablePageCache.bytesPerCachedPage(pageSize: 4096, extraSize: 216)
        #expect(cost > 4096 && cost < 4096 + 512)
    }
}

/// A started pthread; `join()` waits for it.
struct Thread {
    private let handle: pthread_t
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    init(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create: \(rc)")
        handle = t
    }

    func join() { pthread_join(handle, nil) }
}
