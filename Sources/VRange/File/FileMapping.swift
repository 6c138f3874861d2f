// FileMapping: one process's mapping of a VolatileFile, and its marks as a
// mapper (DESIGN.md §1c): markVolatile votes, markNonVolatile pins. Each
// mapping owns a mapper slot in the sidecar; its votes and pins are
// withdrawn when it closes or its process dies.
import CVRange
import Synchronization

/// A mapping of (a range of) a `VolatileFile` in this process.
///
/// A shared mapping is a *mapper*: `markVolatile` is its vote that the
/// pages may be purged, `markNonVolatile` its pin, which wins over every
/// other mark. A page is purged only if no mapper pins it, no private
/// mapping covers it, and the file marked it volatile or every shared
/// mapper of it voted. Touching a purged page raises SIGBUS (userfaultfd:
/// in every process; mprotect fallback: see `faultMechanism`).
///
/// A private mapping (`Options(privateMapping: true)`) neither votes nor
/// pins: while it exists, none of its pages is purged (a purge would change
/// what it reads).
///
/// Ranges are byte offsets within the mapping. Thread-safe, `close()`
/// included: an operation in flight when it is called finishes on memory
/// that is still the library's (the mapping's addresses stay reserved until
/// deinit); every call that starts after it throws `.closed`.
public final class FileMapping: @unchecked Sendable {
    /// The file (kept open while the mapping exists).
    public let file: VolatileFile
    /// The bytes of the file this mapping shows.
    public let fileRange: Range<Int>
    /// The mapping's size in bytes.
    public var size: Int { fileRange.count }
    /// The file's page size: the unit of every range.
    public var pageSize: Int { file.pageSize }
    /// The first byte of the mapping (file offset `fileRange.lowerBound`).
    public let baseAddress: UnsafeMutableRawPointer
    /// MAP_PRIVATE (a copy-on-write view that blocks purging of its pages).
    public let isPrivate: Bool
    /// How a touch of a purged page raises SIGBUS here. `.userfaultfd`: in
    /// this mapping whichever process purged the page. `.mprotect` (where
    /// userfaultfd is unavailable, and always for private mappings): for
    /// pages purged before the mapping was made or by this process; a page
    /// another process purges later reads as zeros here (and is refilled),
    /// while every mark still reports it exactly.
    public let faultMechanism: FaultMechanism

    /// The whole mapping as bytes. Valid until `close()` (after it, empty
    /// memory that is still reserved for this object, until deinit).
    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: baseAddress, count: size)
    }

    let pages: Range<Int>
    let geometry: PageGeometry
    let slot: Int
    /// The state word this mapping published for its slot: its private
    /// record, which no peer can write (see `VolatileFile.repairSlot`).
    let slotState: UInt64
    let slotKind: SlotKind
    let marks: PartyMap
    let mappedBase: UnsafeMutableRawPointer
    let mappedLength: Int
    let alignedFirstPage: Int
    let handlerSlot: Int32
    /// What the handler's region entry points at and this mapping owns: the
    /// count of pages that lost SIGBUS coverage, a one-word chunk bitmap
    /// (the whole mapping is one chunk, registered at once), then the pin
    /// record: one bit a page from `alignedFirstPage`, set while this
    /// mapping pins the page. It lives in this process's own memory, which
    /// no peer can write: the fault handler fills a page pinned here
    /// whatever the sidecar says (DESIGN.md §9: a page this process pins
    /// never raises SIGBUS). After the pin record: the stale-fill table
    /// (`staleTable`, StaleFills.swift), which the handler writes too.
    let handlerMetadata: UnsafeMutablePointer<UInt64>
    /// The stale-fill table in `handlerMetadata` (see `staleFills`).
    let staleTable: UnsafeMutablePointer<UInt64>
    /// Huge pages (no userfaultfd zero page there): one page of zeros, never
    /// written (it costs no memory), that the handler copies into a page.
    let zeroSource: UnsafeMutableRawPointer?
    let forkGeneration: UInt64
    private let closedFlag = Atomic<Bool>(false)
    /// The mapping's size while votes and pins may take their fast path
    /// (one range check covers the closed mapping and the private one): 0
    /// for a private mapping, and from the start of `close()` (which the
    /// file's `close()` calls for every mapping it made).
    private let fastSize: Atomic<Int>

    init(file: VolatileFile, range: Range<Int>, options: Options) throws(VRangeError) {
        let pages = try file.geometry.pages(range)
        let kind: SlotKind = options.privateMapping ? .privateMapping : .shared
        let (slot, slotState) = try file.claimSlot(kind: kind, pages: pages)
        var cleanup: [() -> Void] = [{ file.releaseSlot(slot) }]
        func fail(_ e: VRangeError) -> VRangeError {
            for undo in cleanup.reversed() { undo() }
            cleanup.removeAll()  // once, however many times an error passes here
            return e
        }
        // Map from a multiple of 32 pages, so that the fault handler indexes
        // the content map from a whole word.
        let aligned = pages.lowerBound - pages.lowerBound % VolatilityMap.pagesPerWord
        let length = (pages.upperBound - aligned) * file.pageSize
        let mapped: UnsafeMutableRawPointer
        do {
            mapped = try Kernel.mapFile(fd: file.descriptors.data, length: length, offset: aligned * file.pageSize,
                                        privateMapping: options.privateMapping, noReserve: file.isHugePageBacked)
        } catch { throw fail(.system(error)) }
        cleanup.append { try? Kernel.unmap(mapped, length: length) }

        var mechanism = FaultMechanism.mprotect
        if !options.privateMapping && options.faultMechanism != .mprotect {
            do {
                try Kernel.UserFault.register(mapped, length: length)
                mechanism = .userfaultfd
            } catch {
                if options.faultMechanism == .userfaultfd {
                    throw fail(.unsupported("userfaultfd cannot register a shared memfd mapping here: \(error)"))
                }
            }
        } else if options.privateMapping && options.faultMechanism == .userfaultfd {
            throw fail(.unsupported("private mappings use the mprotect mechanism (a userfaultfd zero page would hide the file's later contents)"))
        }
        let handlerSlot: Int32
        let pinWords = (pages.upperBound - aligned + 63) / 64
        let metadataWords = 2 + pinWords + StaleFillTable.wordCount
        let metadata = UnsafeMutablePointer<UInt64>.allocate(capacity: metadataWords)
        metadata.initialize(repeating: 0, count: metadataWords)
        cleanup.append { metadata.deallocate() }
        var zeroSource: UnsafeMutableRawPointer?
        if file.isHugePageBacked && mechanism == .userfaultfd {
            do { zeroSource = try Kernel.mapAnonymousUnlocked(length: file.pageSize) } catch { throw fail(.system(error)) }
            let z = zeroSource!
            cleanup.append { try? Kernel.unmap(z, length: file.pageSize) }
        }
        do {
            handlerSlot = try Self.registerWithHandler(
                base: mapped, length: length, pageSize: file.pageSize, sidecar: file.sidecar,
                firstWord: aligned / VolatilityMap.pagesPerWord, mechanism: mechanism, metadata: metadata,
                zeroSource: zeroSource, pins: options.privateMapping ? nil : metadata + 2,
                stale: metadata + 2 + pinWords)
        } catch { throw fail(error) }
        cleanup.append { Kernel.FaultTable.unregister(slot: handlerSlot) }

        self.file = file
        self.fileRange = range
        self.baseAddress = mapped + (pages.lowerBound - aligned) * file.pageSize
        self.isPrivate = options.privateMapping
        self.faultMechanism = mechanism
        self.pages = pages
        self.geometry = PageGeometry(size: range.count, pageSize: file.pageSize)
        self.slot = slot
        self.slotState = slotState
        self.slotKind = kind
        self.marks = file.sidecar.marks(ofSlot: slot)
        self.mappedBase = mapped
        self.mappedLength = length
        self.alignedFirstPage = aligned
        self.handlerSlot = handlerSlot
        self.handlerMetadata = metadata
        self.staleTable = metadata + 2 + pinWords
        self.zeroSource = zeroSource
        self.forkGeneration = vr_fork_generation()
        self.fastSize = Atomic(options.privateMapping ? 0 : range.count)

        // Every mapping is in the file's registry, so that the file's
        // close() closes it (its slot lives in the sidecar the file unmaps).
        file.mappings.withLock { $0[ObjectIdentifier(self)] = WeakMapping(mapping: self) }
        // A close() of the file that listed its mappings before this one
        // was in the list: close it here (the map call's use keeps the
        // file's resources meanwhile).
        if file.isClosed {
            close()
            throw .closed
        }
        if mechanism == .mprotect {
            // A purge in flight ends before the pages are looked at (a private
            // mapping is live already: later purges leave its pages alone).
            // A purge of a stopped peer is not waited for beyond the bound:
            // its punches, if it ever makes them, are another process's
            // later purge here (zeros; every mark still reports them).
            var wait = LockWait()
            do throws(VRangeError) {
                while file.sidecar.content.census(pages).locked > 0 { try file.waitForLockedPage(&wait, pages: pages) }
            } catch {}
            file.sidecar.content.forEachRun(of: .purged, in: pages) { protect($0, accessible: false) }
        }
    }

    /// The one place a file mapping is published to the fault handler.
    /// `firstWord` is the content-map word of the mapping's first page: the
    /// handler reads the sidecar's page states (and bumps its discard
    /// generations) from there, and the purge record to tell a page being
    /// punched from one merely locked; `pins` is the mapping's private pin
    /// record; `stale` its stale-fill table. The mapping is registered with the
    /// userfaultfd whole, by the caller: one chunk, marked registered, so
    /// that a fork child or a lost descriptor registers it again.
    static func registerWithHandler(
        base: UnsafeMutableRawPointer, length: Int, pageSize: Int, sidecar: Sidecar,
        firstWord: Int, mechanism: FaultMechanism, metadata: UnsafeMutablePointer<UInt64>,
        zeroSource: UnsafeMutableRawPointer? = nil, pins: UnsafeMutablePointer<UInt64>? = nil,
        stale: UnsafeMutablePointer<UInt64>? = nil
    ) throws(VRangeError) -> Int32 {
        let pageCount = length / pageSize
        metadata[1] = mechanism == .userfaultfd ? 1 : 0
        let region = Kernel.FaultTable.Region(
            base: base, length: length, pageSize: pageSize,
            words: sidecar.content.rawWords + firstWord, generations: sidecar.content.rawGenerations + firstWord,
            coverageLost: metadata, chunks: metadata + 1, chunkPages: max(pageCount, 1),
            mechanism: mechanism == .userfaultfd ? .userfaultfd : .mprotect, kernelDriven: false, shared: true,
            zeroSource: zeroSource.map { UnsafeRawPointer($0) }, pins: pins.map { UnsafePointer($0) },
            intent: UnsafePointer(UnsafeRawPointer(sidecar.control.base).assumingMemoryBound(to: UInt64.self)),
            firstPage: firstWord * VolatilityMap.pagesPerWord, stale: stale)
        do { return try Kernel.FaultTable.register(region) } catch {
            throw error.errno == ENOSPC ? .tooManyRegions(limit: VolatileRegion.maxRegions) : .system(error)
        }
    }

    deinit {
        close()
        defer {
            handlerMetadata.deallocate()
            if let z = zeroSource { try? Kernel.unmap(z, length: file.pageSize) }
        }
        // Nothing can be in flight now: the slot, withdrawn at close(), is
        // freed for another mapping.
        if vr_fork_generation() == forkGeneration, let token = file.beginInternalUse() {
            file.releaseSlot(slot)
            file.endUse(token)
        }
        try? Kernel.unmap(mappedBase, length: mappedLength)
    }

    /// Unmaps and withdraws this mapping's votes and pins: they stop
    /// counting at once. Idempotent; safe from any thread. What an
    /// operation of another thread may still touch stays the library's
    /// until deinit: the addresses (empty memory replaces the file's pages;
    /// a purge that listed this mapping before it closed may still change
    /// their protection), and the mapper slot (a vote that passed its range
    /// check before close() may still land in its marks, which no longer
    /// count: the slot is freed for another mapping only at deinit). In a
    /// fork child, an inherited mapping is only unmapped: its slot is the
    /// parent's.
    public func close() {
        guard !closedFlag.exchange(true, ordering: .acquiringAndReleasing) else { return }
        fastSize.store(0, ordering: .sequentiallyConsistent)
        Kernel.FaultTable.unregister(slot: handlerSlot)
        if (try? Kernel.replaceWithEmpty(mappedBase, length: mappedLength)) == nil {
            // Still the file's pages, and still reserved: deinit unmaps them.
            try? Kernel.protect(mappedBase, length: mappedLength, .none)
        }
        // handlerMetadata (coverage, chunks, the pin record) and the zero
        // source stay until deinit: a vote or pin that passed its check
        // before close() may still write the pin record, and a fault already
        // in the handler may still read them (a hostile review saw a pin
        // write freed memory when close() released them here).
        guard vr_fork_generation() == forkGeneration else { return }
        // No stale fill is recorded any more (the region is withdrawn): the
        // file's table takes what is left, punched below or by the next
        // holder of the purge lock in this process.
        handOverStaleFills()
        file.mappings.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
        // The slot lives in the sidecar: withdrawn while the file still has
        // its resources (a file released meanwhile gave up every slot of
        // this process, its liveness description closed).
        guard let token = file.beginInternalUse() else { return }
        defer { file.endUse(token) }
        file.hook(.inOperation(.mappingClose))
        file.withdrawSlot(slot)
        if file.orphanedStaleFills.table.hasRecords { file.tryPunchStaleFills() }
    }

    /// Whether `close()` was called.
    public var isClosed: Bool { closedFlag.load(ordering: .relaxed) }

    /// Whether `close()` began (acquiring: what it replaced is seen).
    var closedFlagIsSet: Bool { closedFlag.load(ordering: .acquiring) }

    @inline(__always)
    func checkUsable() throws(VRangeError) {
        if closedFlag.load(ordering: .relaxed) || file.isClosed { throw .closed }
        if vr_fork_generation() != forkGeneration { throw .inheritedAcrossFork }
    }

    @inline(__always)
    func filePages(offset: Int, length: Int) throws(VRangeError) -> Range<Int> {
        let rel = try geometry.pages(offset: offset, length: length)
        if isPrivate { throw .unsupported("a private mapping neither votes nor pins") }
        return (rel.lowerBound + pages.lowerBound)..<(rel.upperBound + pages.lowerBound)
    }

    // MARK: - Votes and pins

    /// Votes `range` volatile: as far as this mapper is concerned its pages
    /// may be purged (they are, once every shared mapper of them voted, or
    /// the file marked them volatile, and nobody pins them). Replaces this
    /// mapper's pin. No syscall.
    ///
    /// - Throws: a range error, `.closed`, `.inheritedAcrossFork`, or
    ///   `.unsupported` on a private mapping; nothing changes then.
    public func markVolatile(_ range: Range<Int>) throws(VRangeError) {
        try markVolatile(offset: range.lowerBound, length: range.upperBound &- range.lowerBound)  // never traps: see PageGeometry.pages(_:)
    }

    /// Votes `[offset, offset + length)` volatile. See `markVolatile(_:)`.
    public func markVolatile(offset: Int, length: Int) throws(VRangeError) {
        if let p = fastPages(offset: offset, length: length) {
            file.hook(.fastMark(p))
            vote(p)
            return
        }
        try checkUsable()
        vote(try filePages(offset: offset, length: length))
    }

    @inline(__always)
    private func vote(_ p: Range<Int>) {
        file.stampRecency()
        recordPins(p, pinned: false)  // before the vote: the record never claims more than the sidecar
        // A record a peer wrote over blocks every purge of the file while
        // it stays so (see `Sidecar.purgeable`): written again, this vote
        // counts (four loads when nothing changed).
        file.repairSlot(slot, published: slotState, kind: slotKind, pages: pages) { closedFlagIsSet }
        marks.vote(p)
    }

    /// Sets or clears the pages of file run `p` in this process's private
    /// pin record (see `handlerMetadata`): one atomic operation per 64 pages.
    @inline(__always)
    private func recordPins(_ p: Range<Int>, pinned: Bool) {
        var lo = p.lowerBound &- alignedFirstPage
        let hi = p.upperBound &- alignedFirstPage
        let record = UnsafeMutableRawPointer(handlerMetadata + 2).assumingMemoryBound(to: Atomic<UInt64>.self)
        while lo < hi {
            let w = lo &>> 6
            let end = Swift.min(hi, (w &+ 1) &<< 6)
            let n = end &- lo
            let bits = (n == 64 ? ~UInt64(0) : (UInt64(1) &<< UInt64(n)) &- 1) &<< UInt64(lo & 63)
            if pinned {
                record[w].bitwiseOr(bits, ordering: .releasing)
            } else {
                record[w].bitwiseAnd(~bits, ordering: .releasing)
            }
            lo = end
        }
    }

    /// The file pages of a valid range of a usable shared mapping, with one
    /// range check and the fork check (no call); nil sends the caller to
    /// the checks that say what is wrong.
    @inline(__always)
    private func fastPages(offset: Int, length: Int) -> Range<Int>? {
        guard _fastPath(geometry.isValid(offset: offset, length: length, size: fastSize.load(ordering: .relaxed))
                        && vr_fork_generation() == forkGeneration) else { return nil }
        let first = (offset &>> geometry.pageShift) &+ pages.lowerBound
        return first..<(first &+ (length &>> geometry.pageShift))
    }

    /// Pins `range`: none of its pages is purged from now on until this
    /// mapper votes it volatile again (or closes, or dies), whatever the
    /// file and the other mappers say. Waits for a purge in flight.
    ///
    /// - Returns: the exact ranges this mapper lost: purged while it had
    ///   them voted, or purged and not yet repopulated; and pages it pinned
    ///   whose pin another process wrote over in the sidecar and that read
    ///   zero (they may have been purged unseen). They are zero now.
    /// - Throws: a range error, `.closed`, `.inheritedAcrossFork`, or
    ///   `.unsupported` on a private mapping; nothing changes then.
    ///   `.hugePagesUnavailable` as `VolatileFile.markNonVolatile` says.
    ///   `.peerNotResponding` when a purge of another process holds a page
    ///   of `range` locked and made no progress for
    ///   `VolatileFile.peerPatience`: the pin is published (no purge that
    ///   starts later takes the pages, and touching them never raises
    ///   SIGBUS), but whether they survived is unknown: pin again to learn.
    @discardableResult
    public func markNonVolatile(_ range: Range<Int>) throws(VRangeError) -> NonVolatileResult {
        try markNonVolatile(offset: range.lowerBound, length: range.upperBound &- range.lowerBound)  // never traps: see PageGeometry.pages(_:)
    }

    /// Pins `[offset, offset + length)`. See `markNonVolatile(_:)`.
    @discardableResult
    public func markNonVolatile(offset: Int, length: Int) throws(VRangeError) -> NonVolatileResult {
        let p: Range<Int>
        if let fast = fastPages(offset: offset, length: length) {
            file.hook(.fastMark(fast))
            p = fast
        } else {
            try checkUsable()
            p = try filePages(offset: offset, length: length)
        }
        // The handler's stale fills (StaleFills.swift), if the purge lock is
        // free: one load when there are none.
        if _slowPath(staleFills.hasRecords) { drainStaleFills() }
        // Before this pin writes them: pins a peer wrote over (see
        // `pinsWrittenOver`), reported lost.
        let overwritten = pinsWrittenOver(p).flatMap(zeroPages)
        recordPins(p, pinned: true)  // before the pin is published: a touch while it settles is filled
        // A record a peer wrote over is written again (its votes count
        // again); its pins counted all along (a purge asks the OFD byte).
        file.repairSlot(slot, published: slotState, kind: slotKind, pages: pages) { closedFlagIsSet }
        let range = offset..<(offset &+ length)
        let result = try file.unmark(p, party: marks, pin: true, firstPage: pages.lowerBound, range: range)
        if _fastPath(overwritten.isEmpty) { return result }
        let lost = overwritten.map { geometry.bytes(($0.lowerBound - pages.lowerBound)..<($0.upperBound - pages.lowerBound)) }
        return NonVolatileResult(range: range, purgedRanges: VolatileRegion.union(result.purgedRanges, lost))
    }

    /// The pages of file run `p` that this mapping pins by its private
    /// record while its marks in the sidecar read neutral (00): a peer
    /// wrote over them, and a purge may have taken such a page without
    /// leaving a notice (neutral parties get none) and another party
    /// repopulated it since. The marks cannot tell; the page can: the pin
    /// reports those that read all zero lost (`zeroPages`: a purged page
    /// reads zero until written again; DESIGN.md §9: a page this process
    /// pins is never reported intact after it was purged, whatever a peer
    /// wrote). A pin of another thread of this mapping between its private
    /// record and its publication reads the same way (a zero page of it
    /// is reported lost: true of its contents). One load of the record
    /// and, where it has pins, one of the marks, per 32 pages.
    private func pinsWrittenOver(_ p: Range<Int>) -> [Range<Int>] {
        var found: [Range<Int>] = []
        let record = UnsafeMutableRawPointer(handlerMetadata + 2).assumingMemoryBound(to: Atomic<UInt64>.self)
        for w in VolatilityMap.wordsCovering(p) {
            // alignedFirstPage is a multiple of 32: word w is half a record word.
            let rel = w &* VolatilityMap.pagesPerWord &- alignedFirstPage
            var bits = (record[rel &>> 6].load(ordering: .acquiring) &>> UInt64(rel & 32)) & 0xFFFF_FFFF
            if _fastPath(bits == 0) { continue }
            // One bit a page -> the low bit of each two-bit field.
            bits = (bits | bits << 16) & 0x0000_FFFF_0000_FFFF
            bits = (bits | bits << 8) & 0x00FF_00FF_00FF_00FF
            bits = (bits | bits << 4) & 0x0F0F_0F0F_0F0F_0F0F
            bits = (bits | bits << 2) & 0x3333_3333_3333_3333
            bits = (bits | bits << 1) & 0x5555_5555_5555_5555
            let word = marks.words[w].load(ordering: .acquiring)
            let neutral = ~(word | word >> 1) & PartyMap.lowBits
            let bad = bits & neutral & VolatilityMap.lowMask(word: w, pages: p)
            if bad != 0 { VolatilityMap.forEachRun(in: bad, word: w) { found.append($0..<($0 + $1)) } }
        }
        return found
    }

    /// The runs of file run `run` whose pages read all zero here.
    private func zeroPages(_ run: Range<Int>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        let size = file.pageSize
        for page in run {
            let words = UnsafeRawPointer(mappedBase + (page - alignedFirstPage) * size).assumingMemoryBound(to: UInt64.self)
            var zero = true
            for k in 0..<(size / 8) where words[k] != 0 { zero = false; break }
            if !zero { continue }
            if let last = out.last, last.upperBound == page { out[out.count - 1] = last.lowerBound..<(page + 1) } else { out.append(page..<(page + 1)) }
        }
        return out
    }

    // MARK: - Status

    /// This mapper's view of `range`: bytes it has voted volatile (present),
    /// bytes it pins, and bytes it lost (purged since it voted them, or
    /// purged and not repopulated).
    public func status(_ range: Range<Int>? = nil) throws(VRangeError) -> MappingStatus {
        try checkUsable()
        return try file.withUse(.mappingStatus) { () throws(VRangeError) -> MappingStatus in try statusInUse(range) }
    }

    private func statusInUse(_ range: Range<Int>?) throws(VRangeError) -> MappingStatus {
        let range = range ?? 0..<size
        let rel = try geometry.pages(range)
        let p = (rel.lowerBound + pages.lowerBound)..<(rel.upperBound + pages.lowerBound)
        let c = marks.census(p)
        var lostOrPurged = 0
        for w in VolatilityMap.wordsCovering(p) {
            let m = VolatilityMap.lowMask(word: w, pages: p)
            let purged = (file.sidecar.content.words[w].load(ordering: .acquiring) >> 1) & VolatilityMap.lowBits
            lostOrPurged += ((PartyMap.lost(marks.words[w].load(ordering: .acquiring)) | purged) & m).nonzeroBitCount
        }
        return MappingStatus(bytes: range.count, votedBytes: (c.voted - c.lost) << geometry.pageShift,
                             pinnedBytes: c.pinned << geometry.pageShift,
                             lostBytes: lostOrPurged << geometry.pageShift)
    }

    /// Makes the pages of file run `run` (where this mapping shows them)
    /// inaccessible or accessible again (mprotect mechanism only).
    func protect(_ run: Range<Int>, accessible: Bool) {
        if closedFlagIsSet { return }  // (a reservation now: harmless either way)
        let r = run.clamped(to: pages)
        if r.isEmpty { return }
        let start = mappedBase + (r.lowerBound - alignedFirstPage) * file.pageSize
        try? Kernel.protect(start, length: r.count * file.pageSize, accessible ? .readWrite : .none)
    }
}

extension FileMapping {
    /// How a mapping is made.
    public struct Options: Sendable, Equatable {
        /// MAP_PRIVATE: a copy-on-write view that neither votes nor pins,
        /// and keeps every page it covers from being purged while it exists.
        public var privateMapping: Bool
        /// How touching a purged page raises SIGBUS (shared mappings).
        public var faultMechanism: FaultMechanism

        public init(privateMapping: Bool = false, faultMechanism: FaultMechanism = .automatic) {
            self.privateMapping = privateMapping
            self.faultMechanism = faultMechanism
        }
    }
}

/// A mapper's view of its pages.
public struct MappingStatus: Sendable, Equatable {
    public let bytes: Int
    /// Bytes this mapper voted volatile that it has not lost.
    public let votedBytes: Int
    /// Bytes this mapper pins.
    public let pinnedBytes: Int
    /// Bytes purged since this mapper voted them, or purged and not yet
    /// repopulated: a pin reports them.
    public let lostBytes: Int
}

extension VolatileFile {
    /// Maps `range` of the file (default: all of it) into this process.
    ///
    /// - Throws: a range error, `.closed`, `.tooManyMappers` when every
    ///   mapper slot is live (a slot that reads free but whose owner is
    ///   alive is looked at again for at most `VolatileFile.peerPatience`,
    ///   never taken), `.unsupported` when `options` asks for
    ///   userfaultfd and the kernel refuses it, `.system` when mmap fails.
    public func map(_ range: Range<Int>? = nil, options: FileMapping.Options = .init()) throws(VRangeError) -> FileMapping {
        try withUse(.fileMap) { () throws(VRangeError) -> FileMapping in
            try FileMapping(file: self, range: range ?? 0..<size, options: options)
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
