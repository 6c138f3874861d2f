// One cache instance (sqlite3_pcache): SQLite makes one per open database
// connection. Pages by key in a hash table, unpinned pages in a list from
// the most to the least recently unpinned (the recycling order of SQLite's
// own pcache1), one lock per instance.
import CSQLite
import Synchronization
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The cache's bookkeeping of a page, in the page's block of ordinary memory
/// right after SQLite's `sqlite3_pcache_page`.
struct PageHeader: ~Copyable {
    /// The page's data: locked while the page is pinned, unlocked
    /// (purgeable) while it is unpinned in a purgeable cache.
    var buffer: PurgeableBuffer
    var key: UInt32
    var pinned: Bool
    /// Neighbours in the list of unpinned pages (blocks).
    var newer: UnsafeMutableRawPointer?
    var older: UnsafeMutableRawPointer?
}

/// A page's block of ordinary memory: SQLite's `sqlite3_pcache_page` (at the
/// block's address, so that the pointer SQLite holds is the block's), the
/// `PageHeader`, then SQLite's `szExtra` bytes (8-aligned, as pcache1 has
/// them). The page's data is elsewhere: its own buffer.
struct PageLayout {
    static let headerOffset = roundUp(MemoryLayout<sqlite3_pcache_page>.stride, MemoryLayout<PageHeader>.alignment)
    static let extraOffset = roundUp(headerOffset + MemoryLayout<PageHeader>.stride, 8)
    let extraSize: Int
    var blockBytes: Int { Self.extraOffset + extraSize }

    static func roundUp(_ n: Int, _ to: Int) -> Int { (n + to - 1) & ~(to - 1) }
}

/// A page, by the address of its block.
struct PageRef: Equatable {
    let block: UnsafeMutableRawPointer
    init(_ block: UnsafeMutableRawPointer) { self.block = block }
    init(_ page: UnsafeMutablePointer<sqlite3_pcache_page>) { block = UnsafeMutableRawPointer(page) }

    var page: UnsafeMutablePointer<sqlite3_pcache_page> { block.assumingMemoryBound(to: sqlite3_pcache_page.self) }
    var header: UnsafeMutablePointer<PageHeader> {
        (block + PageLayout.headerOffset).assumingMemoryBound(to: PageHeader.self)
    }
    var extra: UnsafeMutableRawPointer { block + PageLayout.extraOffset }
}

/// Process-wide counters (relaxed atomics: each is exact, a snapshot of all
/// of them is not atomic).
final class PageCacheCounters: Sendable {
    static let shared = PageCacheCounters()
    let hits = Atomic<Int>(0), created = Atomic<Int>(0), purgedRefetches = Atomic<Int>(0)
    let pins = Atomic<Int>(0), unpins = Atomic<Int>(0), freed = Atomic<Int>(0)
    let cached = Atomic<Int>(0), pinned = Atomic<Int>(0)

    func snapshot() -> PurgeablePageCache.Statistics {
        .init(hits: hits.load(ordering: .relaxed), pagesCreated: created.load(ordering: .relaxed),
              purgedRefetches: purgedRefetches.load(ordering: .relaxed), pins: pins.load(ordering: .relaxed),
              unpins: unpins.load(ordering: .relaxed), pagesFreed: freed.load(ordering: .relaxed),
              pagesCached: cached.load(ordering: .relaxed), pagesPinnedNow: pinned.load(ordering: .relaxed))
    }
}

/// One sqlite3_pcache. Every method takes the instance's lock: SQLite calls
/// an instance from whichever thread uses its connection (in multi-thread
/// mode one at a time; the lock also covers serialized mode and anything
/// SQLite does not promise).
final class PageCache: @unchecked Sendable {
    let pageSize: Int
    let extraSize: Int
    /// bPurgeable: false for an in-memory database, whose pages are never
    /// unlocked (SQLite never unpins them without discarding them).
    let purgeable: Bool
    let allocator: VolatileAllocator
    let layout: PageLayout

    /// What a page costs in the hash table, about (a Swift Dictionary of
    /// UInt32 keys and pointers at its usual load).
    static let tableBytesPerPage = 24

    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    // Under `mutex`:
    private var table: [UInt32: UnsafeMutableRawPointer] = [:]
    /// The list of unpinned pages: `newest` was unpinned last, `oldest` is
    /// recycled first.
    private var newest: UnsafeMutableRawPointer?
    private var oldest: UnsafeMutableRawPointer?
    private var pinnedCount = 0
    /// xCachesize: the pages to keep (pinned and unpinned).
    private var maxPages = 100
    /// No key above it is cached (a bound, for xTruncate).
    private var maxKey: UInt32 = 0

    private var counters: PageCacheCounters { PageCacheCounters.shared }

    init(pageSize: Int, extraSize: Int, purgeable: Bool, allocator: VolatileAllocator) {
        self.pageSize = pageSize
        self.extraSize = extraSize
        self.purgeable = purgeable
        self.allocator = allocator
        layout = PageLayout(extraSize: extraSize)
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        removeAll()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    // MARK: - sqlite3_pcache_methods2

    /// xCachesize: keep at most `n` pages; unpinned pages beyond it are freed
    /// now, the oldest first.
    func setCacheSize(_ n: Int32) {
        locked {
            maxPages = max(0, Int(n))
            if purgeable { freeUnpinned(downTo: maxPages) }
        }
    }

    /// xPagecount: pinned and unpinned pages.
    func pageCount() -> Int32 { locked { Int32(clamping: table.count) } }

    /// xFetch. A pinned page is handed out as it is; an unpinned one is
    /// locked first, and dropped if the lock reports it purged (then
    /// answered as if absent). Absent: createFlag 0 answers nil; 1 makes a
    /// page unless 90 % of the cache size is pinned (pcache1's rule: SQLite
    /// then spills a dirty page and asks with 2); 2 makes one unless memory
    /// cannot be had (recycling an unpinned page first).
    func fetch(_ key: UInt32, _ createFlag: Int32) -> UnsafeMutablePointer<sqlite3_pcache_page>? {
        locked {
            if let block = table[key] {
                let p = PageRef(block)
                if p.header.pointee.pinned {
                    counters.hits.add(1, ordering: .relaxed)
                    return p.page
                }
                unlink(p)
                if purgeable && p.header.pointee.buffer.lock().wasPurged
                    && !PageCacheMethods.ignoresPurges.load(ordering: .relaxed) {
                    // Lost bytes: never served. SQLite reads the page again.
                    table[key] = nil
                    free(p)
                    counters.purgedRefetches.add(1, ordering: .relaxed)
                    return create(key, createFlag)
                }
                pin(p)
                counters.hits.add(1, ordering: .relaxed)
                return p.page
            }
            return create(key, createFlag)
        }
    }

    /// xUnpin: `discard` frees the page; otherwise it joins the unpinned
    /// list, its buffer unlocked (purgeable from now on), unless the cache
    /// holds more than its size, when it is freed (as pcache1 does).
    func unpin(_ page: UnsafeMutablePointer<sqlite3_pcache_page>, discard: Bool) {
        locked {
            let p = PageRef(page)
            guard p.header.pointee.pinned else { return }  // unpinned already: nothing to do
            p.header.pointee.pinned = false
            pinnedCount -= 1
            counters.pinned.subtract(1, ordering: .relaxed)
            counters.unpins.add(1, ordering: .relaxed)
            if discard || (purgeable && table.count > maxPages) {
                table[p.header.pointee.key] = nil
                free(p)
                return
            }
            if purgeable { p.header.pointee.buffer.unlock() }
            linkNewest(p)
        }
    }

    /// xRekey: the page takes `newKey`; a page cached under `newKey` (never
    /// pinned, says the contract) is freed.
    func rekey(_ page: UnsafeMutablePointer<sqlite3_pcache_page>, from oldKey: UInt32, to newKey: UInt32) {
        locked {
            let p = PageRef(page)
            if let other = table[newKey], other != p.block { remove(PageRef(other)) }
            if table[oldKey] == p.block { table[oldKey] = nil }
            p.header.pointee.key = newKey
            table[newKey] = p.block
            maxKey = max(maxKey, newKey)
        }
    }

    /// xTruncate: frees every page whose key is `limit` or more, pinned ones
    /// included (they are implicitly unpinned).
    func truncate(_ limit: UInt32) {
        locked {
            guard !table.isEmpty, limit <= maxKey else { return }
            if Int(maxKey) - Int(limit) < table.count {
                for key in limit...maxKey { if let block = table[key] { remove(PageRef(block)) } }
            } else {
                for (key, block) in table where key >= limit { remove(PageRef(block)) }
            }
            maxKey = limit == 0 ? 0 : limit - 1
        }
    }

    /// xShrink: frees every unpinned page and gives the allocator's free
    /// memory back to the kernel.
    func shrink() {
        locked { if purgeable { freeUnpinned(downTo: 0) } }
        allocator.releaseFreeMemory()
    }

    /// xDestroy's part: frees every page.
    func removeAll() {
        locked {
            for (_, block) in table { remove(PageRef(block), updatingTable: false) }
            table = [:]
            newest = nil
            oldest = nil
        }
    }

    // MARK: - Pages (under the lock)

    private func create(_ key: UInt32, _ createFlag: Int32) -> UnsafeMutablePointer<sqlite3_pcache_page>? {
        if createFlag == 0 { return nil }
        if createFlag == 1 && purgeable && pinnedCount >= maxPages * 9 / 10 { return nil }
        let p: PageRef
        if purgeable, let victim = oldest,
           table.count + 1 >= maxPages || PageRef(victim).header.pointee.buffer.isContentDiscarded {
            // Full, or the least recently unpinned page was purged (a
            // purger takes the least recently used first): reuse it rather
            // than keep its block for a page that is gone.
            p = recycle(PageRef(victim))
        } else if let fresh = newPage() {
            p = fresh
        } else if createFlag == 2, let victim = oldest {
            p = recycle(PageRef(victim))
        } else {
            return nil
        }
        p.header.pointee.key = key
        // SQLite's pcache.c finds a new page by the first pointer of its
        // extra (PgHdr.pPage) being null, as pcache1 leaves it.
        if extraSize >= MemoryLayout<UnsafeRawPointer?>.size {
            p.extra.storeBytes(of: nil, as: UnsafeRawPointer?.self)
        } else if extraSize > 0 {
            p.extra.initializeMemory(as: UInt8.self, repeating: 0, count: extraSize)
        }
        table[key] = p.block
        maxKey = max(maxKey, key)
        pin(p)
        counters.created.add(1, ordering: .relaxed)
        return p.page
    }

    /// A new page, pinned: its buffer (locked) and its block. nil when the
    /// allocator has no memory.
    private func newPage() -> PageRef? {
        guard var buffer = try? allocator.allocate(byteCount: pageSize) else { return nil }
        let data = buffer.withUnsafeMutableBytes { $0.baseAddress! }
        let block = UnsafeMutableRawPointer.allocate(byteCount: layout.blockBytes, alignment: 16)
        let p = PageRef(block)
        block.bindMemory(to: sqlite3_pcache_page.self, capacity: 1)
            .initialize(to: sqlite3_pcache_page(pBuf: data, pExtra: p.extra))
        (block + PageLayout.headerOffset).bindMemory(to: PageHeader.self, capacity: 1)
            .initialize(to: PageHeader(buffer: buffer, key: 0, pinned: false, newer: nil, older: nil))
        counters.cached.add(1, ordering: .relaxed)
        return p
    }

    /// An unpinned page taken for another key: out of the list and the
    /// table, its buffer locked (what it held does not matter).
    private func recycle(_ p: PageRef) -> PageRef {
        unlink(p)
        table[p.header.pointee.key] = nil
        p.header.pointee.buffer.lock()
        return p
    }

    private func pin(_ p: PageRef) {
        p.header.pointee.pinned = true
        pinnedCount += 1
        counters.pins.add(1, ordering: .relaxed)
        counters.pinned.add(1, ordering: .relaxed)
    }

    /// Frees a cached page, pinned or not.
    private func remove(_ p: PageRef, updatingTable: Bool = true) {
        if p.header.pointee.pinned {
            pinnedCount -= 1
            counters.pinned.subtract(1, ordering: .relaxed)
        } else {
            unlink(p)
        }
        if updatingTable { table[p.header.pointee.key] = nil }
        free(p)
    }

    /// Frees the oldest unpinned pages while more than `limit` are cached.
    private func freeUnpinned(downTo limit: Int) {
        while table.count > limit, let victim = oldest { remove(PageRef(victim)) }
    }

    /// Frees a page that is in neither the table nor the list: its buffer
    /// (locked or not) and its block.
    private func free(_ p: PageRef) {
        p.header.deinitialize(count: 1)  // frees the buffer
        p.block.deallocate()
        counters.cached.subtract(1, ordering: .relaxed)
        counters.freed.add(1, ordering: .relaxed)
    }

    private func linkNewest(_ p: PageRef) {
        p.header.pointee.older = newest
        p.header.pointee.newer = nil
        if let n = newest { PageRef(n).header.pointee.newer = p.block } else { oldest = p.block }
        newest = p.block
    }

    private func unlink(_ p: PageRef) {
        let (newer, older) = (p.header.pointee.newer, p.header.pointee.older)
        if let newer { PageRef(newer).header.pointee.older = older } else { newest = older }
        if let older { PageRef(older).header.pointee.newer = newer } else { oldest = newer }
        p.header.pointee.newer = nil
        p.header.pointee.older = nil
    }
}
