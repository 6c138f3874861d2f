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
//   discardRuns       01 -> 10 [-> syscall] -> 11; optionally 11 -> 10 -> 11
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
    func markVolatile(_ pages: Range<Int>) -> Int {
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
    /// while a purge holds any of them, so a page is never discarded after
    /// this returns. Calls `purged` with each maximal run of pages that had
    /// been purged, in ascending order. Returns the number of purged pages.
    @discardableResult
    func markNonVolatile(
        _ pages: Range<Int>, wait: () -> Void, purged: (Range<Int>) -> Void
    ) -> Int {
        var count = 0
        var runs = RunCoalescer()
        for w in Self.wordsCovering(pages) {
            let m = Self.lowMask(word: w, pages: pages)
            let fields = m | (m << 1)
            var old = words[w].load(ordering: .acquiring)
            while true {
                if Self.pages(in: old, .purging) & m != 0 {
                    wait()
                    old = words[w].load(ordering: .acquiring)
                    continue
                }
                if old & fields == 0 { break }
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: old & ~fields, ordering: .acquiringAndReleasing)
                if done {
                    let lost = Self.pages(in: old, .purged) & m
                    count += lost.nonzeroBitCount
                    Self.forEachRun(in: lost, word: w) { runs.add($0, $1, purged) }
                    break
                }
                old = seen
            }
        }
        runs.flush(purged)
        return count
    }

    /// The purge protocol. Locks (state 10) every volatile page of `pages`
    /// (unless not `includeVolatile`) and every purged one when `includePurged`, one CAS per word; calls
    /// `discard` with each maximal run of locked pages (at most `maxRun`
    /// pages, so that a waiting markNonVolatile is not held up for long); then
    /// marks the run purged. Returns the number of pages discarded.
    @discardableResult
    func discardRuns(
        in pages: Range<Int>, includePurged: Bool = false, includeVolatile: Bool = true,
        maxRun: Int = 16384,
        _ discard: (Range<Int>) -> Void
    ) -> Int {
        if pages.isEmpty { return 0 }
        var total = 0
        var runStart = 0, runEnd = 0
        func flush() {
            if runEnd > runStart {
                let run = runStart..<runEnd
                discard(run)
                for w in Self.wordsCovering(run) {
                    // 10 | 01 = 11: only this call holds these pages' locks.
                    words[w].bitwiseOr(Self.lowMask(word: w, pages: run), ordering: .releasing)
                }
            }
            runStart = 0
            runEnd = 0
        }
        for w in Self.wordsCovering(pages) {
            let m = Self.lowMask(word: w, pages: pages)
            var old = words[w].load(ordering: .relaxed)
            var locked: UInt64 = 0
            while true {
                var eligible: UInt64 = includeVolatile ? Self.pages(in: old, .volatile) & m : 0
                if includePurged { eligible |= Self.pages(in: old, .purged) & m }
                if eligible == 0 { break }
                // 01 -> 10 and 11 -> 10: clear the low bit, set the high bit.
                let desired = (old & ~eligible) | (eligible << 1)
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: desired, ordering: .acquiringAndReleasing)
                if done { locked = eligible; break }
                old = seen
            }
            Self.forEachRun(in: locked, word: w) { first, count in
                total += count
                if first == runEnd && runEnd - runStart + count <= maxRun {
                    runEnd += count
                } else {
                    flush()
                    runStart = first
                    runEnd = first + count
                }
            }
        }
        flush()
        return total
    }
}

/// Joins runs reported word by word into maximal runs.
struct RunCoalescer {
    private var start = 0
    private var end = 0

    @inline(__always)
    mutating func add(_ first: Int, _ count: Int, _ body: (Range<Int>) -> Void) {
        if first == end && end > start {
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
