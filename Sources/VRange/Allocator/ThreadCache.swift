// The allocator's per-thread caches of freed page spans (vr_tcache.h): a
// span of at most `maxPages` pages freed while locked is kept by the freeing
// thread, and that thread's next allocation of the same size from the same
// allocator takes it back with plain loads and stores: no lock, no atomic
// read-modify-write, no fence. What the caches hold stays within a purger's
// reach: a drain (purge-unit snapshots, `releaseFreeMemory`, the periodic
// release scan, the allocator's deinit) takes every cached span of an
// allocator out of every thread's cache with one membarrier. A thread's
// cache is emptied when the thread exits. Where membarrier is unavailable
// there are no caches and the magazines (one CAS each way) serve alone.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

enum ThreadCache {
    /// Largest span kept: 64 pages (256 KiB of 4 KiB pages). Larger spans
    /// cost their page writes many times what a CAS costs.
    static let maxPages = 64

    /// Allocator tokens: never reused, so that an entry can never be taken
    /// by an allocator made later at the same address.
    private static let tokens = Atomic<UInt64>(1)
    static func newToken() -> UInt64 { tokens.add(1, ordering: .relaxed).oldValue }

    /// A key whose destructor empties an exiting thread's cache.
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, { _ in ThreadCache.retire() })
        precondition(rc == 0, "VRange: pthread_key_create failed (\(rc))")
        return key
    }()

    /// Takes a cached span of `pages` pages of allocator `token`.
    @inline(__always)
    static func take(token: UInt64, pages: Int) -> (Unmanaged<Segment>, Int)? {
        guard let c = vr_tcache_self(), vr_tcache_enter(c, token) != 0 else { return nil }
        TestHook.fire(Int32(VR_HOOK_TCACHE_INSIDE), 1)
        var segment: UInt = 0
        var page: UInt64 = 0
        let hit = vr_tcache_take(c, token, UInt64(pages), &segment, &page) != 0
        vr_tcache_leave(c)
        guard hit else { return nil }
        return (Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: segment)!), Int(page))
    }

    /// Keeps span [page, page + pages) of `seg`, locked, in this thread's
    /// cache; false when it is not kept (no cache, a drain in progress, or
    /// the allocator is closing). A span it replaces is freed here.
    @inline(__always)
    static func put(_ seg: Segment, page: Int, pages: Int) -> Bool {
        guard let c = vr_tcache_self() ?? create(), vr_tcache_enter(c, seg.cacheToken) != 0 else { return false }
        TestHook.fire(Int32(VR_HOOK_TCACHE_INSIDE), 2)
        var oldToken: UInt64 = 0
        var oldSegment: UInt = 0
        var oldSpan: UInt64 = 0
        let closed = UnsafeRawPointer(seg.magazine.words + Magazine.closedWord).assumingMemoryBound(to: UInt64.self)
        let r = vr_tcache_put(c, seg.cacheToken, UInt(bitPattern: Unmanaged.passUnretained(seg).toOpaque()),
                              UInt64(page) << 16 | UInt64(pages), closed, &oldToken, &oldSegment, &oldSpan)
        vr_tcache_leave(c)
        if r == 2 { freeEntry(segment: oldSegment, span: oldSpan) }
        return r != 0
    }

    @inline(never)
    private static func create() -> UnsafeMutablePointer<vr_tcache>? {
        guard let c = vr_tcache_create() else { return nil }
        _ = pthread_setspecific(key, UnsafeRawPointer(c))
        return c
    }

    /// Frees a span taken out of a cache: it goes back to its arena as a
    /// free of a locked span (the magazine, else the free lists).
    static func freeEntry(segment: UInt, span: UInt64) {
        let seg = Unmanaged<Segment>.fromOpaque(UnsafeRawPointer(bitPattern: segment)!)
        let page = Int(span >> 16), pages = Int(span & 0xFFFF)
        seg._withUnsafeGuaranteedRef { seg in
            if seg.magazine.put(local: seg.localIndex, page: page, pages: pages) {
                seg.arena.noteFree()
                return
            }
            seg.arena.freeSpan(seg, page: page, pages: pages, wasLocked: true)
        }
    }

    /// Collects entries handed over by a drain (under the registry lock: no
    /// allocator lock may be taken there, so they are freed afterwards).
    private final class Collected {
        var entries: [(UInt, UInt64)] = []
    }

    private static let sink: vr_tcache_sink = { context, _, segment, span in
        Unmanaged<Collected>.fromOpaque(context!).takeUnretainedValue().entries.append((segment, span))
    }

    /// Takes every span of allocator `token` out of every thread's cache and
    /// frees it to its arena. `closing`: the allocator's magazines are closed
    /// (its deinit), and no put may slip past; a release round passes it
    /// too, for its first barrier (a put that did not see the arena's
    /// release word cleared is then visible to the drain). Must not be called with an
    /// arena lock held. Token 0 (an allocator without caches) drains nothing.
    static func drain(token: UInt64, closing: Bool = false) {
        guard token != 0 else { return }
        let collected = Collected()
        let rc = withExtendedLifetime(collected) {
            vr_tcache_drain(token, closing ? 1 : 0, sink, Unmanaged.passUnretained(collected).toOpaque())
        }
        // Caches exist only where membarrier was registered, and the drain
        // falls back to the global command: a failure is not expected. If
        // one comes, nothing was taken: the cached spans stay where they
        // are, counted as live in their segments (kept, never corrupted),
        // and the next drain tries again.
        if rc != 0 { return }
        for (segment, span) in collected.entries { freeEntry(segment: segment, span: span) }
    }

    /// The exiting thread's cache: its spans go back to their arenas.
    private static func retire() {
        let collected = Collected()
        withExtendedLifetime(collected) {
            vr_tcache_retire(sink, Unmanaged.passUnretained(collected).toOpaque())
        }
        for (segment, span) in collected.entries { freeEntry(segment: segment, span: span) }
    }

    /// Spans and pages of allocator `token` cached now (a snapshot).
    static func census(token: UInt64) -> (spans: Int, pages: Int) {
        let c = Census(token: token)
        return (c.spans, c.pages)
    }

    /// A count of allocator `token`'s cached spans that can be checked later:
    /// `unchanged` says whether no cached span moved since (vr_tcache_census).
    struct Census {
        var spans = 0, pages = 0
        /// False when an owner was inside its fast path: the count may be torn.
        var consistent = true
        private var ticket: (UInt64, UInt64) = (0, 0)

        init(token: UInt64) {
            guard token != 0 else { return }
            var n: UInt64 = 0, p: UInt64 = 0
            var t: [UInt64] = [0, 0]
            consistent = vr_tcache_census(token, &n, &p, &t) != 0
            spans = Int(n)
            pages = Int(p)
            ticket = (t[0], t[1])
        }

        /// Whether every cache is as it was at the census (and the census
        /// was consistent).
        var unchanged: Bool {
            guard consistent else { return false }
            let t = [ticket.0, ticket.1]
            return vr_tcache_unchanged(t) != 0
        }
    }
}
