// One party's marks on a shared file: two bits a page, 32 pages a word, in
// the sidecar. A party is the file itself (fvrange) or one mapper slot
// (mvrange on a shared mapping). Encoding:
//   00 neutral (file: non-volatile)   01 voted volatile
//   11 voted, and purged since        10 pinned (mappers only)
// A purge sets 01 -> 11 for every party that had the page voted, so that
// each learns of it separately when it marks the page non-volatile; and
// 10 -> 11 for a party that published its pin (or, for the file, the
// transient 10 of an unmark in flight) after the purge re-read the rule:
// such a party is waiting on the locked page, and takes the notice when the
// lock is gone (a page pinned before the re-check is never purged). Without
// that notice another party could repopulate the page (11 -> 00 in the
// content map) before the waiter looks, and the waiter would call intact a
// page whose contents are gone.
import Synchronization

struct PartyMap: @unchecked Sendable {
    static let lowBits = VolatilityMap.lowBits
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    let pageCount: Int

    init(memory: UnsafeMutableRawPointer, pageCount: Int) {
        words = memory.assumingMemoryBound(to: Atomic<UInt64>.self)
        self.pageCount = pageCount
    }

    /// Low bits of the pages of `word` that are voted (01 or 11).
    @inline(__always) static func voted(_ word: UInt64) -> UInt64 { word & lowBits }
    /// Low bits of the pages of `word` that are pinned (10).
    @inline(__always) static func pinned(_ word: UInt64) -> UInt64 { (word >> 1) & ~word & lowBits }
    /// Low bits of the pages of `word` that were purged while voted (11).
    @inline(__always) static func lost(_ word: UInt64) -> UInt64 { word & (word >> 1) & lowBits }

    /// Votes the pages of `mask` (low bits) in word `w`: neutral and pinned
    /// pages become 01; voted ones keep their state (and their purge notice).
    @inline(__always)
    func vote(word w: Int, mask m: UInt64) {
        var old = words[w].load(ordering: .relaxed)
        while true {
            let set = m & ~Self.voted(old)
            if set == 0 { return }
            let desired = (old & ~(set << 1)) | set
            let (done, seen) = words[w].compareExchange(expected: old, desired: desired, ordering: .acquiringAndReleasing)
            if done { return }
            old = seen
        }
    }

    /// Votes every page of `pages`: one CAS when they lie in one word (the
    /// marks' fast path), else one per word.
    @inline(__always)
    func vote(_ pages: Range<Int>) {
        let w = pages.lowerBound &>> 5
        if (pages.upperBound &- 1) &>> 5 == w {
            vote(word: w, mask: VolatilityMap.oneWordMask(first: pages.lowerBound, end: pages.upperBound))
            return
        }
        for w in VolatilityMap.wordsCovering(pages) { vote(word: w, mask: VolatilityMap.lowMask(word: w, pages: pages)) }
    }

    /// Moves the pages of `mask` in word `w` to `pinned` (10) or neutral
    /// (00), sequentially consistent (the pin-then-check handshake with the
    /// purger). Returns the low bits of the pages that carried a purge notice.
    @inline(__always)
    func settle(word w: Int, mask m: UInt64, pin: Bool) -> UInt64 {
        var old = words[w].load(ordering: .relaxed)
        let fields = m | m << 1
        while true {
            let desired = (old & ~fields) | (pin ? m << 1 : 0)
            if desired == old { return 0 }
            let (done, seen) = words[w].compareExchange(expected: old, desired: desired, ordering: .sequentiallyConsistent)
            if done { return Self.lost(old) & m }
            old = seen
        }
    }

    /// Gives every page of `mask` in word `w` that is voted or pinned a
    /// purge notice (01 -> 11, 10 -> 11); neutral pages stay neutral. Called
    /// for pages a purge punched, which no party had pinned when the purge
    /// re-read the rule: a pin seen now was published after that re-read.
    @inline(__always)
    func notePurge(word w: Int, mask m: UInt64) {
        var old = words[w].load(ordering: .relaxed)
        while true {
            let add = (old | old >> 1) & Self.lowBits & m & ~Self.lost(old)
            if add == 0 { return }
            let (done, seen) = words[w].compareExchange(expected: old, desired: old | add | add << 1, ordering: .acquiringAndReleasing)
            if done { return }
            old = seen
        }
    }

    /// Whether any page of `pages` carries a purge notice.
    func anyLost(in pages: Range<Int>) -> Bool {
        if pages.isEmpty { return false }
        for w in VolatilityMap.wordsCovering(pages)
        where Self.lost(words[w].load(ordering: .acquiring)) & VolatilityMap.lowMask(word: w, pages: pages) != 0 {
            return true
        }
        return false
    }

    /// Counts of the pages of `pages` voted, pinned and carrying a notice.
    func census(_ pages: Range<Int>) -> (voted: Int, pinned: Int, lost: Int) {
        var v = 0, p = 0, l = 0
        if pages.isEmpty { return (0, 0, 0) }
        for w in VolatilityMap.wordsCovering(pages) {
            let word = words[w].load(ordering: .acquiring)
            let m = VolatilityMap.lowMask(word: w, pages: pages)
            v += (Self.voted(word) & m).nonzeroBitCount
            p += (Self.pinned(word) & m).nonzeroBitCount
            l += (Self.lost(word) & m).nonzeroBitCount
        }
        return (v, p, l)
    }

    /// The two bits of one page.
    func state(ofPage page: Int) -> UInt8 {
        UInt8((words[page / 32].load(ordering: .acquiring) >> UInt64(2 * (page % 32))) & 3)
    }
}
