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

    /// The slot high-water hint when it is in 0...slotCount, else 0 (no
    /// information). Only a hint: a peer may write any value there, 0
    /// included. A scan that must not miss a live slot bounds itself with
    /// `AliveSlots.bound`, which asks the OFD bytes above it.
    @inline(__always)
    var slotHint: Int {
        let h = control.highWater
        return h >= 0 && h <= layout.slotCount ? h : 0
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
    /// `alive` says which slots that read free have a live owner all the
    /// same (its OFD byte is held: a peer scribbled the state, or the owner
    /// is freeing it and its marks are zero), and bounds the scan (see
    /// `AliveSlots.bound`): what a peer writes into the sidecar must never
    /// hide a live mapper. A slot whose record cannot be trusted (it reads
    /// free while its owner is alive, or `SlotView.wellFormed` is false) is
    /// taken to cover every page of the file and to vote none: its pins
    /// count, and no page is purged on the mappers' votes while it is in
    /// that state (only the file's own marks purge), until its owner writes
    /// its record again (`repairSlot`, at its next pin or vote). When its
    /// kind field still reads private, it is taken as a private mapping of
    /// every page: nothing is purged.
    func purgeable(word w: Int, alive: AliveSlots) -> UInt64 {
        purgeable(word: w, bound: alive.bound, alive: alive.callAsFunction)
    }

    /// `purgeable(word:alive:)` over the slots below `bound` (default:
    /// every slot).
    func purgeable(word w: Int, bound: Int? = nil, alive: (Int) -> Bool) -> UInt64 {
        let fileVolatile = PartyMap.voted(fileMarks.words[w].load(ordering: .sequentiallyConsistent))
        var voted = ~UInt64(0), covered: UInt64 = 0, pinned: UInt64 = 0, privately: UInt64 = 0
        let first = w * VolatilityMap.pagesPerWord
        let wordPages = first..<min(first + VolatilityMap.pagesPerWord, layout.pageCount)
        let valid = VolatilityMap.lowMask(word: w, pages: wordPages)
        // A live slot whose record a peer wrote over: it covers every page
        // and votes none (private, when its kind still says so).
        func distrust(_ i: Int) {
            if slots.field(i, 1).pointee.load(ordering: .relaxed) == SlotKind.privateMapping.rawValue {
                privately |= valid
            } else {
                voted &= ~valid
                covered |= valid
            }
        }
        for i in 0..<min(bound ?? layout.slotCount, layout.slotCount) {
            guard let v = slots.view(i) else {
                if alive(i) {
                    pinned |= PartyMap.pinned(marks(ofSlot: i).words[w].load(ordering: .sequentiallyConsistent))
                    distrust(i)
                }
                continue
            }
            let word = marks(ofSlot: i).words[w].load(ordering: .sequentiallyConsistent)
            // A pin counts as long as its slot is not free (claiming, live,
            // or being reclaimed): withdrawing it is the reclaimer's job.
            pinned |= PartyMap.pinned(word)
            guard v.wellFormed else {
                distrust(i)
                continue
            }
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
        return (fileVolatile | (voted & covered)) & ~pinned & ~privately & valid
    }

    /// Pages of `pages` purgeable and still present (a snapshot).
    func purgeableCount(_ pages: Range<Int>, alive: AliveSlots) -> Int {
        if pages.isEmpty { return 0 }
        var n = 0
        for w in VolatilityMap.wordsCovering(pages) {
            let present = VolatilityMap.pages(in: content.words[w].load(ordering: .acquiring), .nonVolatile)
            n += (purgeable(word: w, alive: alive) & present & VolatilityMap.lowMask(word: w, pages: pages)).nonzeroBitCount
        }
        return n
    }
}
