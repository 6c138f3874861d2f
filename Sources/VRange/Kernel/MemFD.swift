// memfd_create, ftruncate, fallocate punch-hole and close.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// memfd_create(name, MFD_CLOEXEC | extra).
    static func memfdCreate(name: String, hugePages: Bool = false) throws(SystemError) -> Int32 {
        var fd: Int32 = -1
        let flags = vr_MFD_CLOEXEC | (hugePages ? vr_MFD_HUGETLB : 0)
        try checkCode("memfd_create", name.withCString { vr_memfd_create($0, flags, &fd) })
        return fd
    }

    /// ftruncate(fd, length).
    static func truncate(fd: Int32, length: Int) throws(SystemError) {
        _ = try check("ftruncate") { ftruncate(fd, off_t(length)) }
    }

    /// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
    /// drops the file's pages for every process that maps them.
    static func punchHole(fd: Int32, offset: Int, length: Int) throws(SystemError) {
        try checkCode("fallocate(PUNCH_HOLE|KEEP_SIZE)",
                      vr_fallocate(fd, vr_FALLOC_PUNCH_HOLE_KEEP_SIZE, off_t(offset), off_t(length)))
    }

    /// close(fd); EINTR is not retried (the descriptor is gone either way).
    static func close(fd: Int32) {
        _ = Glibc.close(fd)
    }
}
