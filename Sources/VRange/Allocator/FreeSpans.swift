// The arena's span bookkeeping (always under the arena's lock): free spans
// in 256 lists bucketed by page count (the last one holds every span of 256
// pages or more), best fit preferring the most recently freed, merged with
// free neighbours through boundary tags; partial slab pages per size class.
// As Chromium's discardable heap, with the lists indexed instead of linked so
// that no link is ever stored in a page that may be purged.

/// A span's address inside an arena: segment slot << 32 | first page.
typealias SpanRef = UInt64

@inline(__always) func spanRef(_ local: Int, _ page: Int) -> SpanRef { UInt64(local) << 32 | UInt64(page) }
@inline(__always) func refSegment(_ r: SpanRef) -> Int { Int(r >> 32) }
@inline(__always) func refPage(_ r: SpanRef) -> Int { Int(r & 0xFFFF_FFFF) }

/// Which boundary of its span a page's tag describes (`PageTag.unused`).
enum TagRole {
    static let first: UInt8 = 1
    static let last: UInt8 = 2
}

struct SpanLists {
    static let bucketCount = 256
    var segments: [Segment?] = []
    var buckets = [[SpanRef]](repeating: [], count: bucketCount)
    /// Bit b set when bucket b is not empty.
    var nonEmpty: [UInt64] = [0, 0, 0, 0]
    /// Per size class: slab pages with at least one free slot.
    var partial: [[SpanRef]]

    init(classCount: Int) {
        partial = [[SpanRef]](repeating: [], count: classCount)
    }

    @inline(__always) static func bucket(_ pages: Int) -> Int { min(pages, bucketCount) - 1 }

    // MARK: - Tags

    /// Writes the boundary tags of span [page, page + pages).
    @inline(__always)
    func setTags(_ seg: Segment, _ page: Int, _ pages: Int, kind: SpanKind, flags: UInt8 = 0, aux: UInt32 = 0) {
        let last = page + pages - 1
        seg.tags[page] = PageTag(pages: UInt32(pages), aux: aux, listIndex: 0, kind: kind, sizeClass: 0, flags: flags,
                                 unused: pages == 1 ? TagRole.first | TagRole.last : TagRole.first)
        if pages > 1 {
            seg.tags[last] = PageTag(pages: UInt32(pages), aux: aux, listIndex: 0, kind: kind, sizeClass: 0, flags: flags,
                                     unused: TagRole.last)
        }
    }

    /// Forgets the boundary tags of a span swallowed by a merge, so that a
    /// stale purge unit naming it finds an interior page.
    @inline(__always)
    func clearTags(_ seg: Segment, _ page: Int, _ pages: Int) {
        seg.tags[page].kind = .interior
        seg.tags[page].unused = 0
        seg.tags[page + pages - 1].kind = .interior
        seg.tags[page + pages - 1].unused = 0
    }

    // MARK: - Free lists

    mutating func insertFree(_ seg: Segment, _ page: Int, _ pages: Int, flags: UInt8, freedAt: UInt32) {
        setTags(seg, page, pages, kind: .free, flags: flags, aux: freedAt)
        let b = Self.bucket(pages)
        seg.tags[page].listIndex = UInt32(buckets[b].count)
        buckets[b].append(spanRef(seg.localIndex, page))
        nonEmpty[b >> 6] |= 1 << UInt64(b & 63)
    }

    mutating func removeFree(_ seg: Segment, _ page: Int) {
        let b = Self.bucket(Int(seg.tags[page].pages))
        let i = Int(seg.tags[page].listIndex)
        let moved = buckets[b].removeLast()
        if i < buckets[b].count {
            buckets[b][i] = moved
            segments[refSegment(moved)]!.tags[refPage(moved)].listIndex = UInt32(i)
        }
        if buckets[b].isEmpty { nonEmpty[b >> 6] &= ~(1 << UInt64(b & 63)) }
    }

    /// The first non-empty bucket at or above `b`, or nil.
    @inline(__always)
    func firstNonEmpty(from b: Int) -> Int? {
        var w = b >> 6
        var bits = nonEmpty[w] & (~0 << UInt64(b & 63))
        while true {
            if bits != 0 { return w << 6 | bits.trailingZeroBitCount }
            w += 1
            if w == nonEmpty.count { return nil }
            bits = nonEmpty[w]
        }
    }

    /// Best fit for `pages`: removes and returns a free span of at least that
    /// many pages (the most recently freed of the smallest size that fits).
    mutating func takeFree(_ pages: Int) -> (seg: Segment, page: Int, spanPages: Int, flags: UInt8)? {
        guard let b = firstNonEmpty(from: Self.bucket(pages)) else { return nil }
        var pick = buckets[b].count - 1
        if b == Self.bucketCount - 1 {
            // Mixed sizes: smallest that fits, latest among equals.
            var best = Int.max
            pick = -1
            for (i, r) in buckets[b].enumerated() {
                let n = Int(segments[refSegment(r)]!.tags[refPage(r)].pages)
                if n >= pages && n <= best { best = n; pick = i }
            }
            if pick < 0 { return nil }
        }
        let r = buckets[b][pick]
        let seg = segments[refSegment(r)]!
        let page = refPage(r)
        let tag = seg.tags[page]
        removeFree(seg, page)
        return (seg, page, Int(tag.pages), tag.flags)
    }

    /// Carves [page, page + pages) out of a free span just taken, giving the
    /// rest back to the lists with the span's flags and age.
    mutating func split(_ seg: Segment, _ page: Int, _ pages: Int, spanPages: Int, flags: UInt8, freedAt: UInt32) {
        if spanPages > pages {
            insertFree(seg, page + pages, spanPages - pages, flags: flags, freedAt: freedAt)
        }
    }

    /// Returns [page, page + pages) to the free lists, merged with its free
    /// neighbours. Returns the merged span.
    @discardableResult
    mutating func freeSpan(_ seg: Segment, _ page: Int, _ pages: Int, flags: UInt8, now: UInt32) -> (page: Int, pages: Int) {
        var first = page, count = pages
        var mayBeVolatile = flags & FreeFlags.mayBeVolatile
        var released = flags & FreeFlags.released
        clearTags(seg, page, pages)
        if first > 0, seg.tags[first - 1].kind == .free {
            let prev = seg.tags[first - 1]
            let start = first - Int(prev.pages)
            removeFree(seg, start)
            clearTags(seg, start, Int(prev.pages))
            mayBeVolatile |= prev.flags & FreeFlags.mayBeVolatile
            released &= prev.flags
            first = start
            count += Int(prev.pages)
        }
        let after = first + count
        if after < seg.pageCount, seg.tags[after].kind == .free {
            let next = seg.tags[after]
            removeFree(seg, after)
            clearTags(seg, after, Int(next.pages))
            mayBeVolatile |= next.flags & FreeFlags.mayBeVolatile
            released &= next.flags
            count += Int(next.pages)
        }
        insertFree(seg, first, count, flags: mayBeVolatile | released, freedAt: now)
        return (first, count)
    }

    // MARK: - Partial slab pages

    mutating func addPartial(_ seg: Segment, _ page: Int, sizeClass c: Int) {
        seg.tags[page].listIndex = UInt32(partial[c].count)
        partial[c].append(spanRef(seg.localIndex, page))
    }

    mutating func removePartial(_ seg: Segment, _ page: Int, sizeClass c: Int) {
        let i = Int(seg.tags[page].listIndex)
        let moved = partial[c].removeLast()
        if i < partial[c].count {
            partial[c][i] = moved
            segments[refSegment(moved)]!.tags[refPage(moved)].listIndex = UInt32(i)
        }
    }

    /// Removes every span of `seg` from the lists (before dropping it).
    mutating func unlinkAll(_ seg: Segment) {
        var p = 0
        while p < seg.pageCount {
            let tag = seg.tags[p]
            switch tag.kind {
            case .free: removeFree(seg, p); p += Int(tag.pages)
            case .slab: removePartial(seg, p, sizeClass: Int(tag.sizeClass)); p += 1
            case .large: p += Int(tag.pages)
            case .interior: preconditionFailure("VRange allocator: segment spans corrupted at page \(p)")
            }
        }
    }
}
