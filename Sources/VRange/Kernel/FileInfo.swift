// fstat, positioned reads and writes, file mappings and allocation: the
// calls that adopting and mapping a shared file need.
import CVRange

extension Kernel {
    /// What fstat says about a descriptor.
    struct FileInfo: Sendable, Equatable {
        var size: Int
        var inode: UInt64
        var device: UInt64
        /// st_blksize: the page size of a tmpfs or hugetlbfs file.
        var blockSize: Int
        var mode: UInt32
        /// On hugetlbfs (fstatfs): a huge-page memfd.
        var isHugetlbfs: Bool = false

        var isRegular: Bool { mode & 0o170000 == 0o100000 }
    }

    /// fstat(fd) and fstatfs(fd).
    static func fileInfo(fd: Int32) throws(SystemError) -> FileInfo {
        var info = vr_file_info()
        try checkCode("fstat", vr_fstat(fd, &info))
        return FileInfo(size: Int(info.size), inode: info.inode, device: info.device,
                        blockSize: Int(info.block_size), mode: info.mode,
                        isHugetlbfs: info.hugetlbfs != 0)
    }

    /// pread of exactly `buffer.count` bytes at `offset` (EIO when the file is shorter).
    static func read(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) {
        try checkCode("pread", vr_pread_exact(fd, buffer.baseAddress, buffer.count, off_t(offset)))
    }

    /// pwrite of exactly `buffer.count` bytes at `offset`.
    static func write(fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) {
        try checkCode("pwrite", vr_pwrite_exact(fd, buffer.baseAddress, buffer.count, off_t(offset)))
    }

    /// mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_SHARED or MAP_PRIVATE
    /// [| MAP_NORESERVE], fd, offset).
    static func mapFile(
        fd: Int32, length: Int, offset: Int, privateMapping: Bool = false, noReserve: Bool = false
    ) throws(SystemError) -> UnsafeMutableRawPointer {
        var p: UnsafeMutableRawPointer?
        try checkCode(privateMapping ? "mmap(MAP_PRIVATE)" : "mmap(MAP_SHARED)",
                      vr_map_file(fd, length, off_t(offset), privateMapping ? 1 : 0, noReserve ? 1 : 0, &p))
        return p!
    }

    /// fallocate(fd, 0, offset, length): allocates (and zeroes) the holes of
    /// the range, so that a registered mapping finds its pages present.
    static func allocate(fd: Int32, offset: Int, length: Int) throws(SystemError) {
        try checkCode("fallocate", vr_fallocate(fd, vr_FALLOC_ALLOCATE, off_t(offset), off_t(length)))
    }

    /// fcntl(fd, F_SETFD, FD_CLOEXEC or 0).
    static func setCloseOnExec(fd: Int32, _ on: Bool) throws(SystemError) {
        try checkCode("fcntl(F_SETFD)", vr_set_cloexec(fd, on ? 1 : 0))
    }

    /// dup(fd) with close-on-exec (F_DUPFD_CLOEXEC).
    static func duplicate(fd: Int32) throws(SystemError) -> Int32 {
        try check("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// The contents of a small text file (procfs), or nil.
    static func readSmallFile(_ path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { _ = Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk.prefix(n)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
