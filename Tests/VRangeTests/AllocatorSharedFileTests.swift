// VolatileAllocator with shared-file segments (SegmentSource.sharedFile):
// buffers live in memfds that other mappings and other processes see; the
// allocator's mapping is one mapper of each file, so a purge takes a page
// only when every live mapper voted it (DESIGN.md §1c), and lock() reports
// what was lost as with anonymous segments.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// An allocator of shared-file segments that releases nothing on its own.
func sharedFileAllocator(arenas: Int = 1) throws -> VolatileAllocator {
    try VolatileAllocator(options: .init(source: .sharedFile(), releaseDelay: .seconds(600), arenaCount: arenas))
}

/// Whether `raw` holds the pattern of `tag` (AllocatorSupport) at every byte.
func holdsPattern(_ raw: UnsafeRawBufferPointer, tag: UInt8) -> Bool {
    raw.indices.allSatisfy { raw[$0] == patternByte($0, tag) }
}

@Suite("VolatileAllocator, shared-file segments") struct AllocatorSharedFileTests {
    @Test func hugePagesAndPrivateMappingsAreRefused() {
        #expect(throws: VRangeError.unsupported("a shared-file allocator cannot use huge pages (its spans are single pages)")) {
            _ = try VolatileAllocator(options: .init(source: .sharedFile(.init(hugePages: true))))
        }
        #expect(throws: VRangeError.unsupported("a shared-file allocator needs a shared mapping (a private one neither votes nor pins)")) {
            _ = try VolatileAllocator(options: .init(source: .sharedFile(mapping: .init(privateMapping: true))))
        }
    }

    @Test("every size, locked, unlocked and purged, with no other mapper", arguments: [1, 100, page - 1, page, page + 1, 3 * page + 5, 1 << 20])
    func lockUnlockPurge(size: Int) throws {
        let a = try sharedFileAllocator()
        var b = try a.allocate(byteCount: size)
        let found = b.fileLocation
        let location = try #require(found)
        #expect(location.range.count == size)
        if size >= page { #expect(location.range.lowerBound % page == 0) }
        #expect(location.file.size >= location.range.upperBound)
        fill(&b, tag: 9)
        b.unlock()
        #expect(b.lock().purgedRanges == [])  // nothing purged it
        #expect(b.withUnsafeBytes { holdsPattern($0, tag: 9) })
        b.unlock()
        #expect(purgeEverything(a) >= size)  // the only mapper voted: punched
        let discarded = b.isContentDiscarded
        #expect(discarded)
        let lost = b.lock()
        #expect(lost.purgedRanges == [0..<size])
        #expect(b.withUnsafeBytes { raw in raw.allSatisfy { $0 == 0 } })
        fill(&b, tag: 10)
        #expect(b.withUnsafeBytes { holdsPattern($0, tag: 10) })
        #expect(location.file.punchFailures == 0)
        b.free()
        #expect(a.statistics.liveBuffers == 0)
    }

    @Test("a second mapper sees the bytes, keeps them until it votes, then learns they were purged")
    func secondMapperVotesAndPins() throws {
        let a = try sharedFileAllocator()
        let size = 2 * page + 100
        var b = try a.allocate(byteCount: size)
        let found = b.fileLocation
        let location = try #require(found)
        fill(&b, tag: 3)
        let other = try location.file.map()
        defer { other.close() }
        #expect(holdsPattern(UnsafeRawBufferPointer(rebasing: other.bytes[location.range]), tag: 3))
        // One memfd: a write through the other mapping is the buffer's byte.
        other.bytes[location.range.lowerBound + 5] = 0xEE
        #expect(b.withUnsafeBytes { $0[5] } == 0xEE)
        other.bytes[location.range.lowerBound + 5] = patternByte(5, 3)

        let pages = location.range.lowerBound..<(location.range.lowerBound + 3 * page)
        b.unlock()
        // The other mapper has not voted: no page of the buffer may go.
        _ = purgeEverything(a)
        #expect(try location.file.status(pages).purgedBytes == 0)
        #expect(b.lock().purgedRanges == [])
        #expect(b.withUnsafeBytes { holdsPattern($0, tag: 3) })
        b.unlock()
        // It votes: now every mapper has, and the purge takes all three.
        try other.markVolatile(pages)
        _ = purgeEverything(a)
        #expect(try location.file.status(pages).purgedBytes == 3 * page)
        #expect(b.lock().purgedRanges == [0..<size])
        #expect(b.withUnsafeBytes { raw in raw.allSatisfy { $0 == 0 } })
        // The other mapper lost what it voted, and learns it at its pin.
        #expect(try other.markNonVolatile(pages).purgedRanges == [pages])
        // A pin of the other mapper keeps the pages through the allocator's
        // unlock and purge.
        fill(&b, tag: 4)
        b.unlock()
        _ = purgeEverything(a)
        #expect(b.lock().purgedRanges == [])
        #expect(b.withUnsafeBytes { holdsPattern($0, tag: 4) })
        #expect(location.file.punchFailures == 0)
    }

    @Test("another process maps the buffer's file and reads what the allocator's owner wrote")
    func anotherProcessReadsTheBuffer() throws {
        let a = try sharedFileAllocator()
        var b = try a.allocate(byteCount: 2 * page)
        let found = b.fileLocation
        let location = try #require(found)
        let first = location.range.lowerBound / page
        // The peer's page pattern (PeerSupport), written through the buffer.
        b.withUnsafeMutableBytes { raw in
            for i in stride(from: 0, to: 2 * page, by: 8) {
                let tag = UInt64(i < page ? 21 : 22)
                raw.storeBytes(of: tag &* 0x0101_0101_0101_0101 ^ UInt64(i % page), toByteOffset: i, as: UInt64.self)
            }
        }
        let descriptors = try location.file.inheritableDescriptors()
        let peer = try Peer(inherit: [descriptors.data, descriptors.sidecar])
        Kernel.close(fd: descriptors.data)
        Kernel.close(fd: descriptors.sidecar)
        #expect(try peer.send("adopt 4 5") == "\(location.file.size)")
        _ = try peer.send("map 0 0 \(location.file.size / page)")
        #expect(try peer.send("look 0 \(first) 21") == "tag")
        #expect(try peer.send("look 0 \(first + 1) 22") == "tag")
        // The allocator unlocks and purges; the peer has not voted: kept.
        b.unlock()
        _ = purgeEverything(a)
        #expect(try peer.send("look 0 \(first + 1) 22") == "tag")
        // The peer votes its two pages: the next purge takes them for both.
        _ = try peer.send("vote 0 \(first) \(first + 2)")
        _ = purgeEverything(a)
        #expect(try peer.send("pin 0 \(first) \(first + 2)") == "\(first)-\(first + 2)")
        #expect(try peer.send("look 0 \(first) 21") == "zero")
        #expect(b.lock().purgedRanges == [0..<(2 * page)])
    }
}
