// The map's transitions: the two marks (with one-word fast paths inlined
// into callers), and the per-page lock that purges and kernel-driven marks
// work under. See VolatilityMap.swift for the states and who moves them.
import CVRange
import Synchronization

extension VolatilityMap {
    // MARK: - Fast paths (one word)

    /// Low bits of pages `first..<end`, which lie in one word (1 to 32
    /// pages): two shifts, no branch.
    @inlinable @inline(__always)
    static func oneWordMask(first: Int, end: Int) -> UInt64 {
        (lowBits &>> UInt64(truncatingIfNeeded: 64 &- 2 &* (end &- first))) &<< UInt64(truncatingIfNeeded: 2 &* (first & 31))
    }

    /// Marks pages `first..<end` volatile if they lie within one word and
    /// none of them is locked or purged: one load and one CAS (none if they
    /// are volatile already). False, having changed nothing, otherwise.
    ///
    /// Inlined into client code: the pair of marks is the hot path of every
    /// cache layer, and a call into the library costs as much as the CAS.
    /// The value the CAS writes is one OR away from the value loaded; the
    /// checks only feed predicted branches (each ALU step between the load
    /// and the CAS adds to the pair's latency, a branch does not).
    @inlinable @inline(__always)
    func markVolatileInOneWord(first: Int, end: Int) -> Bool {
        let w = first &>> 5
        guard (end &- 1) &>> 5 == w else { return false }
        let m = Self.oneWordMask(first: first, end: end)
        let high = m &<< 1
        var old = words[w].load(ordering: .relaxed)
        while true {
            if old & high != 0 { return false }  // a page locked or purged: slow path
            if old | m == old { return true }    // volatile already
            TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_CAS), UnsafeRawPointer(words + w))
            let (done, seen) = words[w].compareExchange(
                expected: old, desired: old | m, ordering: .acquiringAndReleasing)
            if done { return true }
            old = seen
        }
    }

    /// The fast path of `markNonVolatile` for pages `first..<end` within one
    /// word: returns the low bits of the pages that had been purged (the map
    /// has been updated: every page is 00 now), or nil, having changed
    /// nothing, when the range spans words or a page is locked. The CAS
    /// writes the loaded value with the range's fields cleared (one AND).
    @inlinable @inline(__always)
    func markNonVolatileInOneWord(first: Int, end: Int) -> UInt64? {
        let w = first &>> 5
        guard (end &- 1) &>> 5 == w else { return nil }
        let m = Self.oneWordMask(first: first, end: end)
        let high = m &<< 1
        let fields = m | high
        var old = words[w].load(ordering: .relaxed)
        while true {
            if old & fields == 0 { return 0 }  // non-volatile already
            var lost: UInt64 = 0
            if old & high != 0 {                // not the common case
                if (old &>> 1) & ~old & m != 0 { return nil }  // a page locked: slow path waits
                lost = old & (old &>> 1) & m                    // the purged ones (11)
            }
            TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_CAS), UnsafeRawPointer(words + w))
            let (done, seen) = words[w].compareExchange(
                expected: old, desired: old & ~fields, ordering: .acquiringAndReleasing)
            if done { return lost }
            old = seen
        }
    }

    /// `markVolatileInOneWord` over any number of words, word by word,
    /// while no page met is locked or purged. Returns the first page not
    /// handled: `end` when done, else the first page of the word that needs
    /// the general path (marks are idempotent: it can redo the rest).
    @usableFromInline
    func markVolatileWords(first: Int, end: Int) -> Int {
        var lo = first
        while lo < end {
            let w = lo &>> 5
            let hi = Swift.min(end, (w &+ 1) &<< 5)
            let m = Self.oneWordMask(first: lo, end: hi)
            var old = words[w].load(ordering: .relaxed)
            while true {
                if (old &>> 1) & m != 0 { return lo }
                if old | m == old { break }
                TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_CAS), UnsafeRawPointer(words + w))
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: old | m, ordering: .acquiringAndReleasing)
                if done { break }
                old = seen
            }
            lo = hi
        }
        return end
    }

    /// `markNonVolatileInOneWord` over any number of words, word by word,
    /// while no page met is locked or purged (so nothing handled had been
    /// lost). Returns the first page not handled: `end` when done, else the
    /// first page of the word that needs the general path (which can redo
    /// the whole range: the words handled are non-volatile now, with nothing
    /// to report).
    @usableFromInline
    func markNonVolatileWords(first: Int, end: Int) -> Int {
        var lo = first
        while lo < end {
            let w = lo &>> 5
            let hi = Swift.min(end, (w &+ 1) &<< 5)
            let m = Self.oneWordMask(first: lo, end: hi)
            let fields = m | m &<< 1
            var old = words[w].load(ordering: .relaxed)
            while true {
                if old & fields == 0 { break }
                if (old &>> 1) & m != 0 { return lo }
                TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_CAS), UnsafeRawPointer(words + w))
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: old & ~fields, ordering: .acquiringAndReleasing)
                if done { break }
                old = seen
            }
            lo = hi
        }
        return end
    }

    // MARK: - General marks

    /// Non-volatile pages of `pages` become volatile; volatile, locked and
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
                TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_CAS), UnsafeRawPointer(words + w))
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
                if Self.pages(in: old, .locked) & m != 0 {
                    wait()
                    old = words[w].load(ordering: .acquiring)
                    continue
                }
                let lock = settleVolatile ? Self.pages(in: old, .volatile) & m : 0
                let clear = m & ~lock
                // Cleared fields -> 00; locked fields 01 -> 10.
                let desired = (old & ~(clear | clear << 1) & ~lock) | (lock << 1)
                if desired == old { break }
                TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_CAS), UnsafeRawPointer(words + w))
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

    // MARK: - The per-page lock

    /// Longest run handed to one piece of work, so that an operation waiting
    /// on a locked page is not held up for long (64 MiB of 4 KiB pages).
    static let maxRun = 16384

    /// The per-page lock. In one CAS per word, locks (state 10) the pages of
    /// `pages` that `select` picks from each word (it gets the word and the
    /// range's low-bit mask and returns low bits within it); calls `work`
    /// with each maximal run of locked pages (at most `maxRun`); then moves
    /// the run to `release`. Pages locked by others are skipped. When the
    /// run will end purged, the words' discard generations are bumped right
    /// after the lock, before any work. Returns the number of pages locked.
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
                let eligible = select(old, m) & m & ~Self.pages(in: old, .locked)
                if eligible == 0 { break }
                // Selected fields -> 10: clear the low bit, set the high bit.
                let desired = (old & ~eligible) | (eligible << 1)
                TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_CAS), UnsafeRawPointer(words + w))
                let (done, seen) = words[w].compareExchange(
                    expected: old, desired: desired, ordering: .sequentiallyConsistent)
                if done {
                    if release == .purged { generations[w].wrappingAdd(1, ordering: .sequentiallyConsistent) }
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
            case .purged: words[w].bitwiseOr(m, ordering: .sequentiallyConsistent)  // 10 -> 11
            case .volatile: words[w].bitwiseXor(m | m << 1, ordering: .sequentiallyConsistent)  // 10 -> 01
            case .nonVolatile: words[w].bitwiseAnd(~(m << 1), ordering: .sequentiallyConsistent)  // 10 -> 00
            }
        }
    }
}

/// The state a locked run ends in.
enum LockRelease {
    case purged, volatile, nonVolatile
}
