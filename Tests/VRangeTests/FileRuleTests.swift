// The purgeability rule of DESIGN.md §1c, cell by cell, with every party in
// its own process: the file's mark (this process) × mapper A's and mapper
// B's state (two peers: neutral, voted, pinned) × a private mapper (a third
// peer). Then every party is told of exactly the purges it had voted for.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Shared files, purgeability rule", .serialized) struct FileRuleTests {
    enum Mark: Int, CaseIterable { case neutral = 0, voted = 1, pinned = 2 }

    struct Cell: CustomStringConvertible {
        let page: Int
        let fileVolatile: Bool
        let a: Mark, b: Mark
        let privateMapped: Bool
        /// DESIGN.md §1c, literally.
        var purgeable: Bool {
            !privateMapped && a != .pinned && b != .pinned && (fileVolatile || (a == .voted && b == .voted))
        }
        var description: String { "page \(page): file \(fileVolatile ? "volatile" : "non-volatile"), A \(a), B \(b), private \(privateMapped)" }
    }

    static let cells: [Cell] = {
        var out: [Cell] = []
        for priv in [false, true] {
            for f in [false, true] {
                for a in Mark.allCases {
                    for b in Mark.allCases {
                        out.append(Cell(page: out.count, fileVolatile: f, a: a, b: b, privateMapped: priv))
                    }
                }
            }
        }
        return out
    }()

    @Test func truthTableAcrossProcesses() throws {
        let n = Self.cells.count  // 36: pages 18..<36 are privately mapped
        let f = try VolatileFile(byteCount: n * page)
        let ps = try peers(3, sharing: f)
        let (a, b, priv) = (ps[0], ps[1], ps[2])
        try a.send("map 1 0 \(n)")
        try b.send("map 1 0 \(n)")
        for c in Self.cells { try a.send("fill 1 \(c.page) \(c.page + 1)") }
        for c in Self.cells {
            if c.fileVolatile { try f.markVolatile(bytes(c.page..<(c.page + 1))) }
            for (peer, mark) in [(a, c.a), (b, c.b)] {
                switch mark {
                case .neutral: break
                case .voted: try peer.send("vote 1 \(c.page) \(c.page + 1)")
                case .pinned: try peer.send("pin 1 \(c.page) \(c.page + 1)")
                }
            }
        }
        #expect(try priv.send("map 1 18 36 private") == "mprotect")
        let expected = Self.cells.filter(\.purgeable).count
        #expect(try f.status().purgeableBytes == expected * page)
        #expect(try f.purgeAll() == expected * page)
        for c in Self.cells {
            let state = f.sidecar.content.state(ofPage: c.page)
            #expect(state == (c.purgeable ? .purged : .nonVolatile), "\(c)")
        }
        #expect(expected == 5)  // (v,v) without the file, and the four unpinned cells of a volatile file

        // Every party that had a purged page volatile is told, separately;
        // the file first (pages are still purged then, so it is told of
        // every purged page), then each mapper of exactly its votes.
        priv.kill()
        let fileReport = Set(pageRuns(try f.markNonVolatile(0..<(n * page))).flatMap { Array($0) })
        #expect(fileReport == Set(Self.cells.filter(\.purgeable).map(\.page)))
        for (peer, which) in [(a, "A"), (b, "B")] {
            let report = Set(parseRuns(try peer.send("pin 1 0 \(n)")).flatMap { Array($0) })
            let voted = Set(Self.cells.filter { $0.purgeable && (which == "A" ? $0.a : $0.b) == .voted }.map(\.page))
            #expect(report == voted, "mapper \(which)")
        }
        // Purged pages read zero; every other page kept its bytes.
        for c in Self.cells {
            #expect(try a.send("look 1 \(c.page) \(c.page + 1)") == (c.purgeable ? "zero" : "tag"), "\(c)")
        }
    }

    @Test func withoutMappersOnlyTheFileMarkCounts() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        try f.markVolatile(bytes(0..<1))
        #expect(try f.purgeAll() == page)
        // A mapper that voted, then closed: its vote is gone with it.
        let m = try f.map()
        try m.markVolatile(bytes(1..<2))
        m.close()
        #expect(try f.purgeAll() == 0)
        #expect(try f.status().sharedMappers == 0)
    }

    @Test func mappersOfOtherPagesDoNotBlockVotes() throws {
        let f = try VolatileFile(byteCount: 64 * page)
        let a = try f.map(bytes(0..<8)), b = try f.map(bytes(40..<64))
        try a.markVolatile(0..<(8 * page))
        // b does not map pages 0..<8: a's votes are every vote there is.
        #expect(try f.purgeAll() == 8 * page)
        try b.markVolatile(bytes(0..<2))
        #expect(try f.purgeAll() == 2 * page)
        #expect(pageRuns(try b.markNonVolatile(bytes(0..<24))) == [0..<2])
    }
}
