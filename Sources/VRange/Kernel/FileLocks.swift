// Open file description (OFD) locks: a byte-range write lock owned by an
// open file description, released by the kernel when the last descriptor of
// that description closes, in particular when its process dies. The shared
// files layer proves a process alive with them (F_OFD_SETLK, F_OFD_GETLK).
import CVRange

extension Kernel {
    /// open("/proc/self/fd/N", O_RDWR | O_CLOEXEC): a new open file
    /// description of `fd`'s file, private to this process (descriptors
    /// inherited or passed with SCM_RIGHTS share theirs with the sender).
    static func reopen(fd: Int32) throws(SystemError) -> Int32 {
        var out: Int32 = -1
        try checkCode("open(/proc/self/fd/\(fd))", vr_reopen(fd, &out))
        return out
    }

    /// F_OFD_SETLK of a write lock on byte `byte`: returns false when
    /// another open file description holds it. There is deliberately no
    /// blocking variant (F_OFD_SETLKW): the holder may be a stopped process,
    /// and no wait on another process is left without a bound (DESIGN.md §9).
    @discardableResult
    static func lockByte(fd: Int32, _ byte: Int) throws(SystemError) -> Bool {
        let code = vr_ofd_lock(fd, off_t(byte), 0)
        if code == EAGAIN { return false }
        try checkCode("fcntl(F_OFD_SETLK)", code)
        return true
    }

    /// F_OFD_SETLK of F_UNLCK on byte `byte`.
    static func unlockByte(fd: Int32, _ byte: Int) throws(SystemError) {
        try checkCode("fcntl(F_OFD_SETLK, F_UNLCK)", vr_ofd_unlock(fd, off_t(byte)))
    }

    /// F_OFD_GETLK: whether another open file description holds a lock on
    /// byte `byte` (this description's own locks read as not held).
    static func byteIsLocked(fd: Int32, _ byte: Int) throws(SystemError) -> Bool {
        var held: Int32 = 0
        try checkCode("fcntl(F_OFD_GETLK)", vr_ofd_probe(fd, off_t(byte), &held))
        return held != 0
    }

    /// F_OFD_GETLK over bytes `bytes`: the end of one lock another open
    /// file description holds on some of them (Int.max: to the end of the
    /// file), nil when none. Which one, when several, is the kernel's choice.
    static func lockedRangeEnd(fd: Int32, _ bytes: Range<Int>) throws(SystemError) -> Int? {
        var end: Int64 = 0
        try checkCode("fcntl(F_OFD_GETLK)", vr_ofd_probe_range(fd, off_t(bytes.lowerBound), off_t(bytes.count), &end))
        return end == 0 ? nil : Int(end)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
