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

    @inline(__always)
    static func cache(_ p: OpaquePointer?) -> PageCache {
        Unmanaged<PageCache>.fromOpaque(UnsafeRawPointer(p!)).takeUnretainedValue()
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
        m.xCachesize = { p, n in PageCacheMethods.cache(p).setCacheSize(n) }
        m.xPagecount = { p in PageCacheMethods.cache(p).pageCount() }
        m.xFetch = { p, key, createFlag in PageCacheMethods.cache(p).fetch(key, createFlag) }
        m.xUnpin = { p, page, discard in PageCacheMethods.cache(p).unpin(page!, discard: discard != 0) }
        m.xRekey = { p, page, oldKey, newKey in PageCacheMethods.cache(p).rekey(page!, from: oldKey, to: newKey) }
        m.xTruncate = { p, limit in PageCacheMethods.cache(p).truncate(limit) }
        m.xDestroy = { p in
            guard let p else { return }
            let cache = Unmanaged<PageCache>.fromOpaque(UnsafeRawPointer(p))
            cache.takeUnretainedValue().removeAll()
            cache.release()
        }
        m.xShrink = { p in PageCacheMethods.cache(p).shrink() }
        return m
    }
}
