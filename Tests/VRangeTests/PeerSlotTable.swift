// Issue 18, class 3 (and 5), table test for the mapper slots: what a peer
// writes over this process's slot record or its marks × every public
// operation of this process (PeerTable's nine). Each row: the operation
// returns within the bound with its documented result, never a crash, a
// hang, or a SIGBUS on a page this process pins; afterwards a purge and a pin
// work, no page stays locked, and every page the pin calls intact holds its
// tag. 3 conditions × 9 operations = 27 rows.
//
// Setup of every row (PeerTable's): 8 pages written with tags, but page 3,
// never written (it reads zero); this process's mapping pins pages 0..<4;
// the file marked all 8 volatile (so that only the pins keep 0..<4). The peer's scribble is made through a
// mapping of the sidecar of its own.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

enum SlotCondition: String, CaseIterable, Sendable {
    /// A peer wrote "free" over this mapping's slot state.
    case stateWrittenFree
    /// A peer wrote over the slot's kind and pages (kind none, no pages).
    case fieldsWrittenOver
    /// A peer wrote this mapping's pins neutral (10 -> 00) in its marks.
    case pinsWrittenNeutral
}

@Suite("Peers: slot table (condition × operation)", .serialized) struct PeerSlotTable {
    @Test func rowCount() { #expect(SlotCondition.allCases.count * PeerOperation.allCases.count == 27) }

    @Test(arguments: SlotCondition.allCases, PeerOperation.allCases)
    func operationReturnsWithItsDocumentedResult(_ condition: SlotCondition, _ operation: PeerOperation) throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let m = try f.map()
        for p in 0..<8 where p != 3 { fill(m, page: p, tag: UInt8(p + 1)) }
        try m.markNonVolatile(bytes(0..<4))
        try f.markVolatile(bytes(0..<8))
        let side = try PeerBoundTests.otherMappingOfTheSidecar(f)
        let record = side + SidecarLayout.slotTableOffset + m.slot * SidecarLayout.slotBytes
        switch condition {
        case .stateWrittenFree:
            record.storeBytes(of: UInt64(0), as: UInt64.self)
        case .fieldsWrittenOver:
            for k in 1...3 { record.storeBytes(of: UInt64(0), toByteOffset: 8 * k, as: UInt64.self) }
        case .pinsWrittenNeutral:
            (side + f.sidecar.marksBytes(ofSlot: m.slot).lowerBound).storeBytes(of: UInt64(0), as: UInt64.self)
        }

        let outcome = Mutex<String>("not run")
        let bound = Double(VolatileFile.peerPatience.components.seconds) + 15
        let returned = finishes(within: bound) {
            let text: String
            do throws(VRangeError) {
                text = try PeerTable.run(operation, f, m)
            } catch {
                text = "threw \(error)"
            }
            outcome.withLock { $0 = text }
        }
        let result = outcome.withLock { $0 }
        #expect(returned, "\(condition) × \(operation): returned within \(bound) s")
        #expect(Self.documented(condition, operation, result), "\(condition) × \(operation): \(result)")

        if operation == .close { return }
        #expect(throws: Never.self) { try f.purgeAll() }
        #expect(f.sidecar.content.census(0..<8).locked == 0, "\(condition) × \(operation): no page left locked")
        #expect(f.sidecar.slots.view(m.slot)?.phase == .live || operation != .pin,
                "\(condition) × \(operation): the pin wrote the slot record again")
        let report = try m.markNonVolatile(bytes(0..<8))
        var lost = pageRuns(report)
        if result.hasPrefix("lost ") {
            for part in result.dropFirst(5).split(separator: ",") {
                let ends = part.split(separator: "-").compactMap { Int($0) }
                if ends.count == 2 { lost.append(ends[0]..<ends[1]) }
            }
        }
        for p in 0..<8 where !lost.contains(where: { $0.contains(p) }) {
            #expect(look(m, page: p, tag: UInt8(p + 1)) == (p == 3 ? "zero" : "tag"),
                    "\(condition) × \(operation): page \(p) reported intact")
        }
        m.close()
        f.close()
    }

    /// The documented result of each row.
    static func documented(_ condition: SlotCondition, _ operation: PeerOperation, _ result: String) -> Bool {
        let expected: String
        switch (operation, condition) {
        // Pins written neutral no longer count: all 8 pages are purged (a
        // touch of a pinned one is filled, the next pin reports it).
        case (.purge, .pinsWrittenNeutral): expected = "purged 8"
        // The pins count whatever the record says (AliveSlots: the OFD
        // byte is held): 4..<8 are purged.
        case (.purge, _): expected = "purged 4"
        // Pins written neutral: a pinned page that reads zero (page 3,
        // never written) is reported lost; the others hold their tags.
        case (.pin, .pinsWrittenNeutral): expected = "lost 3-4"
        case (.pin, _), (.fileUnmark, _): expected = "lost "
        case (.access, _): expected = "intact"
        case (.markVolatile, _), (.vote, _): expected = "ok"
        case (.touchPinned, _): expected = "touched 6"  // tags 1+2+3, first bytes; page 3 never written
        case (.map, _): expected = "mapped"
        case (.close, _): expected = "closed"
        }
        return result == expected
    }
}
