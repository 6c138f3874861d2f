// The sidecar mapped: typed views of its parts (see SidecarLayout.swift),
// and the purgeability rule of DESIGN.md §1c computed from them.
import Synchronization

final class Sidecar: @unchecked Sendable {
    let layout: SidecarLayout
    let base: UnsafeMutableRawPointer
    /// Page states the fault handler reads: 00 present, 10 locked, 11 purged.
    let content: VolatilityMap
    /// The file's own marks (fvrange).
    let fileMarks: PartyMap
    let slots: MapperSlots
    let control: PurgeControl

    init(layout: SidecarLayout, base: UnsafeMutableRawPointer) {
        self.layout = layout
        self.base = base
        content = VolatilityMap(memory: base + layout.contentMapOffset, pageCount: layout.pageCount)
        fileMarks = PartyMap(memory: base + layout.fileMapOffset, pageCount: layout.pageCount)
        slots = MapperSlots(memory: base + SidecarLayout.slotTableOffset, count: layout.slotCount,
                            pageCount: layout.pageCount)
        control = PurgeControl(memory: base + SidecarLayout.controlOffset)
    }

    /// Slot `i`'s marks.
    @inline(__always)
    func marks(ofSlot i: Int) -> PartyMap {
        PartyMap(memory: base + layout.slotMapsOffset + i * layout.slotMapStride, pageCount: layout.pageCount)
    }

    /// Slots worth looking at. The high-water mark is a hint kept in
    /// shared memory: a value outside 0...slotCount (a scribble; as an Int
    /// it may even be negative) means every slot, never none (none would
    /// make every pin invisible to a purge).
    @inline(__always)
    var slotBound: Int {
        let h = control.highWater
        return h >= 0 && h <= layout.slotCount ? h : layout.slotCount
    }

    /// Byte range in the sidecar of slot `i`'s marks.
    func marksBytes(ofSlot i: Int) -> Range<Int> {
        let lo = layout.slotMapsOffset + i * layout.slotMapStride
        return lo..<(lo + layout.partyMapBytes)
    }

    /// Low bits of the pages of word `w` that may be purged now (DESIGN.md
    /// §1c): no live private mapping covers it, no mapper pins it, and the
    /// file marked it volatile or every live shared mapper of it voted.
    /// Every load is sequentially consistent: after locking a page, this is
    /// the purger's half of the pin/purge handshake.
    ///
    /// `alive(i)` is asked about a slot that reads free: true when its owner
    /// is alive all the same (its OFD byte is held: a peer scribbled the
    /// state, or the owner is freeing it and its marks are zero). Such a
    /// slot's pins count: what a peer writes into a state word must never
    /// make a live mapper's pins stop counting.
    func purgeable(word w: Int, alive: (Int) -> Bool = { _ in false }) -> UInt64 {
        let fileVolatile = PartyMap.voted(fileMarks.words[w].load(ordering: .sequentiallyConsistent))
        var voted = ~UInt64(0), covered: UInt64 = 0, pinned: UInt64 = 0, privately: UInt64 = 0
        let first = w * VolatilityMap.pagesPerWord
        let wordPages = first..<min(first + VolatilityMap.pagesPerWord, layout.pageCount)
        for i in 0..<slotBound {
            guard let v = slots.view(i) else {
                if alive(i) { pinned |= PartyMap.pinned(marks(ofSlot: i).words[w].load(ordering: .sequentiallyConsistent)) }
                continue
            }
            let word = marks(ofSlot: i).words[w].load(ordering: .sequentiallyConsistent)
            // A pin counts as long as its slot is not free (claiming, live,
            // or being reclaimed): withdrawing it is the reclaimer's job.
            pinned |= PartyMap.pinned(word)
            guard v.phase == .live else { continue }
            let overlap = v.pages.clamped(to: wordPages)
            if overlap.isEmpty { continue }
            let cover = VolatilityMap.lowMask(word: w, pages: overlap)
            if v.kind == .privateMapping {
                privately |= cover
            } else if v.kind == .shared {
                voted &= PartyMap.voted(word) | ~cover
                covered |= cover
            }
        }
        let valid = VolatilityMap.lowMask(word: w, pages: wordPages)
        return (fileVolatile | (voted & covered)) & ~pinned & ~privately & valid
    }

    /// Pages of `pages` purgeable and still present (a snapshot).
    func purgeableCount(_ pages: Range<Int>, alive: (Int) -> Bool = { _ in false }) -> Int {
        if pages.isEmpty { return 0 }
        var n = 0
        for w in VolatilityMap.wordsCovering(pages) {
            let present = VolatilityMap.pages(in: content.words[w].load(ordering: .acquiring), .nonVolatile)
            n += (purgeable(word: w, alive: alive) & present & VolatilityMap.lowMask(word: w, pages: pages)).nonzeroBitCount
        }
        return n
    }
}
