// Size classes of small buffers: a slab page of class c holds
// `slotsPerPage[c]` slots of `size` bytes each, never straddling pages, so
// that each slot lives on exactly one page (one page word, one lost bit).

struct SizeClasses: Sendable {
    /// Slots per page for each class, largest count (smallest slot) first.
    /// At most 32 slots, so that a page's lost bits fit its word.
    static let slotCounts: [Int] = [32, 21, 16, 12, 10, 8, 6, 5, 4, 3, 2]

    /// Slot size of each class: page / slots, rounded down to 16 bytes.
    let sizes: [Int]
    /// The largest small size; anything bigger gets whole pages.
    var maxSmall: Int { sizes[sizes.count - 1] }

    init(pageSize: Int) {
        sizes = Self.slotCounts.map { (pageSize / $0) & ~15 }
    }

    /// The smallest class whose slots hold `byteCount` bytes, or nil when
    /// the buffer should be a page span.
    @inline(__always)
    func classFor(_ byteCount: Int) -> Int? {
        if byteCount > maxSmall { return nil }
        var c = 0
        while sizes[c] < byteCount { c += 1 }
        return c
    }

    @inline(__always)
    func slotsPerPage(_ c: Int) -> Int { Self.slotCounts[c] }
}
