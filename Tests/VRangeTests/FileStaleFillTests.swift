// The fault handler's fill of a shared file's page that may have landed
// after a purge's punch (a "stale fill", fault_handler.c,
// handle_shared_page). The handler never punches the file for it: it undoes
// the fill in its own mapping, records the page in the mapping's stale-fill
// table, and the library punches the recorded pages that are still purged
// later, under the purge lock (VolatileFile.punchStaleFills). Until then the
// purged page may be present in the file as zeros: every report (pins,
// marks, accesses) still decides from the page states.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The fault mechanisms a shared mapping can use here.
let fileMechanisms: [FaultMechanism] = userfaultfdAvailable ? [.userfaultfd, .mprotect] : [.mprotect]

@Suite("Shared files, stale fills", .serialized) struct FileStaleFillTests {
    /// Mapper A fills a present page; a purge punches it; A looks again and
    /// finds it purged; mapper B pins it (11 -> 00), and writes; then A's
    /// handler undoes its fill. B's data must survive, there and after the
    /// stale fill is drained (PageProtocol.pml, SPLIT_TOUCH with 2 mappers:
    /// the old handler punched the file's page with MADV_REMOVE here).
    @Test(arguments: fileMechanisms)
    func aFaultsDiscardNeverPunchesAPinnedPage(_ mechanism: FaultMechanism) throws {
        guard hooksAvailable("aFaultsDiscardNeverPunchesAPinnedPage") else { return }
        let f = try VolatileFile(byteCount: 4 * page)
        let a = try f.map(options: .init(faultMechanism: mechanism))
        let b = try f.map(options: .init(faultMechanism: mechanism))
        // Page 0: purged once, then repopulated (present, 00, a hole in the
        // file) and volatile by the file's mark: A's touch faults on it.
        try f.markVolatile(bytes(0..<1))
        #expect(try f.purge(bytes(0..<1)) == page)
        #expect(try b.markNonVolatile(bytes(0..<1)).wasPurged)
        try b.markVolatile(bytes(0..<1))
        #expect(f.sidecar.content.census(0..<1).purged == 0)
        let arg = UInt(bitPattern: Int(bitPattern: a.baseAddress))
        var dataAfterRelease = "", dataAfterDrain = "", purgedBytes = -1, pinnedPurged = false
        try withHooks {
            arm(0, Int32(VR_HOOK_HANDLER_AFTER_FILL), arg: arg, set: Flag.a, waitAny: Flag.b, times: 1)
            arm(1, Int32(VR_HOOK_HANDLER_BEFORE_DISCARD), arg: arg, set: Flag.c, waitAny: Flag.d, times: 1)
            let toucher = TestThread { _ = vr_read_byte(a.baseAddress) }
            defer {
                vr_test_hook_set_flags(Flag.b | Flag.d)
                toucher.join()
            }
            try #require(waitForFlags(Flag.a), "A's fill never happened")
            purgedBytes = try f.purge(bytes(0..<1))   // punches the page A filled
            vr_test_hook_set_flags(Flag.b)
            try #require(waitForFlags(Flag.c), "A's handler never found the page punched")
            pinnedPurged = try b.markNonVolatile(bytes(0..<1)).wasPurged
            fill(b, page: 0, tag: 7)
        }  // releases A (and joins it)
        dataAfterRelease = look(b, page: 0, tag: 7)
        #expect(a.staleFills.hasRecords, "A's handler recorded no stale fill")
        // A's next operations drain its stale fills: the page is pinned
        // now (00), so the drain leaves it alone.
        _ = try a.markNonVolatile(bytes(1..<2))
        _ = try f.purge(bytes(2..<3))
        a.close()
        dataAfterDrain = look(b, page: 0, tag: 7)
        #expect(purgedBytes == page)
        #expect(pinnedPurged)
        #expect(dataAfterRelease == "tag", "B's pinned page after A's handler undid its fill: \(dataAfterRelease)")
        #expect(dataAfterDrain == "tag", "B's pinned page after A's stale fills were drained: \(dataAfterDrain)")
        #expect(f.sidecar.content.census(0..<1).purged == 0)
        #expect(f.sidecar.control.phase == .idle)
    }
}

/// What reads a page that is purged (11) while the file holds it as zeros
/// (a stale fill not yet punched again): each must still say purged.
enum StaleReader: String, CaseIterable, Sendable {
    /// A mapper's pin (markNonVolatile).
    case mappingPin
    /// The file's non-volatile mark.
    case fileMark
    /// An optimistic access that starts on the page (its pre-check).
    case accessBefore
    /// An optimistic access during which the page is purged and filled
    /// with zeros in the file: with userfaultfd no fault happens in it.
    case accessDuring
}

extension FileStaleFillTests {
    struct ReportRow: Sendable, CustomTestStringConvertible {
        let reader: StaleReader
        let mechanism: FaultMechanism
        var testDescription: String { "\(reader.rawValue) × \(mechanism)" }
    }

    static let reportRows: [ReportRow] = StaleReader.allCases.flatMap { r in fileMechanisms.map { ReportRow(reader: r, mechanism: $0) } }

    /// Puts page `p` of `f` in the file again as zeros (as a fill that
    /// landed after the punch leaves it), whatever its state says.
    static func fillWithZeros(_ f: VolatileFile, page p: Int) {
        let zeros = [UInt8](repeating: 0, count: page)
        let n = zeros.withUnsafeBytes { pwrite(f.descriptors.data, $0.baseAddress, page, off_t(p * page)) }
        precondition(n == page, "pwrite: \(n)")
    }

    /// Whether page `p` of `f` is a hole of the data file.
    static func isHole(_ f: VolatileFile, page p: Int) -> Bool {
        lseek(f.descriptors.data, off_t(p * page), 4 /* SEEK_HOLE */) == off_t(p * page)
    }

    /// A page purged (11) but present in the file as zeros is reported
    /// purged by every report: they decide from the page states, never from
    /// a fault (which a present page does not raise).
    @Test(arguments: reportRows)
    func aPurgedPagePresentAsZerosIsReportedPurged(_ row: ReportRow) throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map(options: .init(faultMechanism: row.mechanism))
        fill(m, page: 0, tag: 3)
        try f.markVolatile(bytes(0..<1))
        try m.markVolatile(bytes(0..<1))
        if row.reader != .accessDuring {
            #expect(try f.purge(bytes(0..<1)) == page)
            Self.fillWithZeros(f, page: 0)
            #expect(!Self.isHole(f, page: 0))
            #expect(f.sidecar.content.census(0..<1).purged == 1)
        }
        switch row.reader {
        case .mappingPin:
            #expect(try m.markNonVolatile(bytes(0..<1)).wasPurged)
        case .fileMark:
            #expect(try f.markNonVolatile(bytes(0..<1)).wasPurged)
        case .accessBefore:
            var ran = false
            let r = try m.withVolatileAccess(bytes(0..<1)) { _ in ran = true }
            #expect(!ran)
            guard case .purged = r else { Issue.record("access reported intact"); return }
        case .accessDuring:
            var purgedBytes = 0
            let r = try m.withVolatileAccess(bytes(0..<1)) { buffer -> UInt8 in
                purgedBytes = (try? f.purge(bytes(0..<1))) ?? -1
                Self.fillWithZeros(f, page: 0)
                return buffer[0]
            }
            #expect(purgedBytes == page)
            guard case .purged = r else { Issue.record("access reported intact"); return }
        }
    }

    /// A recorded stale fill of a page still purged is punched again by the
    /// next holder of the purge lock in the process (here: a purge of
    /// another page); one a pin repopulated meanwhile is left alone.
    @Test(arguments: fileMechanisms)
    func staleFillsArePunchedOnlyWhileStillPurged(_ mechanism: FaultMechanism) throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map(options: .init(faultMechanism: mechanism))
        let other = try f.map(options: .init(faultMechanism: mechanism))
        try f.markVolatile(bytes(0..<2))
        #expect(try f.purge(bytes(0..<2)) == 2 * page)
        for p in 0..<2 { Self.fillWithZeros(f, page: p) }
        // As the handler records them (stale_record).
        m.staleFills.record(0)
        m.staleFills.record(1)
        #expect(try other.markNonVolatile(bytes(1..<2)).wasPurged)
        fill(other, page: 1, tag: 9)
        _ = try f.purge(bytes(3..<4))
        #expect(!m.staleFills.hasRecords)
        #expect(Self.isHole(f, page: 0), "a stale fill of a page still purged was not punched")
        #expect(f.sidecar.content.census(0..<1).purged == 1)
        #expect(look(other, page: 1, tag: 9) == "tag")
        #expect(f.sidecar.control.phase == .idle)
    }

    /// A closed mapping's stale fills go to the file, and are punched.
    @Test func aClosedMappingsStaleFillsArePunched() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        try f.markVolatile(bytes(0..<1))
        #expect(try f.purge(bytes(0..<1)) == page)
        Self.fillWithZeros(f, page: 0)
        m.staleFills.record(0)
        m.close()
        if f.orphanedStaleFills.table.hasRecords { _ = try f.purge(bytes(3..<4)) }
        #expect(!f.orphanedStaleFills.table.hasRecords)
        #expect(Self.isHole(f, page: 0))
    }
}
