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
    /// The next page in its hash bucket's chain.
    var next: UnsafeMutableRawPointer?
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

/// What one instance did (under its lock), or what destroyed instances did.
struct PageCacheCounts {
    var hits = 0, created = 0, purgedRefetches = 0, pins = 0, unpins = 0, freed = 0, cached = 0, pinned = 0

    static func + (a: Self, b: Self) -> Self {
        Self(hits: a.hits + b.hits, created: a.created + b.created, purgedRefetches: a.purgedRefetches + b.purgedRefetches,
             pins: a.pins + b.pins, unpins: a.unpins + b.unpins, freed: a.freed + b.freed,
             cached: a.cached + b.cached, pinned: a.pinned + b.pinned)
    }

    var statistics: PurgeablePageCache.Statistics {
        .init(hits: hits, pagesCreated: created, purgedRefetches: purgedRefetches, pins: pins, unpins: unpins,
              pagesFreed: freed, pagesCached: cached, pagesPinnedNow: pinned)
    }
}

/// The live instances and the counts of those gone, for the statistics:
/// counting per instance, under the lock each call takes anyway, costs the
/// page cache's calls no shared atomic. Lock order: this, then an instance.
enum PageCacheRegistry {
    struct State: @unchecked Sendable {
        var live: [ObjectIdentifier: Unmanaged<PageCache>] = [:]
        var retired = PageCacheCounts()
    }
    static let state = Mutex(State())

    static func add(_ cache: PageCache) {
        state.withLock { $0.live[ObjectIdentifier(cache)] = .passUnretained(cache) }
    }

    /// Called by the instance's deinit (its memory stays until it returns,
    /// so a snapshot in flight, which holds this lock, ends first).
    static func retire(_ id: ObjectIdentifier, _ counts: PageCacheCounts) {
        state.withLock {
            $0.live[id] = nil
            $0.retired = $0.retired + counts
        }
    }

    static func snapshot() -> PurgeablePageCache.Statistics {
        state.withLock { s in
            s.live.values.reduce(s.retired) { sum, cache in sum + cache._withUnsafeGuaranteedRef { $0.counts } }.statistics
        }
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

    /// What a page costs in the hash table at most: its bucket (there are
    /// between one and two pages per bucket); the chain pointer is in its
    /// block.
    static let tableBytesPerPage = 8

    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    // Under `mutex`:
    /// The hash table: chains through PageHeader.next, bucket = key & mask
    /// (keys are page numbers, dense from 1: pcache1 hashes them the same
    /// way), doubled when it holds more pages than buckets.
    private var buckets: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private var mask = 63
    /// Pages cached, pinned and unpinned.
    private var count = 0
    private var counts_ = PageCacheCounts()
    /// The list of unpinned pages: `newest` was unpinned last, `oldest` is
    /// recycled first.
    private var newest: UnsafeMutableRawPointer?
    private var oldest: UnsafeMutableRawPointer?
    private var pinnedCount = 0
    /// xCachesize: the pages to keep (pinned and unpinned).
    private var maxPages = 100
    /// No key above it is cached (a bound, for xTruncate).
    private var maxKey: UInt32 = 0

    /// This instance's counts (the caller holds the registry's lock).
    var counts: PageCacheCounts { locked { counts_ } }

    init(pageSize: Int, extraSize: Int, purgeable: Bool, allocator: VolatileAllocator) {
        self.pageSize = pageSize
        self.extraSize = extraSize
        self.purgeable = purgeable
        self.allocator = allocator
        layout = PageLayout(extraSize: extraSize)
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        buckets = .allocate(capacity: mask + 1)
        buckets.initialize(repeating: nil, count: mask + 1)
        PageCacheRegistry.add(self)
    }

    deinit {
        removeAll()
        PageCacheRegistry.retire(ObjectIdentifier(self), counts_)
        buckets.deallocate()
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
    func pageCount() -> Int32 { locked { Int32(clamping: count) } }

    /// xFetch. A pinned page is handed out as it is; an unpinned one is
    /// locked first, and dropped if the lock reports it purged (then
    /// answered as if absent). Absent: createFlag 0 answers nil; 1 makes a
    /// page unless 90 % of the cache size is pinned (pcache1's rule: SQLite
    /// then spills a dirty page and asks with 2); 2 makes one unless memory
    /// cannot be had (recycling an unpinned page first).
    func fetch(_ key: UInt32, _ createFlag: Int32) -> UnsafeMutablePointer<sqlite3_pcache_page>? {
        locked {
            if let p = find(key) {
                if p.header.pointee.pinned {
                    counts_.hits += 1
                    return p.page
                }
                unlink(p)
                if purgeable && p.header.pointee.buffer.lock().wasPurged
                    && !PageCacheMethods.ignoresPurges.load(ordering: .relaxed) {
                    // Lost bytes: never served. SQLite reads the page again.
                    unhash(p)
                    free(p)
                    counts_.purgedRefetches += 1
                    return create(key, createFlag)
                }
                pin(p)
                counts_.hits += 1
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
            counts_.pinned -= 1
            counts_.unpins += 1
            if discard || (purgeable && count > maxPages) {
                unhash(p)
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
            if let other = find(newKey), other != p { remove(other) }
            unhash(p)  // from oldKey, the key it has
            p.header.pointee.key = newKey
            hash(p)
            maxKey = max(maxKey, newKey)
        }
    }

    /// xTruncate: frees every page whose key is `limit` or more, pinned ones
    /// included (they are implicitly unpinned).
    func truncate(_ limit: UInt32) {
        locked {
            guard count > 0, limit <= maxKey else { return }
            var doomed: [PageRef] = []
            if Int(maxKey) - Int(limit) < count {
                for key in limit...maxKey { if let p = find(key) { doomed.append(p) } }
            } else {
                forEachPage { if $0.header.pointee.key >= limit { doomed.append($0) } }
            }
            for p in doomed { remove(p) }
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
            var all: [PageRef] = []
            forEachPage { all.append($0) }
            for p in all { remove(p, updatingTable: false) }
            buckets.update(repeating: nil, count: mask + 1)
            count = 0
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
           count + 1 >= maxPages || PageRef(victim).header.pointee.buffer.isContentDiscarded {
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
        hash(p)
        maxKey = max(maxKey, key)
        pin(p)
        counts_.created += 1
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
            .initialize(to: PageHeader(buffer: buffer, key: 0, pinned: false, next: nil, newer: nil, older: nil))
        counts_.cached += 1
        return p
    }

    /// An unpinned page taken for another key: out of the list and the
    /// table, its buffer locked (what it held does not matter).
    private func recycle(_ p: PageRef) -> PageRef {
        unlink(p)
        unhash(p)
        if purgeable { p.header.pointee.buffer.lock() }  // unpinned pages of other caches stay locked
        return p
    }

    private func pin(_ p: PageRef) {
        p.header.pointee.pinned = true
        pinnedCount += 1
        counts_.pins += 1
        counts_.pinned += 1
    }

    /// Frees a cached page, pinned or not.
    private func remove(_ p: PageRef, updatingTable: Bool = true) {
        if p.header.pointee.pinned {
            pinnedCount -= 1
            counts_.pinned -= 1
        } else {
            unlink(p)
        }
        if updatingTable { unhash(p) }
        free(p)
    }

    /// Frees the oldest unpinned pages while more than `limit` are cached.
    private func freeUnpinned(downTo limit: Int) {
        while count > limit, let victim = oldest { remove(PageRef(victim)) }
    }

    /// Frees a page that is in neither the table nor the list: its buffer
    /// (locked or not) and its block.
    private func free(_ p: PageRef) {
        p.header.deinitialize(count: 1)  // frees the buffer
        p.block.deallocate()
        counts_.cached -= 1
        counts_.freed += 1
    }

    // MARK: - Hash table (under the lock)

    private func find(_ key: UInt32) -> PageRef? {
        var cur = buckets[Int(key) & mask]
        while let c = cur {
            let p = PageRef(c)
            if p.header.pointee.key == key { return p }
            cur = p.header.pointee.next
        }
        return nil
    }

    /// Adds a page under its key (none is there).
    private func hash(_ p: PageRef) {
        if count >= mask + 1 { grow() }
        let b = Int(p.header.pointee.key) & mask
        p.header.pointee.next = buckets[b]
        buckets[b] = p.block
        count += 1
    }

    /// Takes a page out of its key's chain (if it is there).
    private func unhash(_ p: PageRef) {
        let b = Int(p.header.pointee.key) & mask
        var prev: PageRef?
        var cur = buckets[b]
        while let c = cur {
            let q = PageRef(c)
            if q == p {
                if let prev { prev.header.pointee.next = q.header.pointee.next } else { buckets[b] = q.header.pointee.next }
                q.header.pointee.next = nil
                count -= 1
                return
            }
            prev = q
            cur = q.header.pointee.next
        }
    }

    private func forEachPage(_ body: (PageRef) -> Void) {
        for b in 0...mask {
            var cur = buckets[b]
            while let c = cur {
                let p = PageRef(c)
                cur = p.header.pointee.next
                body(p)
            }
        }
    }

    /// Twice the buckets, every chain rehashed.
    private func grow() {
        let old = buckets, oldMask = mask
        mask = (mask + 1) * 2 - 1
        buckets = .allocate(capacity: mask + 1)
        buckets.initialize(repeating: nil, count: mask + 1)
        for b in 0...oldMask {
            var cur = old[b]
            while let c = cur {
                let p = PageRef(c)
                cur = p.header.pointee.next
                let nb = Int(p.header.pointee.key) & mask
                p.header.pointee.next = buckets[nb]
                buckets[nb] = c
            }
        }
        old.deallocate()
    }

    // MARK: - Unpinned list (under the lock)

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
