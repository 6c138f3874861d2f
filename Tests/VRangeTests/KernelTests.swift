// The kernel layer on its own: typed errors carry the call and errno, and the
// memfd wrappers (for shared files, used by later layers) do what they say.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Kernel layer") struct KernelTests {
    @Test func errorsNameTheCallAndCarryErrno() {
        let bogus = Kernel.Advice(rawValue: 9999, name: "MADV_BOGUS")
        let p = try! Kernel.mapAnonymous(length: page)
        defer { try? Kernel.unmap(p, length: page) }
        #expect(throws: SystemError(call: "madvise(MADV_BOGUS)", errno: EINVAL)) {
            try Kernel.advise(p, length: page, bogus)
        }
        #expect(throws: SystemError(call: "fallocate(PUNCH_HOLE|KEEP_SIZE)", errno: EBADF)) {
            try Kernel.punchHole(fd: -1, offset: 0, length: page)
        }
        #expect(SystemError(call: "munmap", errno: EINVAL).description.contains("munmap failed"))
    }

    @Test func memfdPunchHoleReadsBackZero() throws {
        let fd = try Kernel.memfdCreate(name: "vrange-test")
        defer { Kernel.close(fd: fd) }
        try Kernel.truncate(fd: fd, length: 4 * page)
        let p = try Kernel.mapShared(fd: fd, length: 4 * page)
        defer { try? Kernel.unmap(p, length: 4 * page) }
        for i in 0..<4 { p.storeBytes(of: UInt8(i + 1), toByteOffset: i * page, as: UInt8.self) }
        try Kernel.punchHole(fd: fd, offset: page, length: 2 * page)
        let bytes = (0..<4).map { p.load(fromByteOffset: $0 * page, as: UInt8.self) }
        #expect(bytes == [1, 0, 0, 4])
    }

    @Test func residencySeesDiscardedPages() throws {
        let p = try Kernel.mapAnonymous(length: 4 * page)
        defer { try? Kernel.unmap(p, length: 4 * page) }
        for i in 0..<4 { p.storeBytes(of: 1, toByteOffset: i * page, as: UInt8.self) }
        try Kernel.advise(p + page, length: page, .dontNeed)
        let resident = try Kernel.residency(p, pages: 4, pageSize: page) { $0.map { $0 & 1 } }
        #expect(resident == [1, 0, 1, 1])
    }
}
