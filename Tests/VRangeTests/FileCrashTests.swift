// Crash safety: a mapper killed (SIGKILL) while it pins pages stops
// counting at the next purge; a process killed in the middle of a purge
// (held there by a debug-build test hook) leaves nothing locked and no
// non-volatile byte lost: whoever waits on its pages finishes or undoes
// its work within the documented bound.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Shared files, crashes", .serialized) struct FileCrashTests {
    @Test func killedPinnerStopsCounting() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let (pinner, voter) = (try Peer(), try Peer())
        for p in [pinner, voter] {
            try p.write("receive\n")
            #expect(try p.readLine() == "ready")
            try p.sendFile(f)
            _ = try p.readLine()
            try p.send("map 1 0 8")
        }
        try f.markVolatile(bytes(0..<8))
        try pinner.send("pin 1 0 4")
        try voter.send("vote 1 0 8")
        #expect(try f.purgeAll() == 4 * page)  // pages 4..<8: the pins hold 0..<4
        #expect(try f.status().sharedMappers == 2)
        pinner.kill()  // SIGKILL, then reaped: its OFD locks are gone
        // Bound: the next purge reclaims the dead slot (one F_OFD_GETLK per slot).
        #expect(try f.purgeAll() == 4 * page)
        #expect(try f.status().sharedMappers == 1)
        #expect(parseRuns(try voter.send("pin 1 0 8")) == [0..<8])
    }

    @Test func deadMapperSlotIsReusedWhenAllAreTaken() throws {
        let f = try VolatileFile(byteCount: 4 * page, options: .init(maxMappers: 2))
        let p = try peers(1, sharing: f)[0]
        try p.send("map 1 0 4")
        try p.send("map 2 0 4")
        #expect(throws: VRangeError.tooManyMappers(limit: 2)) { try f.map() }
        p.kill()
        let m = try f.map()  // the claim reclaims a dead slot when none is free
        #expect(m.slot < 2)
    }

    /// Kills a peer held at `point` of a purge of pages 0..<8 (file-volatile,
    /// page 8..<16 pinned by this process) and checks what survivors see.
    func killMidPurge(at point: String) throws -> (report: [Range<Int>], held: Bool) {
        let f = try VolatileFile(byteCount: 16 * page)
        let m = try f.map()
        for p in 0..<16 { fill(m, page: p, tag: UInt8(p + 1)) }
        try f.markVolatile(bytes(0..<16))
        try m.markNonVolatile(bytes(8..<16))  // pinned: never purged
        try m.markVolatile(bytes(0..<8))
        let purger = try peers(1, sharing: f)[0]
        try purger.send("hold \(point)")
        try purger.write("purge 0 16\n")
        let held = try purger.readLine(context: "purge held at \(point)") == "held"
        #expect(held)
        #expect(f.sidecar.content.census(0..<16).locked > 0, "pages are locked by the held purge")
        #expect(f.sidecar.control.phase != .idle)
        purger.kill()
        // No deadlock: pinning the locked pages waits for the dead purger's
        // lock, finds it free and finishes or undoes its work.
        let start = Kernel.monotonicNanoseconds()
        let report = try m.markNonVolatile(bytes(0..<16))
        let waited = Double(Kernel.monotonicNanoseconds() - start) / 1e6
        print("[killMidPurge \(point)] recovered after \(waited) ms; report \(pageRuns(report))")
        #expect(f.sidecar.content.census(0..<16).locked == 0, "no page left locked")
        #expect(f.sidecar.control.phase == .idle)
        #expect(f.sidecar.control.recoveries == 1)
        for p in 8..<16 { #expect(look(m, page: p, tag: UInt8(p + 1)) == "tag", "non-volatile page \(p) kept") }
        for p in 0..<8 {
            let lost = pageRuns(report).contains { $0.contains(p) }
            #expect(look(m, page: p, tag: UInt8(p + 1)) == (lost ? "zero" : "tag"), "page \(p) reported \(lost ? "lost" : "intact")")
        }
        #expect(try f.purgeAll() == 0)  // everything pinned now
        return (pageRuns(report), held)
    }

    @Test func killedWhileLockingIsRolledBack() throws {
        let r = try killMidPurge(at: "locked")
        #expect(r.report.isEmpty)  // nothing punched yet: the locks are undone
    }

    @Test func killedBeforePunchIsCompleted() throws {
        let r = try killMidPurge(at: "punch")
        #expect(r.report == [0..<8])  // the intent said "punching": completed
    }

    @Test func killedAfterPunchIsCompleted() throws {
        let r = try killMidPurge(at: "punched")
        #expect(r.report == [0..<8])
    }

    @Test func nextPurgeRecoversToo() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        try f.markVolatile(bytes(0..<8))
        let purger = try peers(1, sharing: f)[0]
        try purger.send("hold punch")
        try purger.write("purge 0 8\n")
        #expect(try purger.readLine() == "held")
        purger.kill()
        #expect(try f.purgeAll() == 0)  // the recovery completed the dead purge's run
        #expect(f.sidecar.content.census(0..<8).purged == 8)
        #expect(f.sidecar.control.recoveries == 1)
        #expect(pageRuns(try f.markNonVolatile(bytes(0..<8))) == [0..<8])
    }
}
