// How a shared file travels and what every process sees: a spawned child
// inheriting the pair, fork(), SCM_RIGHTS, persistence of file marks after
// the marking process exits, eight processes at once, the seals, SIGBUS in
// every library mapping, 32 mappers and the limit.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Shared files, sharing", .serialized) struct FileSharingTests {
    @Test func spawnedChildInheritsThePair() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        fill(m, page: 1, tag: 7)
        let p = try Peer(inherit: [f.descriptors.data, f.descriptors.sidecar])
        #expect(try p.send("adopt 4 5") == "\(4 * page)")
        try p.send("map 1 0 4")
        #expect(try p.send("look 1 1 7") == "tag")
        try p.send("fill 1 2 9")
        #expect(look(m, page: 2, tag: 9) == "tag")
    }

    @Test func socketPassesThePairBothWays() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let p = try peers(1, sharing: f)[0]  // sent over the socket
        try p.send("fvol 0 2")
        try p.send("send")
        try p.write("go\n")
        try p.waitReadable()
        let back = try VolatileFile(receivingFrom: p.socket)
        #expect(back.size == f.size)
        #expect(try back.status().fileVolatileBytes == 2 * page)
        #expect(back.descriptors != f.descriptors)
    }

    @Test func fileMarksPersistAfterTheMarkerExits() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let p = try peers(1, sharing: f)[0]
        try p.send("fvol 2 6")
        try p.write("exit\n")
        let status = p.waitExit()
        #expect(status == 0)
        #expect(try f.status().fileVolatileBytes == 4 * page)
        #expect(try f.purgeAll() == 4 * page)
        // A process that comes later learns of it through the file.
        let q = try peers(1, sharing: f)[0]
        #expect(try q.send("fnonvol 0 8") == "2-6")
    }

    @Test func eightProcessesOnOneFile() throws {
        let n = 8
        let f = try VolatileFile(byteCount: 16 * page)
        let ps = try peers(n, sharing: f)
        for (i, p) in ps.enumerated() { try p.write("map 1 0 16\n"); _ = i }
        for p in ps { #expect(try p.readLine() == "ok userfaultfd") }
        for (i, p) in ps.enumerated() { try p.send("fill 1 \(i) \(i + 1)") }
        // Every process sees every other's writes.
        for p in ps { for i in 0..<n { #expect(try p.send("look 1 \(i) \(i + 1)") == "tag") } }
        // Pages 0..<8 become purgeable with the eighth vote, not before.
        for p in ps.dropLast() { try p.send("vote 1 0 8") }
        #expect(try ps[0].send("purge 0 16") == "0")
        try ps[n - 1].send("vote 1 0 8")
        #expect(try ps[3].send("status").contains("purgeable=8"))
        // All eight pin at once; each learns of the purge separately.
        try ps[0].send("purge 0 16")
        for p in ps { try p.write("pin 1 0 16\n") }
        for p in ps { #expect(try p.readLine() == "ok 0-8") }
        #expect(try f.status().sharedMappers == n)
    }

    @Test func sealsRefuseAPeersTruncate() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let p = try peers(1, sharing: f)[0]
        #expect(try p.send("truncate 0") == "\(EPERM)")
        #expect(try p.send("truncate \(8 * page)") == "\(EPERM)")
        #expect(ftruncate(f.descriptors.sidecar, 0) == -1 && errno == EPERM)
        #expect(try Kernel.seals(fd: f.descriptors.data).isSuperset(of: .fixedSize))
        #expect(try Kernel.fileInfo(fd: f.descriptors.data).size == 4 * page)
    }

    @Test func purgedPageRaisesSIGBUSInAnotherProcess() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let p = try peers(1, sharing: f)[0]
        try p.send("map 1 0 4")
        try p.send("fill 1 0 3")
        try f.markVolatile(bytes(0..<1))
        #expect(try f.purgeAll() == page)
        #expect(try p.send("access 1 0 1") == "purged")
        #expect(try p.send("touch 1 1") == "0")  // a non-volatile page: no fault
        try p.write("touch 1 0\n")
        let status = p.waitExit()
        #expect(status.map { $0 & 0x7f } == SIGBUS, "the peer died of SIGBUS touching a purged page")
        // The access filled the page only while it ran: it is purged again.
        #expect(f.sidecar.content.state(ofPage: 0) == .purged)
    }

    @Test func thirtyTwoMappersThenTheLimit() throws {
        let f = try VolatileFile(byteCount: 32 * page)
        var ms = try (0..<32).map { _ in try f.map() }
        #expect(throws: VRangeError.tooManyMappers(limit: 32)) { try f.map() }
        for m in ms { try m.markVolatile(bytes(0..<32)) }
        #expect(try f.purgeAll() == 32 * page)
        ms.removeLast().close()
        let again = try f.map()
        #expect(try f.status().sharedMappers == 32)
        again.close()
    }

    @Test func forkChildUsesTheInheritedFile() throws {
        let f = try VolatileFile(byteCount: 4 * page)
        let m = try f.map()
        fill(m, page: 0, tag: 5)
        try m.markVolatile(bytes(0..<1))
        let status = forked {
            // The parent's mapping is the parent's: its marks cannot be used
            // here, and say why (also on the fast path of a valid range).
            guard thrown({ () throws(VRangeError) in _ = try m.markNonVolatile(bytes(0..<1)) }) == .inheritedAcrossFork else { return 10 }
            guard thrown({ () throws(VRangeError) in try m.markVolatile(bytes(0..<1)) }) == .inheritedAcrossFork else { return 15 }
            guard let mine = try? f.map() else { return 11 }
            guard look(mine, page: 0, tag: 5) == "tag" else { return 12 }
            guard (try? mine.markVolatile(bytes(0..<1))) != nil else { return 13 }
            // Both mappers voted: the child can purge it.
            guard (try? f.purgeAll()) == page else { return 14 }
            _exit(0)  // dies with its mapping open: the slot must be reclaimed
        }
        #expect(exitCode(status) == 0)
        #expect(pageRuns(try m.markNonVolatile(bytes(0..<1))) == [0..<1])
        // The child's slot died with it: its OFD lock was its own.
        #expect(f.reclaimDeadSlots() == 1)
        #expect(try f.status().sharedMappers == 1)
    }
}

/// The error `body` threw, or nil.
func thrown(_ body: () throws(VRangeError) -> Void) -> VRangeError? {
    do { try body() } catch { return error }
    return nil
}
