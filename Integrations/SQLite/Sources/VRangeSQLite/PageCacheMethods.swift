// sqlite3_pcache_methods2: the C callbacks SQLite calls, each a capture-less
// closure that finds its PageCache behind the sqlite3_pcache pointer (an
// unmanaged, retained reference made by xCreate, released by xDestroy).
import CSQLite
import Synchronization
import VRange

enum PageCacheMethods {
    /// The allocator new cache instances take their pages from (set once,
    /// by `PurgeablePageCache.install`).
    static let allocator = Mutex<VolatileAllocator?>(nil)
    /// `PurgeablePageCache.servesPurgedPagesForTesting`.
    static let ignoresPurges = Atomic<Bool>(false)
    /// The szExtra of the last cache made (what SQLite asks for per page).
    static let lastExtraSize = Atomic<Int>(0)

    /// Runs `body` on the instance behind `p`, without retaining it (xCreate's
    /// reference keeps it alive until xDestroy).
    @inline(__always)
    static func with<R>(_ p: OpaquePointer?, _ body: (PageCache) -> R) -> R {
        Unmanaged<PageCache>.fromOpaque(UnsafeRawPointer(p!))._withUnsafeGuaranteedRef(body)
    }

    /// The methods SQLite copies at `sqlite3_config`.
    static var table: sqlite3_pcache_methods2 {
        var m = sqlite3_pcache_methods2()
        m.iVersion = 1
        m.pArg = nil
        m.xInit = { _ in SQLITE_OK }
        m.xShutdown = { _ in }
        m.xCreate = { pageSize, extraSize, purgeable in
            // SQLite promises a power of two in 512...65536 and szExtra < 250.
            guard pageSize >= 512, pageSize <= 65536, pageSize & (pageSize - 1) == 0, extraSize >= 0,
                  let allocator = PageCacheMethods.allocator.withLock({ $0 }) else { return nil }
            PageCacheMethods.lastExtraSize.store(Int(extraSize), ordering: .relaxed)
            let cache = PageCache(pageSize: Int(pageSize), extraSize: Int(extraSize), purgeable: purgeable != 0,
                                  allocator: allocator)
            return OpaquePointer(Unmanaged.passRetained(cache).toOpaque())
        }
        m.xCachesize = { p, n in PageCacheMethods.with(p) { $0.setCacheSize(n) } }
        m.xPagecount = { p in PageCacheMethods.with(p) { $0.pageCount() } }
        m.xFetch = { p, key, createFlag in PageCacheMethods.with(p) { $0.fetch(key, createFlag) } }
        m.xUnpin = { p, page, discard in PageCacheMethods.with(p) { $0.unpin(page!, discard: discard != 0) } }
        m.xRekey = { p, page, oldKey, newKey in PageCacheMethods.with(p) { $0.rekey(page!, from: oldKey, to: newKey) } }
        m.xTruncate = { p, limit in PageCacheMethods.with(p) { $0.truncate(limit) } }
        m.xDestroy = { p in
            guard let p else { return }
            let cache = Unmanaged<PageCache>.fromOpaque(UnsafeRawPointer(p))
            cache.takeUnretainedValue().removeAll()
            cache.release()
        }
        m.xShrink = { p in PageCacheMethods.with(p) { $0.shrink() } }
        return m
    }
}
