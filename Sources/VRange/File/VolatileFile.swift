// VolatileFile: fvrange on a shared memfd (DESIGN.md §1b). A data memfd plus
// its sidecar memfd, both sealed against resizing. Creation, adoption,
// file-level marks, status and closing; purging, mapper slots, sharing and
// the purger protocol live in the extensions beside this file.
import CVRange
import Synchronization

/// A memfd of re-creatable data that several processes share, with a
/// sidecar holding its volatility state. Marks made through the file
/// (`markVolatile`) are persistent: they stay until someone marks the pages
/// non-volatile, whichever process made them and whether or not it is still
/// running. Each process maps the file itself (`map()`); a mapping votes and
/// pins (DESIGN.md §1c). A page is purged with `fallocate(PUNCH_HOLE)`,
/// which drops it for every process at once.
///
/// Thread-safe, `close()` included: an operation in flight on another
/// thread when `close()` is called finishes on descriptors and memory that
/// are still the file's (the last one to end closes them); every call that
/// starts after `close()` throws `.closed`.
/// Ranges are byte offsets in the file, aligned to `pageSize`.
public final class VolatileFile: @unchecked Sendable {
    /// The file's size in bytes (a whole number of pages).
    public let size: Int
    /// The unit of every range: the system page size, or the huge-page size.
    public let pageSize: Int
    /// Whether the data lives in huge pages (MFD_HUGETLB).
    public let isHugePageBacked: Bool
    /// How many mappings may exist at once, across all processes.
    public let maxMappers: Int
    /// The two descriptors, owned by this object: closed by `close()`, or,
    /// when an operation of another thread is in flight then, as soon as
    /// the last one ends.
    public let descriptors: SharedFileDescriptors

    let sidecar: Sidecar
    let geometry: PageGeometry
    let state: Locked<ProcessState>
    /// Serializes this process's purges (the OFD lock serializes processes').
    let purgeMutex = Locked<Void>(())
    /// Serializes this process's claims and reclaims of mapper slots.
    let slotMutex = Locked<Void>(())
    /// The at-fork entry of this file (vr_files.c): its mutexes for the
    /// handlers, and `uses` (FileLifecycle.swift).
    let forkEntry: OpaquePointer
    /// Closed and released bits, and the count of operations in flight.
    let uses: UnsafeMutablePointer<Atomic<UInt64>>
    /// `size` until `close()` begins, then 0: the marks' one range check
    /// also turns away a closed file.
    let fastSize: Atomic<Int>
    let lastMarkedVolatile = Atomic<UInt64>(0)
    let priorityRaw: Atomic<Int>
    let punchFailureCount = Atomic<Int>(0)
    let mappings = Locked<[ObjectIdentifier: WeakMapping]>([:])
    /// Stale fills that closed mappings left (file pages; StaleFills.swift).
    let orphanedStaleFills = OwnedStaleFillTable()
    let sidecarLength: Int
    #if DEBUG
    /// Test-only interleaving hook (debug builds): see FileTestHooks.swift.
    let testHook = FileTestHookSlot()
    #endif

    var layout: SidecarLayout { sidecar.layout }
    var pageCount: Int { sidecar.layout.pageCount }

    /// How many punch-holes failed (the pages stayed, and were reported
    /// intact). Should stay 0.
    public var punchFailures: Int { punchFailureCount.load(ordering: .relaxed) }

    /// The file's class for a `Purger` (this process's view).
    public var purgePriority: PurgePriority {
        get { PurgePriority(rawValue: priorityRaw.load(ordering: .relaxed)) ?? .normal }
        set { priorityRaw.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// Creates a file of `byteCount` bytes (rounded up to whole pages), all
    /// non-volatile and zero, with a sidecar for up to `options.maxMappers`
    /// mappings at once.
    ///
    /// - Throws: `.invalidSize`; `.hugePagesUnavailable` when huge pages
    ///   were asked for and the host has none (or too few) reserved;
    ///   `.system` when a memfd cannot be made, sized or sealed
    ///   (memfd_create, ftruncate, F_ADD_SEALS).
    public convenience init(byteCount: Int, options: Options = Options()) throws(VRangeError) {
        guard options.maxMappers >= 1, options.maxMappers <= SidecarLayout.maxSlots else {
            throw .unsupported("maxMappers must be within 1...\(SidecarLayout.maxSlots)")
        }
        var opened: [Int32] = []
        // Closes what was opened, once: an error thrown through `fail` inside
        // the `do` passes through it again in the `catch` (closing twice
        // would close a descriptor another thread just got).
        func fail(_ e: VRangeError) -> VRangeError {
            for fd in opened { Kernel.close(fd: fd) }
            opened.removeAll()
            return e
        }
        do {
            let (data, _) = try Kernel.sealableMemfd(name: options.name, hugePages: options.hugePages)
            opened.append(data)
            let info = try Kernel.fileInfo(fd: data)
            let pageSize = options.hugePages ? info.blockSize : Kernel.pageSize
            let size: Int
            do { size = try PageGeometry.roundedSize(byteCount, pageSize: pageSize) } catch { throw fail(error) }
            guard size / pageSize <= SidecarLayout.maxPageCount,
                  let layout = SidecarLayout(pageSize: pageSize, pageCount: size / pageSize, slotCount: options.maxMappers)
            else { throw fail(.invalidSize(byteCount)) }
            do { try Kernel.truncate(fd: data, length: size) } catch {
                if options.hugePages { throw fail(.hugePagesUnavailable("ftruncate of a huge-page memfd failed: \(error)")) }
                throw fail(.system(error))
            }
            if options.hugePages {
                // Populate every page: a registered mapping must never find a
                // non-volatile page missing (UFFDIO_ZEROPAGE cannot fill huge pages).
                do { try Kernel.allocate(fd: data, offset: 0, length: size) } catch {
                    throw fail(.hugePagesUnavailable(Self.hugePageReport(needed: size / pageSize, error: error)))
                }
            }
            try Kernel.addSeals(fd: data, .fixedSize)
            let (side, _) = try Kernel.sealableMemfd(name: options.name + ".vrange", hugePages: false)
            opened.append(side)
            try Kernel.truncate(fd: side, length: layout.totalSize)
            let header = SidecarHeader(layout: layout, dataInode: info.inode, dataDevice: info.device,
                                       hugePages: options.hugePages)
            let encoded = UnsafeMutableRawBufferPointer.allocate(byteCount: SidecarLayout.headerBytes, alignment: 8)
            defer { encoded.deallocate() }
            encoded.copyBytes(from: header.encoded())
            try Kernel.write(fd: side, UnsafeRawBufferPointer(encoded), at: 0)
            try Kernel.addSeals(fd: side, .fixedSize)
            try self.init(adopting: SharedFileDescriptors(data: data, sidecar: side), priority: options.purgePriority)
        } catch let e as VRangeError {
            throw fail(e)
        } catch {
            throw fail(.system(error as! SystemError))
        }
    }

    /// Adopts a pair made by `VolatileFile(byteCount:)` in this or another
    /// process (inherited, passed to a spawned child, or received over a
    /// socket), after validating everything about it. On success this
    /// object owns the descriptors; on failure they are left open and
    /// untouched, and nothing was mapped.
    ///
    /// - Throws: `.invalidSharedFile` with what is wrong (bad descriptor, not
    ///   a sealed memfd, wrong magic/version/checksum, inconsistent header,
    ///   sizes or identity); `.system` when the sidecar cannot be mapped or
    ///   re-opened (`/proc/self/fd` is needed).
    public convenience init(adopting descriptors: SharedFileDescriptors) throws(VRangeError) {
        try self.init(adopting: descriptors, priority: .normal)
    }

    init(adopting descriptors: SharedFileDescriptors, priority: PurgePriority) throws(VRangeError) {
        let pair = try SidecarValidation.validate(data: descriptors.data, sidecar: descriptors.sidecar)
        let layout = pair.layout
        let base: UnsafeMutableRawPointer
        do { base = try Kernel.mapFile(fd: descriptors.sidecar, length: layout.totalSize, offset: 0) } catch {
            throw .system(error)
        }
        let liveness: Liveness
        do { liveness = try Liveness(sidecar: descriptors.sidecar) } catch {
            try? Kernel.unmap(base, length: layout.totalSize)
            throw .system(error)
        }
        guard let entry = vr_file_fork_entry_new() else {
            liveness.close()
            try? Kernel.unmap(base, length: layout.totalSize)
            throw .system(SystemError(call: "malloc", errno: ENOMEM))
        }
        self.forkEntry = entry
        self.uses = UnsafeMutableRawPointer(vr_file_fork_uses(entry)).assumingMemoryBound(to: Atomic<UInt64>.self)
        self.sidecar = Sidecar(layout: layout, base: base)
        self.sidecarLength = layout.totalSize
        self.size = layout.dataSize
        self.pageSize = layout.pageSize
        self.isHugePageBacked = pair.hugePages
        self.maxMappers = layout.slotCount
        self.descriptors = descriptors
        self.geometry = PageGeometry(size: layout.dataSize, pageSize: layout.pageSize)
        self.state = Locked(ProcessState(liveness: liveness))
        self.priorityRaw = Atomic(priority.rawValue)
        self.fastSize = Atomic(layout.dataSize)
        linkForFork()
    }

    deinit {
        close()
        // Nothing can be in flight now (an operation holds a reference): the
        // resources were released by close(), unless a use was never ended
        // (a bug): release them now regardless, then give back the
        // sidecar's addresses.
        let old = uses.pointee.bitwiseOr(Self.closedBit | Self.releasedBit, ordering: .acquiringAndReleasing).oldValue
        if old & Self.releasedBit == 0 { releaseResources() }
        try? Kernel.unmap(sidecar.base, length: sidecarLength)
        vr_file_fork_unregister(forkEntry)
    }

    /// Closes every mapping this object made, then the file: every later
    /// call throws `.closed`. The sidecar is unmapped (its addresses stay
    /// reserved until deinit) and both descriptors are closed at once, or,
    /// when an operation of another thread is in flight (a purge from a
    /// `Purger`'s thread, say), as soon as the last one ends. Idempotent;
    /// safe from any thread. The file lives on in other processes that hold
    /// it; its marks stay in the sidecar.
    public func close() {
        guard let token = beginInternalUse() else { return }
        defer { endUse(token) }
        let old = uses.pointee.bitwiseOr(Self.closedBit, ordering: .acquiringAndReleasing).oldValue
        if old & Self.closedBit != 0 { return }
        fastSize.store(0, ordering: .sequentiallyConsistent)
        let open = mappings.withLock { m in m.values.compactMap(\.mapping) }
        for m in open { m.close() }
    }

    /// Whether `close()` was called.
    public var isClosed: Bool { uses.pointee.load(ordering: .relaxed) & Self.closedBit != 0 }

    @inline(__always)
    func checkOpen() throws(VRangeError) {
        if isClosed { throw .closed }
    }

    /// This process's liveness description (re-opened in a fork child).
    func processState() throws(VRangeError) -> ProcessState {
        do {
            return try state.withLock { s throws(SystemError) -> ProcessState in
                if s.liveness.isStale { s = ProcessState(liveness: try Liveness(sidecar: descriptors.sidecar)) }
                return s
            }
        } catch { throw .system(error) }
    }

    @inline(__always)
    func stampRecency() {
        let now = RecencyClock.now
        if lastMarkedVolatile.load(ordering: .relaxed) != now { lastMarkedVolatile.store(now, ordering: .relaxed) }
    }

    // MARK: - fvrange

    /// Marks `range` volatile for the file itself: its pages may be purged
    /// (unless a mapper pins them or a private mapping covers them) until
    /// someone marks them non-volatile through the file. Persistent: the mark
    /// lives in the sidecar and survives this process. No syscall.
    ///
    /// - Throws: a range error or `.closed`; nothing changes then.
    public func markVolatile(_ range: Range<Int>) throws(VRangeError) {
        let pages = try checkedPages(range)
        stampRecency()
        sidecar.fileMarks.vote(pages)
    }

    /// Marks `range` non-volatile for the file. Waits for a purge in flight
    /// on its pages. Does not stop mappers that all voted a page volatile
    /// from having it purged (only a mapper's pin does, DESIGN.md §1c).
    ///
    /// - Returns: the exact ranges purged since the file marked them
    ///   volatile (or purged and not yet repopulated by anyone), now zero.
    /// - Throws: a range error or `.closed`; nothing changes then.
    ///   `.hugePagesUnavailable` (huge-page files) when a purged page cannot
    ///   be allocated again: the marks are made, the pages that could not be
    ///   allocated stay purged (a touch raises SIGBUS), and every loss stays
    ///   to be reported by the next `markNonVolatile` of the range.
    ///   `.peerNotResponding` when a purge of another process holds a page
    ///   of `range` locked and made no progress for `peerPatience`: the
    ///   range is non-volatile for the file by then, but what was lost is
    ///   unknown; mark it again to learn.
    @discardableResult
    public func markNonVolatile(_ range: Range<Int>) throws(VRangeError) -> NonVolatileResult {
        let pages = try checkedPages(range)
        return try unmark(pages, party: sidecar.fileMarks, pin: false, firstPage: 0, range: range)
    }

    /// The pages of `range` of an open file: one range check inline; the
    /// checks that say what is wrong otherwise.
    @inline(__always)
    private func checkedPages(_ range: Range<Int>) throws(VRangeError) -> Range<Int> {
        let length = range.upperBound &- range.lowerBound
        if _fastPath(geometry.isValid(offset: range.lowerBound, length: length, size: fastSize.load(ordering: .relaxed))) {
            return (range.lowerBound &>> geometry.pageShift)..<(range.upperBound &>> geometry.pageShift)
        }
        try checkOpen()
        return try geometry.pages(range)
    }

    /// A non-volatile mark (file-level, or a mapper's pin) with the fast
    /// path of a range within one map word: publish the marks, then one
    /// sequentially consistent load of the page states (the purger locks,
    /// then reads the marks: one of the two sees the other), then, when that
    /// load finds nothing locked or purged, one more look at the marks for a
    /// notice left meanwhile.
    ///
    /// Both kinds publish 10 first: a mapper's pin for good, the file a
    /// transient "unmark in flight" that the rule reads as not volatile and
    /// that `pin: false` turns into 00 at the end. A purge that read the rule
    /// before the publication may still punch the page; it leaves a notice
    /// (10 -> 11) that the end of the mark takes (PartyMap), so the mark is
    /// told even when another party repopulates the page first.
    @inline(__always)
    func unmark(_ pages: Range<Int>, party: PartyMap, pin: Bool, firstPage: Int, range: Range<Int>) throws(VRangeError) -> NonVolatileResult {
        let w = pages.lowerBound &>> 5
        guard (pages.upperBound &- 1) &>> 5 == w else {
            return try settle(pages, party: party, pin: pin, firstPage: firstPage, range: range)
        }
        let m = VolatilityMap.oneWordMask(first: pages.lowerBound, end: pages.upperBound)
        var lost = party.settle(word: w, mask: m, pin: true)
        hook(.publishedOneWord(pages))
        let content = sidecar.content.words[w].load(ordering: .sequentiallyConsistent)
        if (content >> 1) & m == 0 {
            // Nothing locked or purged now. A purge that read the rule just
            // before the publication may still have punched the page and
            // left its notice (10 -> 11) after the settle above, and another
            // party may have repopulated the page before this load: the
            // notice precedes the purge's release, which precedes the
            // repopulation this load read, so a second look at the marks
            // sees it. Take it (the file's 10 -> 00 happens here too); one
            // plain load when there is none.
            lost |= party.settle(word: w, mask: m, pin: pin)
            if lost == 0 { return NonVolatileResult(intact: range) }
        }
        // The marks are published (and the notices consumed): settle the pages.
        let rest: NonVolatileResult
        do { rest = try settle(pages, party: party, pin: pin, firstPage: firstPage, range: range) } catch {
            restoreNotices(lost, word: w, party: party)
            throw error
        }
        if lost == 0 { return rest }
        var runs: [Range<Int>] = []
        VolatilityMap.forEachRun(in: lost, word: w) { runs.append(($0 - firstPage)..<($0 - firstPage + $1)) }
        let merged = VolatileRegion.union(runs, rest.purgedRanges.map {
            ($0.lowerBound >> geometry.pageShift)..<($0.upperBound >> geometry.pageShift)
        })
        return NonVolatileResult(range: range, purgedRanges: merged.map { geometry.bytes($0) })
    }

    /// The party's half of the pin/purge handshake, and the repopulation of
    /// purged pages: `party` moves `pages` to 10 (see `unmark`), then the
    /// content map is re-read; purged pages become present (zero) and locked
    /// ones are waited for; then the notices left meanwhile are taken, and
    /// the file's marks end neutral (`pin: false`). Ranges in the result are
    /// relative to `firstPage`.
    ///
    /// A huge-page file whose purged page cannot be allocated again throws
    /// `.hugePagesUnavailable`: the page stays purged, and every notice
    /// taken (and every page repopulated) is given back to the party as a
    /// notice, so that the next mark reports them.
    func settle(_ pages: Range<Int>, party: PartyMap, pin: Bool, firstPage: Int, range: Range<Int>) throws(VRangeError) -> NonVolatileResult {
        let token = try beginUse()
        defer { endUse(token) }
        hook(.inOperation(party.words == sidecar.fileMarks.words ? .fileMarkNonVolatile : .mappingMarkNonVolatile))
        var lostRuns: [Range<Int>] = []
        collectNotices(pages, party: party, pin: true, into: &lostRuns)
        hook(.published(pages))
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        var purged: [Range<Int>] = []
        func giveBack(_ error: VRangeError) -> VRangeError {
            for run in lostRuns + purged { restoreNotices(run, party: party) }
            return error
        }
        do { purged = try repopulate(pages, party: party) } catch { throw giveBack(error) }
        // Every purge that missed the publication has ended (its pages were
        // waited for): its notices are in place. Take them and publish the
        // marks again. A party holding a notice (11) reads as voted, so a
        // purge may have taken the page once more meanwhile: repopulate and
        // look again, until a look finds no notice (then no purge that read
        // the party as voted is left in flight).
        while true {
            var late: [Range<Int>] = []
            collectNotices(pages, party: party, pin: pin, into: &late)
            if late.isEmpty { break }
            lostRuns = VolatileRegion.union(lostRuns, late)
            for run in late {
                do { purged += try repopulate(run, party: party) } catch { throw giveBack(error) }
            }
        }
        let all = lostRuns.isEmpty ? purged : VolatileRegion.union(lostRuns, purged)
        if all.isEmpty { return NonVolatileResult(intact: range) }
        return NonVolatileResult(range: range, purgedRanges: all.map {
            geometry.bytes(($0.lowerBound - firstPage)..<($0.upperBound - firstPage))
        })
    }

    /// Moves `party`'s marks of `pages` to pinned (or neutral) and appends
    /// the runs that carried a purge notice.
    private func collectNotices(_ pages: Range<Int>, party: PartyMap, pin: Bool, into runs: inout [Range<Int>]) {
        var coalescer = RunCoalescer()
        for w in VolatilityMap.wordsCovering(pages) {
            let lost = party.settle(word: w, mask: VolatilityMap.lowMask(word: w, pages: pages), pin: pin)
            VolatilityMap.forEachRun(in: lost, word: w) { coalescer.add($0, $1) { runs.append($0) } }
        }
        coalescer.flush { runs.append($0) }
    }

    /// Gives `party` a purge notice again for every page of `run` (or of the
    /// low bits `mask` of word `w`): a mark that failed half way leaves what
    /// it learnt for the next one.
    private func restoreNotices(_ run: Range<Int>, party: PartyMap) {
        for w in VolatilityMap.wordsCovering(run) {
            party.notePurge(word: w, mask: VolatilityMap.lowMask(word: w, pages: run))
        }
    }

    private func restoreNotices(_ mask: UInt64, word w: Int, party: PartyMap) {
        if mask != 0 { party.notePurge(word: w, mask: mask) }
    }

    /// Waits out the locked pages of `pages` (boundedly: see
    /// `waitForLockedPage`) and makes the purged ones present (zero);
    /// returns the runs it found purged.
    private func repopulate(_ pages: Range<Int>, party: PartyMap) throws(VRangeError) -> [Range<Int>] {
        if isHugePageBacked { return try repopulateHugePages(pages, party: party) }
        var purged: [Range<Int>] = []
        try markPresent(pages, purged: { purged.append($0) })
        return purged
    }

    /// Huge-page files: a purged page becomes present only once it is
    /// allocated in the file again (a registered mapping must never find a
    /// non-volatile page missing: the handler cannot fill it from an empty
    /// pool). Under the purge lock (so that no waiter takes the page locked
    /// here for an orphan), each purged page is locked (11 -> 10),
    /// allocated, and released present (00); one that cannot be allocated
    /// is released purged again (11) and the call throws
    /// `.hugePagesUnavailable`. Purges in flight are waited out first,
    /// outside the lock (they hold it).
    private func repopulateHugePages(_ pages: Range<Int>, party: PartyMap) throws(VRangeError) -> [Range<Int>] {
        var purged: [Range<Int>] = []
        var wait = LockWait()
        var failure: SystemError?
        while true {
            while sidecar.content.census(pages).locked > 0 { try waitForLockedPage(&wait, pages: pages) }
            let left = try withPurgeLock { () -> Int in
                for w in VolatilityMap.wordsCovering(pages) where failure == nil {
                    let locked = lock(word: w, purged: VolatilityMap.lowMask(word: w, pages: pages))
                    VolatilityMap.forEachRun(in: locked, word: w) { first, count in
                        let run = first..<(first + count)
                        if failure == nil {
                            do throws(SystemError) {
                                try allocate(run)
                                sidecar.content.release(run, to: .nonVolatile)
                                purged.append(run)
                                return
                            } catch { failure = error }
                        }
                        sidecar.content.release(run, to: .purged)
                    }
                }
                let c = sidecar.content.census(pages)
                return c.purged + c.locked
            }
            if let failure {
                // The pages repopulated here are lost to the party too: the
                // next mark reports them.
                for run in purged { restoreNotices(run, party: party) }
                throw .hugePagesUnavailable(Self.hugePageReport(needed: pages.count, error: failure))
            }
            if left == 0 { break }
            Kernel.yield()  // a page the fault handler holds for a moment
        }
        return VolatileRegion.union(purged, [])
    }

    /// Allocates the pages of `run` in the data file (fallocate): a huge
    /// page from the pool for each.
    private func allocate(_ run: Range<Int>) throws(SystemError) {
        let bytes = geometry.bytes(run)
        try Kernel.allocate(fd: descriptors.data, offset: bytes.lowerBound, length: bytes.count)
    }

    // MARK: - Status

    /// A snapshot of `range` (default: the whole file): bytes the file marked
    /// volatile and still present, bytes purged and not yet repopulated, and
    /// bytes purgeable right now under the rule of DESIGN.md §1c.
    public func status(_ range: Range<Int>? = nil) throws(VRangeError) -> FileStatus {
        try withUse(.fileStatus) { () throws(VRangeError) -> FileStatus in try statusInUse(range) }
    }

    private func statusInUse(_ range: Range<Int>?) throws(VRangeError) -> FileStatus {
        let range = range ?? 0..<size
        let pages = try geometry.pages(range)
        let c = sidecar.content.census(pages)
        let marks = sidecar.fileMarks.census(pages)
        let present = pages.count - c.purged - c.locked
        let alive = AliveSlots(self)
        let slots = sidecar.slots.census(alive: alive.callAsFunction)
        var fileVolatilePresent = 0
        for w in VolatilityMap.wordsCovering(pages) {
            let m = VolatilityMap.lowMask(word: w, pages: pages)
            let presentBits = VolatilityMap.pages(in: sidecar.content.words[w].load(ordering: .acquiring), .nonVolatile)
            fileVolatilePresent += (PartyMap.voted(sidecar.fileMarks.words[w].load(ordering: .acquiring)) & presentBits & m).nonzeroBitCount
        }
        _ = marks
        return FileStatus(
            bytes: range.count, fileVolatileBytes: fileVolatilePresent << geometry.pageShift,
            purgedBytes: (c.purged + c.locked) << geometry.pageShift,
            purgeableBytes: sidecar.purgeableCount(pages, alive: alive) << geometry.pageShift,
            presentBytes: present << geometry.pageShift,
            sharedMappers: slots.shared, privateMappers: slots.privateMappings)
    }

    /// Bytes of sidecar for this file: `sidecarBytes` in all (its size), and
    /// what is resident with `mappers` live mappings (tmpfs allocates a page
    /// on first touch; a freed slot's marks are punched out).
    public var sidecarBytes: Int { layout.totalSize }

    /// Sidecar bytes in memory when `mappers` mappings are live (`mappers`
    /// is clamped to 0...maxMappers).
    public func metadataBytes(mappers: Int) -> Int { layout.residentBytes(mappers: mappers) }
}

/// The pair of descriptors a `VolatileFile` is made of.
public struct SharedFileDescriptors: Sendable, Hashable {
    /// The data memfd.
    public var data: Int32
    /// The sidecar memfd.
    public var sidecar: Int32

    public init(data: Int32, sidecar: Int32) {
        self.data = data
        self.sidecar = sidecar
    }
}

/// A snapshot of a shared file's pages.
public struct FileStatus: Sendable, Equatable {
    /// Bytes covered.
    public let bytes: Int
    /// Bytes the file marked volatile (fvrange) that are still present.
    public let fileVolatileBytes: Int
    /// Bytes purged and not yet repopulated by a non-volatile mark (including
    /// bytes a purge holds locked at this instant).
    public let purgedBytes: Int
    /// Present bytes that a purge would take now (DESIGN.md §1c).
    public let purgeableBytes: Int
    /// Bytes not purged.
    public let presentBytes: Int
    /// Live shared mappings, in every process (of the whole file).
    public let sharedMappers: Int
    /// Live private mappings, in every process (of the whole file).
    public let privateMappers: Int
}

extension VolatileFile {
    /// How a file is created.
    public struct Options: Sendable, Equatable {
        /// Back the data with huge pages (MFD_HUGETLB): the page size, and
        /// the unit of ranges and purges, becomes the huge-page size.
        public var hugePages: Bool
        /// Mappings that may exist at once, across all processes (1...1024).
        public var maxMappers: Int
        /// The memfds' names (seen in /proc/PID/fd and /proc/PID/maps).
        public var name: String
        /// The file's class for a `Purger` in this process.
        public var purgePriority: PurgePriority

        public init(hugePages: Bool = false, maxMappers: Int = 32, name: String = "vrange",
                    purgePriority: PurgePriority = .normal) {
            self.hugePages = hugePages
            self.maxMappers = maxMappers
            self.name = name
            self.purgePriority = purgePriority
        }
    }

    static func hugePageReport(needed: Int, error: SystemError) -> String {
        "\(needed) huge page(s) needed; the pool has \(hugePagesFree.map(String.init) ?? "unknown") free "
            + "(/proc/sys/vm/nr_hugepages; \(error))"
    }

    /// HugePages_Free of /proc/meminfo.
    static var hugePagesFree: Int? {
        guard let text = Kernel.readSmallFile("/proc/meminfo") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("HugePages_Free:") {
            return Int(line.split(separator: " ").last ?? "")
        }
        return nil
    }
}

/// A weak reference to a mapping, for the file's registry.
struct WeakMapping {
    weak var mapping: FileMapping?
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
