// The volatility map: two bits of state per page, 32 pages per 64-bit word,
// over raw memory that the caller owns (private memory today, a shared
// sidecar later). Pure logic: no syscalls, no allocation. Every operation on
// a word is one compare-and-swap, so a range costs one CAS per 32 pages.
//
// Encoding (must match CVRange.h): 00 non-volatile, 01 volatile,
// 10 purging (locked by a purge in flight), 11 purged.
//
// Transitions and who makes them:
//   markVolatile      00 -> 01            (others unchanged)
//   markNonVolatile   01 -> 00, 11 -> 00  (waits while any page is 10)
//   lockedRuns        some states -> 10 [-> work on the run] -> final state:
//     purge:                      01 (and 11) -> 10 -> discard -> 11
//     kernel-driven markVolatile: 00, 01      -> 10 -> MADV_FREE -> 01
//     kernel-driven unmark:       01 -> 10 -> dirty (cancel MADV_FREE) -> 00
// A page in 00 is therefore never discarded: a purge must win the CAS from 01
// first, and markNonVolatile cannot pass a page while it is 10.
import Synchronization

struct VolatilityMap: @unchecked Sendable {
    static let pagesPerWord = 32
    /// The low bit of every page's two-bit field.
    static let lowBits: UInt64 = 0x5555_5555_5555_5555

    let words: UnsafeMutablePointer<Atomic<UInt64>>
    let pageCount: Int

    /// Words needed for `pageCount` pages.
    static func wordCount(pages pageCount: Int) -> Int {
        (pageCount + pagesPerWord - 1) / pagesPerWord
    }

    /// Bytes needed for `pageCount` pages.
    static func byteCount(pages pageCount: Int) -> Int {
        wordCount(pages: pageCount) * MemoryLayout<UInt64>.stride
    }

    /// A map over `memory`, which must hold `byteCount(pages:)` bytes, be
    /// 8-byte aligned and start zeroed (every page non-volatile) or hold a
    /// map written by this code.
    init(memory: UnsafeMutableRawPointer, pageCount: Int) {
        self.words = memory.assumingMemoryBound(to: Atomic<UInt64>.self)
        self.pageCount = pageCount
    }

    /// The raw words, for the C fault handler.
    var rawWords: UnsafePointer<UInt64> {
        UnsafeRawPointer(words).assumingMemoryBound(to: UInt64.self)
    }

    // MARK: - Masks

    /// Low bits of the pages of `pages` that fall in word `w`.
    @inline(__always)
    static func lowMask(word w: Int, pages: Range<Int>) -> UInt64 {
        let first = w * pagesPerWord
        let lo = max(pages.lowerBound, first) - first
        let hi = min(pages.upperBound, first + pagesPerWord) - first
        let span = hi - lo
        let m = span == pagesPerWord ? lowBits : ((1 &<< UInt64(2 * span)) &- 1) & lowBits
        return m &<< UInt64(2 * lo)
    }

    @inline(__always)
    static func wordsCovering(_ pages: Range<Int>) -> ClosedRange<Int> {
        (pages.lowerBound / pagesPerWord)...((pages.upperBound - 1) / pagesPerWord)
    }

    /// Low bits of the pages of `word` whose state is `state`.
    @inline(__always)
    static func pages(in word: UInt64, _ state: PageState) -> UInt64 {
        let low = word & lowBits
        let high = (word >> 1) & lowBits
        switch state {
        case .nonVolatile: return ~low & ~high & lowBits
        case .volatile: return low & ~high
        case .purging: return ~low & high & lowBits
        case .purged: return low & high
        }
    }

    /// Calls `body(firstPage, count)` for each run of set low bits in `mask`
    /// of word `w`, in ascending order.
    @inline(__always)
    static func forEachRun(in mask: UInt64, word w: Int, _ body: (Int, Int) -> Void) {
        var m = mask
        while m != 0 {
            let shift = m.trailingZeroBitCount  // always even
            let rest = ~(m >> UInt64(shift)) & lowBits
            let count = rest == 0 ? (64 - shift) / 2 : rest.trailingZeroBitCount / 2
            body(w * pagesPerWord + shift / 2, count)
            let end = shift + 2 * count
            m = end >= 64 ? 0 : m & ~((1 &<< UInt64(end)) &- 1)
        }
    }

    // MARK: - Queries

    /// The state of one page.
    func state(ofPage page: Int) -> PageState {
        let word = words[page / Self.pagesPerWord].load(ordering: .acquiring)
        return PageState(rawValue: UInt8((word >> UInt64(2 * (page % Self.pagesPerWord))) & 3))!
    }

    /// How many pages of `pages` are in each state.
    func census(_ pages: Range<Int>) -> (volatile: Int, purging: Int, purged: Int) {
        var v = 0, l = 0, p = 0
        if pages.isEmpty { return (0, 0, 0) }
        for w in Self.wordsCovering(pages) {
            let word = words[w].load(ordering: .acquiring)
            let m = Self.lowMask(word: w, pages: pages)
            v += (Self.pages(in: word, .volatile) & m).nonzeroBitCount
            l += (Self.pages(in: word, .purging) & m).nonzeroBitCount
            p += (Self.pages(in: word, .purged) & m).nonzeroBitCount
        }
        return (v, l, p)
    }

    /// Whether any page of `pages` is purged or being purged (its high bit set).
    func anyDiscarded(in pages: Range<Int>) -> Bool {
        if pages.isEmpty { return false }
        for w in Self.wordsCovering(pages) {
            let word = words[w].load(ordering: .acquiring)
            if (word >> 1) & Self.lowMask(word: w, pages: pages) != 0 { return true }
        }
        return false
    }

    /// Calls `body` with each maximal run of pages of `pages` in `state`
    /// (a snapshot: pages may change state meanwhile).
    func forEachRun(of state: PageState, in pages: Range<Int>, _ body: (Range<Int>) -> Void) {
        if pages.isEmpty { return }
        var runs = RunCoalescer()
        for w in Self.wordsCovering(pages) {
            let word = words[w].load(ordering: .acquiring)
            Self.forEachRun(in: Self.pages(in: word, state) & Self.lowMask(word: w, pages: pages), word: w) {
                runs.add($0, $1, body)
            }
        }
        runs.flush(body)
    }

    // MARK: - Transitions

    /// Non-volatile pages of `pages` become volatile; volatile, purging and
    /// purged pages keep their state. Returns how many pages changed.
    @discardableResult
    @inline(__always)
    func markVolatile(_ pages: Range<Int>) -> Int {
        let w = pages.lowerBound / Self.pagesPerWord
        if (pages.upperBound - 1) / Self.pagesPerWord == w {
            // One word (the common case for small ranges): one load, one CAS.
            let m = Self.lowMask(word: w, pages: pages)
            var old = words[w].load(ordering: .relaxed)
            while true {
                let add = Self.pages(in: old, .nonVolatile) & m
                if add == 0 { return 0 }
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: old | add, ordering: .acquiringAndReleasing)
                if done { return add.nonzeroBitCount }
                old = seen
            }
        }
        var changed = 0
        for w in Self.wordsCovering(pages) {
            let m = Self.lowMask(word: w, pages: pages)
            var old = words[w].load(ordering: .relaxed)
            while true {
                let add = Self.pages(in: old, .nonVolatile) & m
                if add == 0 { break }
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: old | add, ordering: .acquiringAndReleasing)
                if done { changed += add.nonzeroBitCount; break }
                old = seen
            }
        }
        return changed
    }

    /// Every page of `pages` becomes non-volatile. Waits (calling `wait`)
    /// while another operation holds any of them, so a page is never
    /// discarded after this returns. Calls `purged` with each maximal run of
    /// pages that had been purged, in ascending order. Returns the number of
    /// purged pages.
    ///
    /// With `settleVolatile` (kernel-driven mode), volatile pages are locked in
    /// the same CAS instead of being released at once; `settle` is called with
    /// each run of them (to cancel their lazy free and find the ones the
    /// kernel reclaimed) and they become non-volatile afterwards. No page is
    /// ever non-volatile while it may still be lazily freed.
    @discardableResult
    func markNonVolatile(
        _ pages: Range<Int>, settleVolatile: Bool = false, wait: () -> Void,
        settle: (Range<Int>) -> Void = { _ in }, purged: (Range<Int>) -> Void
    ) -> Int {
        var count = 0
        var runs = RunCoalescer()
        var locked = LockedRuns(map: self, maxRun: Self.maxRun, release: .nonVolatile)
        for w in Self.wordsCovering(pages) {
            let m = Self.lowMask(word: w, pages: pages)
            var old = words[w].load(ordering: .acquiring)
            while true {
                if Self.pages(in: old, .purging) & m != 0 {
                    wait()
                    old = words[w].load(ordering: .acquiring)
                    continue
                }
                let lock = settleVolatile ? Self.pages(in: old, .volatile) & m : 0
                let clear = m & ~lock
                // Cleared fields -> 00; locked fields 01 -> 10.
                let desired = (old & ~(clear | clear << 1) & ~lock) | (lock << 1)
                if desired == old { break }
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: desired, ordering: .acquiringAndReleasing)
                if done {
                    let lost = Self.pages(in: old, .purged) & m
                    count += lost.nonzeroBitCount
                    Self.forEachRun(in: lost, word: w) { runs.add($0, $1, purged) }
                    Self.forEachRun(in: lock, word: w) { locked.add($0, $1, settle) }
                    break
                }
                old = seen
            }
        }
        locked.finish(settle)
        runs.flush(purged)
        return count
    }

    /// The fast path of `markNonVolatile` for a range within one word and no
    /// settling: returns the low bits of the pages that had been purged (the
    /// map has been updated), or nil, having changed nothing, when the range
    /// spans words or a page is held by an operation in flight.
    @inline(__always)
    func markNonVolatileInOneWord(_ pages: Range<Int>) -> UInt64? {
        let w = pages.lowerBound / Self.pagesPerWord
        guard (pages.upperBound - 1) / Self.pagesPerWord == w else { return nil }
        let m = Self.lowMask(word: w, pages: pages)
        let fields = m | m << 1
        var old = words[w].load(ordering: .acquiring)
        while true {
            if Self.pages(in: old, .purging) & m != 0 { return nil }
            if old & fields == 0 { return 0 }
            let (done, seen) = words[w].compareExchange(
                expected: old, desired: old & ~fields, ordering: .acquiringAndReleasing)
            if done { return Self.pages(in: old, .purged) & m }
            old = seen
        }
    }

    /// Longest run handed to one piece of work, so that an operation waiting
    /// on a locked page is not held up for long (64 MiB of 4 KiB pages).
    static let maxRun = 16384

    /// The per-page lock (DESIGN.md §2). In one CAS per word, locks (state
    /// 10) the pages of `pages` that `select` picks from each word (it gets
    /// the word and the range's low-bit mask and returns low bits within it);
    /// calls `work` with each maximal run of locked pages (at most `maxRun`);
    /// then moves the run to `release`. Pages locked by others are skipped.
    /// Returns the number of pages locked.
    @discardableResult
    func lockedRuns(
        in pages: Range<Int>, select: (UInt64, UInt64) -> UInt64,
        maxRun: Int = maxRun, release: LockRelease, _ work: (Range<Int>) -> Void
    ) -> Int {
        if pages.isEmpty { return 0 }
        var total = 0
        var locked = LockedRuns(map: self, maxRun: maxRun, release: release)
        for w in Self.wordsCovering(pages) {
            let m = Self.lowMask(word: w, pages: pages)
            var old = words[w].load(ordering: .relaxed)
            while true {
                let eligible = select(old, m) & m & ~Self.pages(in: old, .purging)
                if eligible == 0 { break }
                // Selected fields -> 10: clear the low bit, set the high bit.
                let desired = (old & ~eligible) | (eligible << 1)
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: desired, ordering: .acquiringAndReleasing)
                if done {
                    total += eligible.nonzeroBitCount
                    Self.forEachRun(in: eligible, word: w) { locked.add($0, $1, work) }
                    break
                }
                old = seen
            }
        }
        locked.finish(work)
        return total
    }

    /// The purge protocol: locks the volatile pages of `pages` (unless not
    /// `includeVolatile`) and the purged ones when `includePurged`, calls
    /// `discard` with each run, then marks it purged. Returns the number of
    /// pages discarded.
    @discardableResult
    func discardRuns(
        in pages: Range<Int>, includePurged: Bool = false, includeVolatile: Bool = true,
        maxRun: Int = maxRun, _ discard: (Range<Int>) -> Void
    ) -> Int {
        lockedRuns(in: pages, select: { word, m in
            (includeVolatile ? Self.pages(in: word, .volatile) : 0)
                | (includePurged ? Self.pages(in: word, .purged) : 0)
        }, maxRun: maxRun, release: .purged, discard)
    }

    /// Releases a run of pages this thread holds locked (state 10).
    @inline(__always)
    func release(_ run: Range<Int>, to final: LockRelease) {
        for w in Self.wordsCovering(run) {
            let m = Self.lowMask(word: w, pages: run)
            switch final {
            case .purged: words[w].bitwiseOr(m, ordering: .releasing)  // 10 -> 11
            case .volatile: words[w].bitwiseXor(m | m << 1, ordering: .releasing)  // 10 -> 01
            case .nonVolatile: words[w].bitwiseAnd(~(m << 1), ordering: .releasing)  // 10 -> 00
            }
        }
    }
}

/// The state a locked run ends in.
enum LockRelease {
    case purged, volatile, nonVolatile
}

/// Collects pages locked word by word into maximal runs of at most `maxRun`
/// pages; each finished run is handed to the work, then released.
struct LockedRuns {
    let map: VolatilityMap
    let release: LockRelease
    private var runs: RunCoalescer

    init(map: VolatilityMap, maxRun: Int, release: LockRelease) {
        self.map = map
        self.release = release
        self.runs = RunCoalescer(maxRun: maxRun)
    }

    @inline(__always)
    mutating func add(_ first: Int, _ count: Int, _ work: (Range<Int>) -> Void) {
        let (map, release) = (map, release)
        runs.add(first, count) { run in
            work(run)
            map.release(run, to: release)
        }
    }

    @inline(__always)
    mutating func finish(_ work: (Range<Int>) -> Void) {
        let (map, release) = (map, release)
        runs.flush { run in
            work(run)
            map.release(run, to: release)
        }
    }
}

/// Joins runs reported word by word into maximal runs (of at most `maxRun`
/// pages), handing each to `body` once it can grow no more.
struct RunCoalescer {
    private let maxRun: Int
    private var start = 0
    private var end = 0

    init(maxRun: Int = .max) { self.maxRun = maxRun }

    @inline(__always)
    mutating func add(_ first: Int, _ count: Int, _ body: (Range<Int>) -> Void) {
        if first == end && end > start && end - start + count <= maxRun {
            end += count
        } else {
            flush(body)
            start = first
            end = first + count
        }
    }

    @inline(__always)
    mutating func flush(_ body: (Range<Int>) -> Void) {
        if end > start { body(start..<end) }
        start = 0
        end = 0
    }
}
