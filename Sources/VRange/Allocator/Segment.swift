// One segment of an allocator: a region carved into page spans, plus the
// per-page bookkeeping that lives outside it (its pages may be purged, so no
// metadata is ever stored in them). Owned by one arena.
import CVRange
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

final class Segment: @unchecked Sendable {
    let backing: SegmentBacking
    let base: UnsafeMutableRawPointer
    let pageCount: Int
    let pageShift: Int
    /// The arena whose lock guards `tags`, `localIndex` and `liveBuffers`.
    /// Strong: an abandoned arena lives as long as a buffer in one of its
    /// segments (see `Arena.abandon`).
    let arena: Arena
    /// Index in the arena's segment table (under the arena's lock).
    var localIndex: Int = 0
    /// Buffers allocated in this segment and not freed (under the arena's lock).
    var liveBuffers = 0
    /// Page-span buffers whose `beginContentAccess` found bytes purged, by
    /// first page: the ranges lost (relative to the buffer), which their
    /// next `lock()` reports (under the arena's lock; rare, hence not in the
    /// buffer itself, which stays four words).
    var lostAtBegin: [Int: [Range<Int>]] = [:]
    /// Whether this segment was made for one oversized buffer.
    let dedicated: Bool
    /// Its arena's magazine (two pointers: reachable without retaining the
    /// arena, for the lock-free free path).
    let magazine: Magazine
    /// Its allocator's thread-cache token (0: no thread caches).
    let cacheToken: UInt64

    /// Arena-locked span tags, one per page.
    let tags: UnsafeMutablePointer<PageTag>
    /// Slab pages: the lock-free page word (`SlabWord`).
    let pageWords: UnsafeMutablePointer<Atomic<UInt64>>
    /// RecencyClock stamp of the last unlock (large: at the span's first
    /// page; slab: per page) or of the free (free spans).
    let stamps: UnsafeMutablePointer<Atomic<UInt64>>

    #if DEBUG
    /// Test-only interleaving hook (debug builds): runs inside a first
    /// lock's transition, after the region found the page purged and
    /// zero-filled it, before the lost bits are published.
    nonisolated(unsafe) var afterRepopulateHook: (@Sendable () -> Void)?
    #endif

    init(arena: Arena, source: SegmentSource, byteCount: Int, dedicated: Bool) throws(VRangeError) {
        let backing = try SegmentBacking(source: source, byteCount: byteCount)
        self.backing = backing
        self.base = backing.baseAddress
        self.pageShift = Kernel.pageSize.trailingZeroBitCount
        self.pageCount = backing.size >> pageShift
        self.arena = arena
        self.magazine = arena.magazine
        self.cacheToken = arena.config.cacheToken
        self.dedicated = dedicated
        // Bookkeeping in its own anonymous mapping, zero-filled by the
        // kernel (a zero PageTag is an interior page, a zero word an empty
        // slab page): only the pages of it that spans touch become
        // resident, so a large segment costs no eager metadata (a 8 TiB
        // buffer once asked malloc for 64 GiB of tags and aborted).
        let tagBytes = (pageCount * MemoryLayout<PageTag>.stride + 63) & ~63
        let metadataSize = tagBytes + 16 * pageCount
        let raw = mmap(nil, metadataSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let raw, raw != MAP_FAILED else {
            let e = errno
            backing.close()
            throw .system(SystemError(call: "mmap", errno: e))
        }
        metadataBytes = metadataSize
        tags = raw.bindMemory(to: PageTag.self, capacity: pageCount)
        let words = raw + tagBytes
        pageWords = words.assumingMemoryBound(to: Atomic<UInt64>.self)
        stamps = (words + 8 * pageCount).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(tags), metadataBytes)
        backing.close()
    }

    /// Size of the bookkeeping mapping (tags, page words, stamps).
    private let metadataBytes: Int

    /// Bytes of bookkeeping per page, outside the region (the region's own
    /// volatility map comes on top: 2 bits a page).
    static let metadataBytesPerPage = MemoryLayout<PageTag>.stride + 16

    @inline(__always)
    func bytes(pages first: Int, _ count: Int) -> Range<Int> {
        (first << pageShift)..<((first + count) << pageShift)
    }

    @inline(__always)
    func stamp(page: Int) {
        let now = RecencyClock.now
        if stamps[page].load(ordering: .relaxed) != now { stamps[page].store(now, ordering: .relaxed) }
    }

    // MARK: - Slab pages: lock-free sharing of one page by several buffers

    /// Spins briefly, then yields, while a page word is busy. A busy bit set
    /// before a fork (its owner does not exist here) is taken over and its
    /// transition finished.
    @inline(__always)
    private func waitWhileBusy(_ page: Int, spins: inout Int) -> UInt64 {
        spins += 1
        if spins > 64 {
            let w = pageWords[page].load(ordering: .acquiring)
            if w & SlabWord.busy != 0 && SlabWord.isStale(w) { recoverStaleBusy(page: page, w) }
            Kernel.yield()
        }
        return pageWords[page].load(ordering: .acquiring)
    }

    /// In a fork child: page word `w` was made busy by a thread of the parent
    /// that was in the middle of a first lock or a last unlock. One waiter
    /// takes the transition over (a CAS to a busy word of this generation)
    /// and finishes it as its owner would have: the owner's buffer, if this
    /// process still reaches it, is locked (first lock: counted, the page
    /// non-volatile, every lost bit kept for its slot to learn) or unlocked
    /// (last unlock: the page volatile).
    @inline(never)
    private func recoverStaleBusy(page: Int, _ w: UInt64) {
        let word = pageWords + page
        guard word.pointee.compareExchange(expected: w, desired: SlabWord.busyWord(w),
                                           ordering: .acquiringAndReleasing).exchanged else { return }
        if w & SlabWord.volatile != 0 {
            var lost = w & SlabWord.lostMask
            if backing.markNonVolatile(bytes(pages: page, 1)).wasPurged { lost = SlabWord.lostMask }
            word.pointee.store(lost | SlabWord.countOne, ordering: .releasing)
        } else {
            stamp(page: page)
            backing.markVolatile(bytes(pages: page, 1))
            word.pointee.store((w & SlabWord.lostMask) | SlabWord.volatile, ordering: .releasing)
        }
    }

    /// Slot `slot` of slab page `page` becomes locked: the page is marked
    /// non-volatile if it was volatile. Returns whether the slot's contents
    /// were lost (purged) since it was last locked; clears that bit.
    func lockSlot(page: Int, slot: Int) -> Bool {
        let word = pageWords + page
        let bit: UInt64 = 1 << UInt64(slot)
        var w = word.pointee.load(ordering: .acquiring)
        var spins = 0
        while true {
            if w & SlabWord.busy != 0 { w = waitWhileBusy(page, spins: &spins); continue }
            if w & SlabWord.countMask != 0 || w & SlabWord.volatile == 0 {
                // The page is non-volatile (a neighbour holds it, or nobody
                // unlocked it yet): count ourselves in, take our lost bit.
                precondition(SlabWord.count(w) < 32, "VRange: slab page count overflow")
                let (done, seen) = word.pointee.compareExchange(
                    expected: w, desired: (w &+ SlabWord.countOne) & ~bit, ordering: .acquiringAndReleasing)
                if done { return w & bit != 0 }
                w = seen
                continue
            }
            // First lock on a volatile page: hold it busy while the region
            // marks it non-volatile, so no unlock can re-mark it meanwhile.
            let (done, seen) = word.pointee.compareExchange(
                expected: w, desired: SlabWord.busyWord(w), ordering: .acquiringAndReleasing)
            if !done { w = seen; continue }
            TestHook.fire(Int32(VR_HOOK_ALLOC_SLAB_BUSY), 1)
            var lost = w & SlabWord.lostMask
            if backing.markNonVolatile(bytes(pages: page, 1)).wasPurged {
                // Everyone on the page lost their contents; each learns at
                // its next lock (a free slot's bit is cleared when allocated).
                lost = SlabWord.lostMask
                #if DEBUG
                afterRepopulateHook?()
                #endif
            }
            word.pointee.store((lost & ~bit) | SlabWord.countOne, ordering: .releasing)
            return lost & bit != 0
        }
    }

    /// A locked slot of page `page` is unlocked (or freed while locked): the
    /// page becomes volatile when no slot on it is locked any more.
    func unlockSlot(page: Int) {
        let word = pageWords + page
        var w = word.pointee.load(ordering: .acquiring)
        var spins = 0
        while true {
            if w & SlabWord.busy != 0 { w = waitWhileBusy(page, spins: &spins); continue }
            precondition(SlabWord.count(w) > 0, "VRange: slab page unlocked more often than locked")
            if SlabWord.count(w) > 1 {
                let (done, seen) = word.pointee.compareExchange(
                    expected: w, desired: w &- SlabWord.countOne, ordering: .acquiringAndReleasing)
                if done { return }
                w = seen
                continue
            }
            let (done, seen) = word.pointee.compareExchange(
                expected: w, desired: SlabWord.busyWord(w &- SlabWord.countOne), ordering: .acquiringAndReleasing)
            if !done { w = seen; continue }
            TestHook.fire(Int32(VR_HOOK_ALLOC_SLAB_BUSY), 2)
            stamp(page: page)
            backing.markVolatile(bytes(pages: page, 1))
            word.pointee.store(((w &- SlabWord.countOne) & ~SlabWord.generationMask) | SlabWord.volatile,
                               ordering: .releasing)
            return
        }
    }

    /// Whether slot `slot` of page `page` is known to have lost its contents
    /// (without clearing the bit). Waits out a transition in flight: a first
    /// locker that found the page purged has already zero-filled it (and
    /// made it non-volatile) before it publishes the lost bits, so a reader
    /// that saw the zeros must not read the bits before they are published.
    func slotLost(page: Int, slot: Int, settled: Bool = true) -> Bool {
        var w = pageWords[page].load(ordering: .acquiring)
        var spins = 0
        while settled && w & SlabWord.busy != 0 { w = waitWhileBusy(page, spins: &spins) }
        return w & (1 << UInt64(slot)) != 0
    }
}
