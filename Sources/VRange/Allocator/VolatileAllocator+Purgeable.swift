// The allocator as a purge target (PurgeableMemory): one unit per unlocked
// page-span buffer, one per unlocked slab page, one per free span.
//
// Why per buffer and not per segment: a purger orders victims by recency and
// class, and buffers of one segment are unlocked at very different times; a
// unit must also be something whose loss is reported as a whole to one
// owner. Slab pages are the exception: their buffers become purgeable
// together (a page is volatile only when all of them are unlocked), so the
// page is the unit, stamped by its last unlock. Free spans are units of class
// `.veryLow`: memory nobody uses goes first.
//
// Unit ids: arena << 48 | segment slot << 32 | first page. A stale id (the
// span was freed, merged or reused since the snapshot) is harmless: purge
// only ever discards pages that are volatile at that moment, and an id that
// no longer names the first page of a span purges nothing.

extension VolatileAllocator: PurgeableMemory {
    /// Calls `body` with each unlocked buffer, unlocked slab page and free
    /// span that still holds memory (a snapshot, taken arena by arena under
    /// each arena's lock; `body` runs after the locks are released).
    public func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        var units: [PurgeUnit] = []
        // Spans cached by threads become free spans, so that a purger can take them.
        drainThreadCaches()
        for arena in arenas { arena.collectUnits(into: &units) }
        for unit in units { body(unit) }
    }

    /// Purges unit `id` now: the volatile pages of that buffer or slab page,
    /// or the whole free span. Returns the bytes released.
    public func purge(unit id: Int) -> Int {
        let a = id >> 48
        guard id >= 0, a < arenas.count else { return 0 }
        return arenas[a].purgeUnit(local: (id >> 32) & 0xFFFF, page: id & 0xFFFF_FFFF)
    }
}

extension Arena {
    func collectUnits(into units: inout [PurgeUnit]) {
        let arenaBits = index << 48
        TestHook.entered(.collectUnits)
        state.withLock { s in
            TestHook.locked(.collectUnits)
            // Hot spans become free spans, so that a purger can take them.
            drainMagazine(&s)
            for case let seg? in s.lists.segments {
                let idBase = arenaBits | seg.localIndex << 32
                var p = 0
                while p < seg.pageCount {
                    let tag = seg.tags[p]
                    switch tag.kind {
                    case .free:
                        let pages = Int(tag.pages)
                        if tag.flags & FreeFlags.released == 0 {
                            units.append(PurgeUnit(id: idBase | p, priority: .veryLow,
                                                   lastUsed: seg.stamps[p].load(ordering: .relaxed),
                                                   volatileBytes: pages << config.pageShift))
                        }
                        p += pages
                    case .large:
                        let pages = Int(tag.pages)
                        let v = seg.backing.census(seg.bytes(pages: p, pages)).volatile
                        if v > 0 {
                            units.append(PurgeUnit(id: idBase | p, priority: config.priority,
                                                   lastUsed: seg.stamps[p].load(ordering: .relaxed), volatileBytes: v))
                        }
                        p += pages
                    case .slab:
                        let w = seg.pageWords[p].load(ordering: .acquiring)
                        if SlabWord.count(w) == 0 && w & SlabWord.volatile != 0 {
                            let v = seg.backing.census(seg.bytes(pages: p, 1)).volatile
                            if v > 0 {
                                units.append(PurgeUnit(id: idBase | p, priority: config.priority,
                                                       lastUsed: seg.stamps[p].load(ordering: .relaxed), volatileBytes: v))
                            }
                        }
                        p += 1
                    case .interior:
                        preconditionFailure("VRange allocator: segment spans corrupted at page \(p)")
                    }
                }
            }
        }
    }

    func purgeUnit(local: Int, page: Int) -> Int {
        TestHook.entered(.purgeUnit)
        let target: (Segment, Range<Int>, Bool)? = state.withLock { s in
            TestHook.locked(.purgeUnit)
            guard local < s.lists.segments.count, let seg = s.lists.segments[local], page < seg.pageCount else { return nil }
            let tag = seg.tags[page]
            guard tag.unused & TagRole.first != 0 else { return nil }
            switch tag.kind {
            case .free:
                let pages = Int(tag.pages)
                let range = seg.bytes(pages: page, pages)
                if tag.flags & FreeFlags.released == 0 {
                    // Under the lock, so that no allocation takes the span
                    // between this mark and the flag that makes it unmark.
                    seg.backing.markVolatile(range)
                    seg.tags[page].flags |= FreeFlags.released | FreeFlags.mayBeVolatile
                    seg.tags[page + pages - 1].flags = seg.tags[page].flags
                }
                return (seg, range, true)
            case .large: return (seg, seg.bytes(pages: page, Int(tag.pages)), false)
            case .slab: return (seg, seg.bytes(pages: page, 1), false)
            case .interior: return nil
            }
        }
        guard let (seg, range, free) = target else { return 0 }
        let n = seg.backing.purge(range)
        if free && n > 0 { releasedBytes.add(n, ordering: .relaxed) }
        return n
    }
}
