// The volatility map: two bits of state per page, 32 pages per 64-bit word,
// over raw memory that the caller owns (private memory, or a shared
// sidecar). Pure logic: no syscalls, no allocation. Every operation on a word
// is one compare-and-swap, so a range costs one CAS per 32 pages.
//
// Encoding (must match CVRange.h): 00 non-volatile, 01 volatile,
// 10 locked (held by an operation in flight), 11 purged.
//
// Transitions and who makes them:
//   markVolatile      00 -> 01            (others unchanged)
//   markNonVolatile   01 -> 00, 11 -> 00  (waits while any page is 10)
//   lockedRuns        some states -> 10 [-> work on the run] -> final state:
//     purge:                      01 (and 11) -> 10 -> discard -> 11
//     kernel-driven markVolatile: 00          -> 10 -> MADV_FREE -> 01
//     kernel-driven unmark:       01 -> 10 -> settle (cancel MADV_FREE) -> 00
//   the fault handler (C):        01 -> 11    (a page the kernel reclaimed)
// A page in 00 is therefore never discarded: a purge must win the CAS from 01
// first, and markNonVolatile cannot pass a page while it is 10.
//
// Discard generations: one 32-bit counter per map word, after the words.
// Whoever moves a page of the word towards "discarded" bumps it: a purge
// between locking and releasing its run, the handler before recording a
// reclaim, a settling pass that found reclaimed pages before releasing them.
// An optimistic access reads the sum of its words' generations before its
// pre-check and again after its body (after re-reading the states): a page
// that was purged and cleared again while the body ran (so the body read
// zeros without a fault and the states look intact) still changed the sum.
import Synchronization

@usableFromInline
struct VolatilityMap: @unchecked Sendable {
    @usableFromInline static let pagesPerWord = 32
    /// The low bit of every page's two-bit field.
    @usableFromInline static let lowBits: UInt64 = 0x5555_5555_5555_5555

    @usableFromInline let words: UnsafeMutablePointer<Atomic<UInt64>>
    let generations: UnsafeMutablePointer<Atomic<UInt32>>
    let pageCount: Int

    /// Words needed for `pageCount` pages.
    static func wordCount(pages pageCount: Int) -> Int {
        (pageCount + pagesPerWord - 1) / pagesPerWord
    }

    /// Bytes needed for `pageCount` pages: the state words, then one 32-bit
    /// discard generation per word (rounded up to 8 bytes).
    static func byteCount(pages pageCount: Int) -> Int {
        let n = wordCount(pages: pageCount)
        return n * MemoryLayout<UInt64>.stride + (n * MemoryLayout<UInt32>.stride + 7) & ~7
    }

    /// A map over `memory`, which must hold `byteCount(pages:)` bytes, be
    /// 8-byte aligned and start zeroed (every page non-volatile) or hold a
    /// map written by this code.
    init(memory: UnsafeMutableRawPointer, pageCount: Int) {
        self.words = memory.assumingMemoryBound(to: Atomic<UInt64>.self)
        let n = Self.wordCount(pages: pageCount)
        self.generations = (memory + n * MemoryLayout<UInt64>.stride).assumingMemoryBound(to: Atomic<UInt32>.self)
        self.pageCount = pageCount
    }

    /// The raw words, for the C fault handler.
    var rawWords: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(words).assumingMemoryBound(to: UInt64.self)
    }

    /// The raw generations, for the C fault handler.
    var rawGenerations: UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(generations).assumingMemoryBound(to: UInt32.self)
    }

    // MARK: - Masks

    /// Low bits of the pages of `first..<end` that fall in word `w`.
    @inlinable @inline(__always)
    static func lowMask(word w: Int, first: Int, end: Int) -> UInt64 {
        let base = w &* pagesPerWord
        let lo = max(first, base) &- base
        let hi = min(end, base &+ pagesPerWord) &- base
        let span = hi &- lo
        let m = span == pagesPerWord ? lowBits : ((1 &<< UInt64(2 &* span)) &- 1) & lowBits
        return m &<< UInt64(2 &* lo)
    }

    @inline(__always)
    static func lowMask(word w: Int, pages: Range<Int>) -> UInt64 {
        lowMask(word: w, first: pages.lowerBound, end: pages.upperBound)
    }

    @inline(__always)
    static func wordsCovering(_ pages: Range<Int>) -> ClosedRange<Int> {
        (pages.lowerBound / pagesPerWord)...((pages.upperBound - 1) / pagesPerWord)
    }

    /// Low bits of the pages of `word` whose state is `state`.
    @inlinable @inline(__always)
    static func pages(in word: UInt64, _ state: PageState) -> UInt64 {
        let low = word & lowBits
        let high = (word >> 1) & lowBits
        switch state {
        case .nonVolatile: return ~low & ~high & lowBits
        case .volatile: return low & ~high
        case .locked: return ~low & high & lowBits
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
    func census(_ pages: Range<Int>) -> (volatile: Int, locked: Int, purged: Int) {
        var v = 0, l = 0, p = 0
        if pages.isEmpty { return (0, 0, 0) }
        for w in Self.wordsCovering(pages) {
            let word = words[w].load(ordering: .acquiring)
            let m = Self.lowMask(word: w, pages: pages)
            v += (Self.pages(in: word, .volatile) & m).nonzeroBitCount
            l += (Self.pages(in: word, .locked) & m).nonzeroBitCount
            p += (Self.pages(in: word, .purged) & m).nonzeroBitCount
        }
        return (v, l, p)
    }

    /// Whether any page of `pages` is purged or locked (its high bit set).
    /// Sequentially consistent loads: part of the optimistic-access protocol.
    func anyDiscarded(in pages: Range<Int>) -> Bool {
        if pages.isEmpty { return false }
        for w in Self.wordsCovering(pages) {
            let word = words[w].load(ordering: .sequentiallyConsistent)
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

    // MARK: - Discard generations

    /// The sum of the discard generations of the words covering `pages`
    /// (sequentially consistent loads). It changes whenever a page of those
    /// words was discarded since it was last read.
    func generationSum(_ pages: Range<Int>) -> UInt64 {
        if pages.isEmpty { return 0 }
        var sum: UInt64 = 0
        for w in Self.wordsCovering(pages) {
            sum &+= UInt64(generations[w].load(ordering: .sequentiallyConsistent))
        }
        return sum
    }

    /// Bumps the discard generations of the words covering `pages`.
    func bumpGenerations(_ pages: Range<Int>) {
        if pages.isEmpty { return }
        for w in Self.wordsCovering(pages) {
            generations[w].wrappingAdd(1, ordering: .sequentiallyConsistent)
        }
    }
}
