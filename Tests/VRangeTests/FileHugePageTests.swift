// Huge-page backed files (MFD_HUGETLB): the purge unit is a huge page. This
// host reserves none by default; as root the test reserves a few for itself
// (vm.nr_hugepages) and puts the old value back. Without root and without
// reserved huge pages it checks the typed error instead, and says so.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Shared files, huge pages", .serialized) struct FileHugePageTests {
    static let path = "/proc/sys/vm/nr_hugepages"

    static func readInt(_ p: String) -> Int? {
        Kernel.readSmallFile(p).flatMap { Int($0.split(separator: "\n").first ?? "") }
    }

    static func write(_ p: String, _ v: Int) -> Bool {
        let fd = open(p, O_WRONLY | O_CLOEXEC)
        if fd < 0 { return false }
        defer { close(fd) }
        let s = Array("\(v)\n".utf8)
        return s.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == s.count
    }

    @Test func hugePageFile() async throws {
        let needed = 4
        let free = VolatileFile.hugePagesFree ?? 0
        let before = Self.readInt(Self.path)
        var reserved = false
        if free < needed, geteuid() == 0, let b = before {
            reserved = Self.write(Self.path, b + needed) && (VolatileFile.hugePagesFree ?? 0) >= needed
            print("NOTE: reserved \(needed) huge pages for this test (vm.nr_hugepages \(b) -> \(b + needed)); restored after")
        }
        defer { if reserved, let b = before { _ = Self.write(Self.path, b) } }
        guard free >= needed || reserved else {
            print("NOTE: no huge pages available (HugePages_Free \(free), not root or the reservation failed): checking the typed error only")
            #expect(throws: VRangeError.self) { _ = try VolatileFile(byteCount: 1, options: .init(hugePages: true)) }
            do { _ = try VolatileFile(byteCount: 1, options: .init(hugePages: true)) } catch {
                guard case .hugePagesUnavailable(let why) = error else { Issue.record("wrong error \(error)"); return }
                print("NOTE: hugePagesUnavailable: \(why)")
            }
            return
        }
        // In a child process: a crash there (a SIGBUS the handler failed to
        // fill) fails the test and still lets this process restore the
        // reservation.
        await #expect(processExitsWith: .success) { try! FileHugePageTests.exercise() }
    }

    static func exercise() throws {
        let f = try VolatileFile(byteCount: 3 * (2 << 20), options: .init(hugePages: true))
        let huge = f.pageSize
        print("huge page size \(huge)")
        #expect(f.isHugePageBacked && huge >= 2 << 20 && f.size == 3 * huge)
        let m = try f.map()
        #expect(m.faultMechanism == .userfaultfd)
        for p in 0..<3 { m.bytes[p * huge + 5] = UInt8(p + 1) }
        try f.markVolatile((huge)..<(2 * huge))
        #expect(try f.purgeAll() == huge)
        #expect(try m.withVolatileAccess(huge..<(2 * huge)) { $0[5] } == .purged)
        // A purge during an access faults inside it: the handler fills the
        // huge page from a page of zeros (UFFDIO_COPY: hugetlbfs has no zero
        // page) and the access reports it, instead of dying of SIGBUS.
        try f.markVolatile((2 * huge)..<(3 * huge))
        let during = try m.withVolatileAccess((2 * huge)..<(3 * huge)) { buffer -> UInt8 in
            _ = try? f.purge((2 * huge)..<(3 * huge))
            return buffer[5]
        }
        #expect(during == .purged)
        let r = try f.markNonVolatile(0..<(3 * huge))
        #expect(r.purgedRanges == [huge..<(3 * huge)])
        #expect(m.bytes[5] == 1 && m.bytes[huge + 5] == 0)
        m.bytes[huge + 5] = 9  // repopulated: writable, no fault
        #expect(m.bytes[huge + 5] == 9)
        #expect(throws: VRangeError.misalignedRange(offset: 0, length: 4096, pageSize: huge)) { try f.markVolatile(0..<4096) }
        let p = try peers(1, sharing: f)[0]
        try p.send("map 1 0 3")
        #expect(try p.send("truncate 0") == "\(EPERM)")
    }
}
