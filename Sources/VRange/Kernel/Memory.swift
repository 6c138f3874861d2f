// mmap, munmap, madvise, mprotect, mincore: typed, page-aligned wrappers.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// madvise advice values, named by meaning.
    struct Advice: Equatable, Sendable, CustomStringConvertible {
        let rawValue: Int32
        let name: String

        /// Forced purge of private anonymous memory: reads back zero.
        static let dontNeed = Advice(rawValue: vr_MADV_DONTNEED, name: "MADV_DONTNEED")
        /// Lazy purge: contents survive until the kernel reclaims the page.
        static let free = Advice(rawValue: vr_MADV_FREE, name: "MADV_FREE")
        /// Forced purge of mlocked private anonymous memory (Linux 5.18).
        static let dontNeedLocked = Advice(rawValue: vr_MADV_DONTNEED_LOCKED, name: "MADV_DONTNEED_LOCKED")
        /// Reclaim now (forces MADV_FREE pages out): used by tests and demos.
        static let pageOut = Advice(rawValue: vr_MADV_PAGEOUT, name: "MADV_PAGEOUT")
        /// Frees shared memory's backing store (like punch-hole).
        static let remove = Advice(rawValue: vr_MADV_REMOVE, name: "MADV_REMOVE")
        /// Keep 4 KiB pages so that purge granularity stays a page.
        static let noHugePage = Advice(rawValue: vr_MADV_NOHUGEPAGE, name: "MADV_NOHUGEPAGE")
        /// Prefault writable.
        static let populateWrite = Advice(rawValue: vr_MADV_POPULATE_WRITE, name: "MADV_POPULATE_WRITE")

        var description: String { name }
    }

    struct Protection: OptionSet, Sendable {
        let rawValue: Int32
        static let none = Protection([])
        static let read = Protection(rawValue: PROT_READ)
        static let write = Protection(rawValue: PROT_WRITE)
        static let readWrite: Protection = [.read, .write]
    }

    /// mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE).
    static func mapAnonymous(length: Int) throws(SystemError) -> UnsafeMutableRawPointer {
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else {
            throw SystemError(call: "mmap(MAP_PRIVATE|MAP_ANONYMOUS)", errno: Glibc.errno)
        }
        return p
    }

    /// mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset).
    static func mapShared(fd: Int32, length: Int, offset: Int = 0) throws(SystemError) -> UnsafeMutableRawPointer {
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(offset))
        guard let p, p != MAP_FAILED else {
            throw SystemError(call: "mmap(MAP_SHARED)", errno: Glibc.errno)
        }
        return p
    }

    /// munmap(start, length).
    static func unmap(_ start: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        _ = try check("munmap") { munmap(start, length) }
    }

    /// madvise(start, length, advice).
    static func advise(_ start: UnsafeMutableRawPointer, length: Int, _ advice: Advice) throws(SystemError) {
        _ = try check("madvise(\(advice.name))") { madvise(start, length, advice.rawValue) }
    }

    /// mprotect(start, length, protection).
    static func protect(_ start: UnsafeMutableRawPointer, length: Int, _ protection: Protection) throws(SystemError) {
        _ = try check("mprotect") { mprotect(start, length, protection.rawValue) }
    }

    /// mincore over `pages` pages from `start` into `vector` (one byte per
    /// page, low bit "resident"), which must hold `pages` bytes.
    static func residency(
        _ start: UnsafeMutableRawPointer, pages: Int, pageSize: Int, into vector: UnsafeMutablePointer<UInt8>
    ) throws(SystemError) {
        _ = try check("mincore") { mincore(start, pages * pageSize, vector) }
    }

    /// mincore over `pages` pages from `start`: calls `body` with one byte per
    /// page whose low bit says "resident".
    static func residency<R>(
        _ start: UnsafeMutableRawPointer, pages: Int, pageSize: Int,
        _ body: (UnsafeBufferPointer<UInt8>) -> R
    ) throws(SystemError) -> R {
        let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(pages, 1))
        defer { buffer.deallocate() }
        _ = try check("mincore") { mincore(start, pages * pageSize, buffer.baseAddress) }
        return body(UnsafeBufferPointer(rebasing: buffer[0..<pages]))
    }
}

extension Kernel {
    /// Private anonymous memory that is never mlocked, even under
    /// mlockall(MCL_FUTURE) (see vr_map_anonymous_unlocked).
    static func mapAnonymousUnlocked(length: Int) throws(SystemError) -> UnsafeMutableRawPointer {
        var p: UnsafeMutableRawPointer?
        try checkCode("mmap(MAP_PRIVATE|MAP_ANONYMOUS)", vr_map_anonymous_unlocked(length, &p))
        return p!
    }

    /// Replaces [start, start+length) with fresh, untouched anonymous memory
    /// (mmap MAP_FIXED): whatever was mapped there, and its userfaultfd
    /// registration, is gone; the addresses stay reserved for the caller.
    static func replaceWithEmpty(_ start: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        let p = mmap(start, length, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
        guard let p, p != MAP_FAILED else {
            throw SystemError(call: "mmap(MAP_FIXED)", errno: Glibc.errno)
        }
    }

    /// MADV_DONTNEED that also discards mlocked pages (MADV_DONTNEED_LOCKED,
    /// or munlock first on kernels before 5.18): the region's pages always
    /// read back zero afterwards.
    static func discard(_ start: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        try checkCode("madvise(MADV_DONTNEED)", vr_discard(start, length))
    }
}
