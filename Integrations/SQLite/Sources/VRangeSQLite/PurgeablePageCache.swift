// The public face: install VRange as SQLite's page cache (one call, before
// SQLite initialises), and read what it did.
@_exported import CSQLite  // SQLite's C API, for users of the product
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VRange

/// SQLite's page cache in purgeable memory.
///
/// `install(allocator:purger:)` plugs an application-defined page cache
/// (`sqlite3_config(SQLITE_CONFIG_PCACHE2, …)`) into SQLite: every page of
/// every database the process opens afterwards lives in a `PurgeableBuffer`
/// of `allocator`. A page SQLite holds (*pinned*) is a locked buffer; a page
/// it released (*unpinned*, always a clean page) is an unlocked one, which a
/// purger may discard at any time, as SQLite's contract allows ("the page
/// cache implementation may choose to evict unpinned pages at any time").
/// When SQLite asks for an unpinned page again, its buffer is locked; if the
/// lock reports it purged, the page is dropped and answered as absent, so
/// SQLite reads it from the file again: a page with lost bytes is never
/// handed out.
///
/// Each database page is a buffer of its own (a 4 KiB page alone on one OS
/// page); SQLite's per-page extra (its `PgHdr` and b-tree header) lives in
/// ordinary memory beside the cache's own bookkeeping. Caches of in-memory
/// databases (`bPurgeable` false) never unlock a buffer: they are never
/// purged.
public enum PurgeablePageCache {
    /// Why `install` refused.
    public enum InstallError: Error, Sendable, Equatable, CustomStringConvertible {
        /// This process installed the page cache already (it stays installed
        /// for the life of the process).
        case alreadyInstalled
        /// SQLite is initialised already (`sqlite3_initialize`, which
        /// `sqlite3_open` calls): its page cache can no longer be replaced.
        case sqliteAlreadyInitialized
        /// `sqlite3_config` refused with this result code.
        case rejected(code: Int32)

        public var description: String {
            switch self {
            case .alreadyInstalled: "the purgeable page cache is installed already"
            case .sqliteAlreadyInitialized:
                "SQLite is initialised already: install the page cache before sqlite3_initialize or the first sqlite3_open"
            case .rejected(let code): "sqlite3_config(SQLITE_CONFIG_PCACHE2) failed with \(code)"
            }
        }
    }

    /// What the page cache did since it was installed, over every cache
    /// instance (SQLite makes one per open database connection).
    public struct Statistics: Sendable, Equatable, CustomStringConvertible {
        /// `xFetch` calls that found their page and handed it out intact.
        public var hits: Int
        /// Fresh pages handed out (the page was not cached, or was dropped
        /// because it had been purged): SQLite fills them from the file.
        public var pagesCreated: Int
        /// Unpinned pages found purged when SQLite asked for them again:
        /// dropped, and read from the file again (part of `pagesCreated`
        /// when SQLite asked for a fresh page then).
        public var purgedRefetches: Int
        /// Times a page became pinned (an `xFetch` of a page that was not
        /// pinned, or of a new one).
        public var pins: Int
        /// `xUnpin` calls (a page becomes purgeable, or is freed with
        /// `discard`).
        public var unpins: Int
        /// Pages freed: discarded, truncated, beyond the cache size, purged,
        /// or with their cache.
        public var pagesFreed: Int
        /// Pages cached now (pinned and unpinned), and of those pinned now.
        public var pagesCached: Int
        public var pagesPinnedNow: Int

        /// Hits over all page requests that returned a page: the share of
        /// pages SQLite did not have to read from the file.
        public var hitRate: Double {
            let all = hits + pagesCreated
            return all == 0 ? 0 : Double(hits) / Double(all)
        }

        public var description: String {
            let rate = (hitRate * 1000).rounded() / 10
            return "hits \(hits), pages created \(pagesCreated), purged and re-read \(purgedRefetches), "
                + "hit rate \(rate) %, unpins \(unpins), freed \(pagesFreed), cached now \(pagesCached) "
                + "(\(pagesPinnedNow) pinned)"
        }
    }

    /// Installs the purgeable page cache for every database this process
    /// opens from now on, and registers `allocator` with `purger` when one is
    /// given (it is held weakly there: the page cache keeps the allocator
    /// alive for the life of the process).
    ///
    /// Call it once, before SQLite initialises (before `sqlite3_initialize`
    /// or the first `sqlite3_open`), and after any `sqlite3_config` of the
    /// threading mode. SQLite's serialized and multi-thread modes are both
    /// supported (every cache instance has a lock of its own).
    ///
    /// - Parameters:
    ///   - allocator: where the pages live. Its `purgePriority` is the class
    ///     a purger sees for unpinned pages.
    ///   - purger: the purger that may discard unpinned pages (on memory
    ///     pressure, for a budget, on request).
    /// - Throws: `.alreadyInstalled` on a second call;
    ///   `.sqliteAlreadyInitialized` when SQLite is initialised already;
    ///   `.rejected` for any other refusal of `sqlite3_config`. Nothing is
    ///   installed or registered then.
    ///
    /// Maps to `sqlite3_config(SQLITE_CONFIG_PCACHE2, &methods)`.
    public static func install(allocator: VolatileAllocator, purger: Purger? = nil) throws(InstallError) {
        try installation.withLock { (installed: inout VolatileAllocator?) throws(InstallError) in
            if installed != nil { throw .alreadyInstalled }
            var methods = PageCacheMethods.table
            let rc = vrsqlite_config_pcache2(&methods)
            if rc == SQLITE_MISUSE { throw .sqliteAlreadyInitialized }
            if rc != SQLITE_OK { throw .rejected(code: rc) }
            installed = allocator
            PageCacheMethods.allocator.withLock { $0 = allocator }
        }
        purger?.register(allocator)
    }

    /// Whether `install` succeeded in this process.
    public static var isInstalled: Bool { installation.withLock { $0 != nil } }

    /// The allocator the installed page cache uses, nil before `install`.
    public static var allocator: VolatileAllocator? { installation.withLock { $0 } }

    /// A snapshot of the counters (each cache instance's read under its
    /// lock, one after the other).
    public static var statistics: Statistics { PageCacheRegistry.snapshot() }

    /// What one cached page costs in memory with this cache, in bytes: the
    /// page's own OS pages, plus its block of ordinary memory (SQLite's
    /// `sqlite3_pcache_page`, this cache's bookkeeping, SQLite's `szExtra`
    /// bytes, rounded as glibc's malloc rounds), plus its hash-table entry.
    /// Freed pages kept for reuse and the allocator's metadata (8 bytes per
    /// OS page of its segments) come on top.
    public static func bytesPerCachedPage(pageSize: Int, extraSize: Int) -> Int {
        let os = osPageSize
        let data = pageSize >= os ? (pageSize + os - 1) / os * os : pageSize
        return data + mallocChunk(PageLayout(extraSize: extraSize).blockBytes) + PageCache.tableBytesPerPage
    }

    /// The `szExtra` SQLite asked for when it last made a cache instance (0
    /// before the first): what its per-page extra is in this build of SQLite.
    package static var lastExtraSize: Int { PageCacheMethods.lastExtraSize.load(ordering: .relaxed) }

    /// The one installation of this process: the allocator, once installed.
    private static let installation = Mutex<VolatileAllocator?>(nil)

    /// The test-only mutation of the tests' "purged pages are caught" check:
    /// when set, a fetch ignores what the lock of an unpinned page reports,
    /// and serves a purged page (zeros) as if intact. Never set it outside
    /// those tests.
    package static var servesPurgedPagesForTesting: Bool {
        get { PageCacheMethods.ignoresPurges.load(ordering: .relaxed) }
        set { PageCacheMethods.ignoresPurges.store(newValue, ordering: .relaxed) }
    }
}

/// The bytes glibc's malloc takes for a request of `n` bytes: chunks are
/// multiples of 16 with an 8-byte header, at least 32.
func mallocChunk(_ n: Int) -> Int { max(32, (n + 8 + 15) & ~15) }

/// The OS page size.
let osPageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
