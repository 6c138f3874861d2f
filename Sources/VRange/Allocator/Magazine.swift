// A handful of page spans freed while locked, kept hot outside the free
// lists and handed back by exact page count with one CAS: allocate/free
// churn of one size takes no lock and no system call (like a tcache). The
// spans still count as allocated in their segment (so it is never dropped
// under them); the release scan and purge-unit snapshots drain the magazine
// into the free lists, so this memory is never out of a purger's reach.
import CVRange
import Synchronization

struct Magazine: @unchecked Sendable {
    static let slots = 4
    /// Largest span kept: 4 MiB of 4 KiB pages.
    static let maxPages = 1024
    /// Segment slots addressable from the lock-free table.
    static let tableCapacity = 1024

    /// Entries: segment slot << 54 | first page << 22 | pages; 0 = empty.
    /// Word `closedWord` (same cache line) is 1 once the arena is abandoned;
    /// word `releaseWord` is 1 while the arena is on the release clock's
    /// schedule (ReleaseClock).
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    static let closedWord = 7
    static let releaseWord = 6
    /// Segment slot -> segment, readable without the arena's lock. Written
    /// under the lock when a segment is added or dropped; a segment with an
    /// entry here is never dropped (its spans count as live).
    let table: UnsafeMutablePointer<Unmanaged<Segment>?>

    init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        raw.initializeMemory(as: UInt64.self, repeating: 0, count: 8)
        words = raw.assumingMemoryBound(to: Atomic<UInt64>.self)
        table = .allocate(capacity: Self.tableCapacity)
        table.initialize(repeating: nil, count: Self.tableCapacity)
    }

    func deallocate() {
        UnsafeMutableRawPointer(words).deallocate()
        table.deallocate()
    }

    @inline(__always)
    static func entry(_ local: Int, _ page: Int, _ pages: Int) -> UInt64 {
        UInt64(local) << 54 | UInt64(page) << 22 | UInt64(pages)
    }

    /// Keeps span [page, page + pages) of segment slot `local`; false when
    /// full or the span does not qualify.
    /// Nothing is kept once the magazine is closed (its arena abandoned):
    /// a span put while `close()` runs is taken back, or drained by it.
    @inline(__always)
    func put(local: Int, page: Int, pages: Int) -> Bool {
        guard pages <= Self.maxPages, local < Self.tableCapacity, page < 1 << 32 else { return false }
        let e = Self.entry(local, page, pages)
        for i in 0..<Self.slots where words[i].load(ordering: .relaxed) == 0 {
            if words[i].compareExchange(expected: 0, desired: e, ordering: .sequentiallyConsistent).exchanged {
                // Store-then-check against close()'s store-then-drain: one
                // of the two sees the other.
                if words[Self.closedWord].load(ordering: .sequentiallyConsistent) != 0 {
                    // Take it back unless the drain already has it.
                    return !words[i].compareExchange(expected: e, desired: 0, ordering: .sequentiallyConsistent).exchanged
                }
                return true
            }
        }
        return false
    }

    /// Closes the magazine: no span is kept from now on.
    func close() {
        words[Self.closedWord].store(1, ordering: .sequentiallyConsistent)
    }

    /// Takes a span of exactly `pages` pages; its segment (unretained:
    /// the segment stays while the span is live) and first page.
    @inline(__always)
    func take(pages: Int) -> (Unmanaged<Segment>, Int)? {
        guard pages <= Self.maxPages else { return nil }
        for i in 0..<Self.slots {
            let e = words[i].load(ordering: .relaxed)
            if e != 0 && Int(e & 0x3F_FFFF) == pages
                && words[i].compareExchange(expected: e, desired: 0, ordering: .acquiringAndReleasing).exchanged {
                return (table[Int(e >> 54)]!, Int((e >> 22) & 0xFFFF_FFFF))
            }
        }
        return nil
    }

    /// Spans and bytes held (for statistics, under the arena's lock). Each
    /// span counts once: one taken from a slot after it was read and put
    /// back in a later slot (lock-free, while this reads) is the same entry
    /// (no other span of its arena can overlap it: that needs the lock).
    func census(pageShift: Int) -> (spans: Int, bytes: Int) {
        var n = 0, b = 0
        var seen: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for i in 0..<Self.slots {
            let e = words[i].load(ordering: .relaxed)
            TestHook.fire(Int32(VR_HOOK_ALLOC_MAGAZINE_CENSUS), i)
            if e == 0 || e == seen.0 || e == seen.1 || e == seen.2 || e == seen.3 { continue }
            switch i { case 0: seen.0 = e case 1: seen.1 = e case 2: seen.2 = e default: seen.3 = e }
            n += 1
            b += Int(e & 0x3F_FFFF) << pageShift
        }
        return (n, b)
    }

    /// Empties the magazine, calling `body(local, page, pages)` per span.
    func drain(_ body: (Int, Int, Int) -> Void) {
        for i in 0..<Self.slots {
            let e = words[i].exchange(0, ordering: .sequentiallyConsistent)
            if e != 0 { body(Int(e >> 54), Int((e >> 22) & 0xFFFF_FFFF), Int(e & 0x3F_FFFF)) }
        }
    }
}
