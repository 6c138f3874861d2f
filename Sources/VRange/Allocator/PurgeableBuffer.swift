// PurgeableBuffer: the owner of one allocation. Locked (non-volatile) while
// in use, unlocked (volatile, purgeable) otherwise; lock() says what was lost.

/// One buffer of a `VolatileAllocator`, owned by exactly one variable.
///
/// A buffer starts **locked**. `unlock()` makes it volatile: from then on
/// its memory may be purged at any time. `lock()` makes it non-volatile
/// again and says whether the contents survived and, if not, which byte
/// ranges were lost (they read as zeros). Locks nest: only the outermost
/// `lock()`/`unlock()` pair changes the memory's state, as with
/// `NSPurgeableData`'s `beginContentAccess`/`endContentAccess` (also
/// offered, with their exact semantics).
///
/// The type is `~Copyable`: one owner, freed exactly once (by `free()` or
/// when the owner goes out of scope), and never used after that — the
/// compiler rejects a use after `free()`. `lock()` and `unlock()` are
/// `mutating`, so no span or closure over the bytes can be alive across an
/// `unlock()`: that too is a compile-time error (or, for a buffer stored in a
/// class, a runtime exclusivity trap). To share one buffer between threads,
/// guard it with a `Mutex`. Misuse that remains possible — an unbalanced
/// `unlock()`, more than `maxLockDepth` nested locks, touching the bytes
/// while unlocked — stops the program with a precondition failure that says
/// so; it never corrupts memory.
public struct PurgeableBuffer: ~Copyable, Sendable {
    /// Unretained: a segment is never dropped while it has a live buffer
    /// (its arena holds it, and an abandoned arena drops a segment only when
    /// its last buffer is freed), so no path counts references. The hot
    /// paths reach it with `_withUnsafeGuaranteedRef` (no retain at all).
    let segmentRef: Unmanaged<Segment>
    /// Byte offset of the buffer in its segment.
    let offset: Int
    /// The size asked for.
    public let count: Int
    var locks: UInt32 = 1
    /// Slot on its slab page, or -1 for a page span.
    let slotIndex: Int8
    /// Sticky "discarded" of `beginContentAccess` (NSPurgeableData's rule).
    var discarded = false
    // Four words in all (three words, then locks, slotIndex and discarded):
    // small enough to be returned and moved in registers. A fifth word
    // (the span's byte count, once stored here) made every allocation pass
    // the buffer through memory, at a store-forwarding stall each way.

    /// The deepest lock nesting allowed.
    public static let maxLockDepth = 65_535

    init(segment: Unmanaged<Segment>, offset: Int, count: Int, slot: Int) {
        self.segmentRef = segment
        self.offset = offset
        self.count = count
        self.slotIndex = Int8(truncatingIfNeeded: slot)
    }

    /// Slot on its slab page, or -1 for a page span.
    @inline(__always)
    var slot: Int { Int(slotIndex) }

    /// Bytes of a page span: `count` rounded up to whole pages.
    @inline(__always)
    func spanBytes(pageShift: Int) -> Int { ((count - 1) >> pageShift + 1) << pageShift }

    deinit {
        let (offset, slot, locked, count) = (offset, slot, locks > 0, count)
        segmentRef._withUnsafeGuaranteedRef { seg in
            let page = offset >> seg.pageShift
            if slot < 0 {
                let pages = (count - 1) >> seg.pageShift + 1
                // Fast paths: a span freed while locked goes to this thread's
                // cache (plain stores), else to its arena's magazine (a CAS).
                // Either way the arena goes on the release clock's schedule
                // unless it is on it (one load).
                if locked {
                    if (seg.cacheToken != 0 && pages <= ThreadCache.maxPages
                        && ThreadCache.put(seg, page: page, pages: pages))
                        || seg.magazine.put(local: seg.localIndex, page: page, pages: pages) {
                        if !seg.magazine.releaseScheduled { seg.arena.scheduleRelease(afterMs: seg.arena.config.releaseDelayMs) }
                        return
                    }
                }
                seg.arena.freeSpan(seg, page: page, pages: pages, wasLocked: locked)
            } else {
                if locked { seg.unlockSlot(page: page) }
                seg.arena.freeSlot(seg, page: page, slot: slot)
            }
        }
    }

    /// The segment, for paths that are not hot (retained while used).
    var segment: Segment { segmentRef.takeUnretainedValue() }

    /// Frees the buffer, locked or not. Its memory goes back to the
    /// allocator (and to the kernel after the release delay).
    public consuming func free() {}

    // MARK: - Geometry

    /// The buffer's (first) page in its segment.
    @inline(__always)
    var page: Int { offset >> segment.pageShift }

    /// Whether the buffer shares its page with others (it is smaller than
    /// `VolatileAllocator.maxSmallBufferSize`).
    public var sharesPage: Bool { slot >= 0 }

    /// Whether the buffer is locked (non-volatile).
    public var isLocked: Bool { locks > 0 }

    /// How many `lock()` calls are not yet matched by `unlock()`.
    public var lockCount: Int { Int(locks) }

    @inline(__always)
    var start: UnsafeMutableRawPointer { segmentRef._withUnsafeGuaranteedRef { $0.base } + offset }

    // MARK: - Lock and unlock

    /// The answer of `lock()`: whether the contents survived.
    public struct LockResult: Sendable, Equatable {
        /// The byte ranges of the buffer (ascending, disjoint) whose contents
        /// were purged and now read as zeros. Empty when intact. A buffer that
        /// shares its page loses all of its bytes or none.
        public let purgedRanges: [Range<Int>]

        /// `.intact` when no byte was lost, else `.purged`.
        public var outcome: PurgeOutcome { purgedRanges.isEmpty ? .intact : .purged }
        /// Whether any byte was lost.
        public var wasPurged: Bool { !purgedRanges.isEmpty }
        /// How many bytes were lost.
        public var purgedBytes: Int { purgedRanges.reduce(0) { $0 + $1.count } }

        public init(purgedRanges: [Range<Int>]) { self.purgedRanges = purgedRanges }
    }

    /// Locks the buffer: its memory becomes non-volatile (nothing of it will
    /// be purged until the matching `unlock()`). A nested lock (the buffer
    /// is already locked) only counts, and is always intact.
    ///
    /// - Returns: which byte ranges were purged while the buffer was
    ///   unlocked (whole pages of a page span, clipped to `count`; the whole
    ///   buffer for one that shares a page). They now read as zeros.
    /// - Precondition: fewer than `maxLockDepth` locks are held.
    ///
    /// Maps to `VolatileRegion.markNonVolatile` of the buffer's pages (one
    /// CAS per 32 pages); a shared page is marked only by its first locker.
    @discardableResult
    public mutating func lock() -> LockResult {
        precondition(locks < UInt32(Self.maxLockDepth),
                     "PurgeableBuffer.lock(): lock count overflow (more than \(Self.maxLockDepth) nested locks)")
        locks += 1
        if locks > 1 { return LockResult(purgedRanges: []) }
        let (offset, slot, count) = (offset, slot, count)
        var result = segmentRef._withUnsafeGuaranteedRef { seg in
            if slot < 0 {
                let bytes = ((count - 1) >> seg.pageShift + 1) << seg.pageShift
                let r = seg.backing.markNonVolatile(offset..<(offset + bytes))
                if !r.wasPurged { return LockResult(purgedRanges: []) }
                return LockResult(purgedRanges: r.purgedRanges.compactMap { range in
                    let lo = range.lowerBound - offset, hi = min(range.upperBound - offset, count)
                    return lo < hi ? lo..<hi : nil
                })
            }
            return LockResult(purgedRanges: seg.lockSlot(page: offset >> seg.pageShift, slot: slot) ? [0..<count] : [])
        }
        if discarded {
            // A beginContentAccess found these bytes gone earlier (and
            // zero-filled them): they are lost too. A buffer sharing its page
            // lost all of it.
            discarded = false
            let earlier = slot < 0 ? segment.arena.takeLost(segment, page: page) : nil
            result = LockResult(purgedRanges: earlier.map { mergedRanges($0, result.purgedRanges) } ?? [0..<count])
        }
        return result
    }

    /// Unlocks the buffer: when the outermost lock is released its memory
    /// becomes volatile and may be purged at any time (a shared page only
    /// once every buffer on it is unlocked). Stamps the buffer's recency for
    /// purgers (one relaxed load and store, no lock, no system call).
    ///
    /// - Precondition: the buffer is locked.
    public mutating func unlock() {
        precondition(locks > 0, "PurgeableBuffer.unlock(): unbalanced unlock (the buffer is not locked)")
        locks -= 1
        if locks > 0 { return }
        let (offset, slot, count) = (offset, slot, count)
        segmentRef._withUnsafeGuaranteedRef { seg in
            let page = offset >> seg.pageShift
            if slot < 0 {
                let bytes = ((count - 1) >> seg.pageShift + 1) << seg.pageShift
                seg.stamp(page: page)
                seg.backing.markVolatile(offset..<(offset + bytes))
            } else {
                seg.unlockSlot(page: page)
            }
        }
    }

    // MARK: - NSPurgeableData's protocol

    /// `NSPurgeableData.beginContentAccess`: locks the buffer if its contents
    /// are still there and returns true; returns false (and leaves it
    /// unlocked) once they were discarded — and keeps returning false, until
    /// a `lock()` takes the buffer back, reporting exactly the ranges lost
    /// (those this call found purged, and any purged since).
    public mutating func beginContentAccess() -> Bool {
        if discarded { return false }
        if locks > 0 {
            lock()
            return true
        }
        let r = lock()
        if r.wasPurged {
            unlock()
            discarded = true
            if slot < 0 { segment.arena.rememberLost(segment, page: page, r.purgedRanges) }
            return false
        }
        return true
    }

    /// `NSPurgeableData.endContentAccess`: the matching unlock.
    public mutating func endContentAccess() { unlock() }

    /// Whether the contents are known to be gone: discarded for
    /// `beginContentAccess`, or (while unlocked) purged.
    public var isContentDiscarded: Bool {
        if discarded { return true }
        if locks > 0 { return false }
        if slot >= 0 && segment.slotLost(page: page, slot: slot) { return true }
        let range = slot < 0 ? offset..<(offset + spanBytes(pageShift: segment.pageShift)) : segment.bytes(pages: page, 1)
        return segment.backing.census(range).purged > 0
    }

    // MARK: - Bytes

    /// Runs `body` over the bytes. The buffer must be locked.
    @inlinable
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(_lockedBytes(writing: false)))
    }

    /// Runs `body` over the bytes, writable. The buffer must be locked.
    @inlinable
    public mutating func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(_lockedBytes(writing: true))
    }

    /// The bytes of a locked buffer; stops the program on an unlocked one.
    /// The closure accessors above are inlined into the caller (specialised,
    /// the closure called directly) and reach the buffer only through this
    /// one plain call. Unspecialised (a generic call with typed throws, the
    /// closure called indirectly) an empty access cost 2.7 ns on the 2-core
    /// machine, a quarter of an untouched 64 KiB allocate + free; inlined it
    /// costs 1.4 ns.
    @usableFromInline
    func _lockedBytes(writing: Bool) -> UnsafeMutableRawBufferPointer {
        if locks == 0 {
            preconditionFailure(writing ? "PurgeableBuffer: bytes written while unlocked (lock() first)"
                : "PurgeableBuffer: bytes read while unlocked (lock() first, or use withVolatileAccess)")
        }
        return UnsafeMutableRawBufferPointer(start: start, count: count)
    }

    /// The bytes, as a span that cannot outlive this borrow (so it cannot
    /// live across `unlock()`, which is mutating). The buffer must be locked.
    public var bytes: RawSpan {
        @_lifetime(borrow self)
        borrowing get {
            let span = RawSpan(_unsafeBytes: UnsafeRawBufferPointer(_lockedBytes(writing: false)))
            return _overrideLifetime(span, borrowing: self)
        }
    }

    /// The bytes, writable, for the duration of this exclusive access. The
    /// buffer must be locked.
    public var mutableBytes: MutableRawSpan {
        @_lifetime(&self)
        mutating get {
            let span = MutableRawSpan(_unsafeBytes: _lockedBytes(writing: true))
            return _overrideLifetime(span, mutating: &self)
        }
    }

    /// Reads the bytes without locking (optimistic access): `body` runs over
    /// the bytes while they stay volatile, and the result is `.purged`
    /// instead of a SIGBUS if any of them was (or gets) purged. On a locked
    /// buffer `body` simply runs. A buffer sharing its page is also reported
    /// purged when its page was purged and already locked again by a
    /// neighbour (its bytes are zeros then).
    ///
    /// Maps to `VolatileRegion.withVolatileAccess` over the buffer's pages.
    public func withVolatileAccess<Value>(_ body: (UnsafeRawBufferPointer) -> Value) -> VolatileAccess<Value> {
        if discarded { return .purged }
        if locks > 0 { return .intact(body(UnsafeRawBufferPointer(start: start, count: count))) }
        if slot < 0 {
            return segment.backing.withVolatileAccess(offset..<(offset + spanBytes(pageShift: segment.pageShift))) { raw in
                body(UnsafeRawBufferPointer(rebasing: raw[0..<count]))
            }
        }
        // Before: a bit already published (no need to wait for one in flight:
        // the check after the body does).
        if segment.slotLost(page: page, slot: slot, settled: false) { return .purged }
        let pageStart = page << segment.pageShift
        let inPage = offset - pageStart
        let r = segment.backing.withVolatileAccess(segment.bytes(pages: page, 1)) { raw in
            body(UnsafeRawBufferPointer(rebasing: raw[inPage..<(inPage + count)]))
        }
        if segment.slotLost(page: page, slot: slot) { return .purged }
        return r
    }
}

extension PurgeableBuffer {
    /// The id of the purge unit holding this buffer (its span, or its slab
    /// page), as `VolatileAllocator.forEachPurgeUnit` reports it.
    public var purgeUnitID: Int {
        let seg = segment
        return seg.arena.index << 48 | seg.localIndex << 32 | page
    }
}

/// Where a buffer of a `.sharedFile` allocator lives: a byte range of a
/// shared `VolatileFile`. Another process that gets the file (its
/// descriptors, inherited or sent: `VolatileFile.inheritableDescriptors()`,
/// `send(over:)`) maps it and finds the buffer's bytes at `range`. Its
/// mapping is a mapper of the file: until it votes the pages volatile, the
/// allocator's purges leave them alone (DESIGN.md §1c).
public struct FileLocation: Sendable {
    /// The segment's file. It stays open while the buffer is allocated; do
    /// not close it (the allocator does, when the segment goes).
    public let file: VolatileFile
    /// The buffer's bytes in the file: `count` bytes from the buffer's
    /// offset (page-aligned for buffers of a page or more; a smaller buffer
    /// shares its page with others).
    public let range: Range<Int>
}

extension PurgeableBuffer {
    /// The shared file and range that hold this buffer, for an allocator
    /// whose source is `.sharedFile`; nil for anonymous segments.
    public var fileLocation: FileLocation? {
        segment.backing.file.map { FileLocation(file: $0, range: offset..<(offset + count)) }
    }
}
