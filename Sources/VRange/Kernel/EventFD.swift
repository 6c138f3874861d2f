// eventfd(2): the purger thread's wake-up descriptor, and the descriptors the
// cgroup v1 memory.pressure_level notifications arrive on.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK).
    ///
    /// - Returns: the new descriptor.
    /// - Throws: `SystemError` naming `eventfd`.
    static func eventFD() throws(SystemError) -> Int32 {
        var fd: Int32 = -1
        try checkCode("eventfd", vr_eventfd(0, &fd))
        return fd
    }

    /// Reads (and so resets) an eventfd's counter: how many signals arrived
    /// since the last read, 0 when none (EAGAIN).
    ///
    /// - Throws: `SystemError` naming `read(eventfd)`.
    static func eventFDRead(_ fd: Int32) throws(SystemError) -> UInt64 {
        var value: UInt64 = 0
        do { _ = try check("read(eventfd)") { Glibc.read(fd, &value, 8) } } catch {
            if error.errno == EAGAIN { return 0 }
            throw error
        }
        return value
    }

    /// Adds `value` to an eventfd's counter (write), waking its pollers.
    ///
    /// - Throws: `SystemError` naming `write(eventfd)`.
    static func eventFDWrite(_ fd: Int32, _ value: UInt64 = 1) throws(SystemError) {
        var v = value
        _ = try check("write(eventfd)") { Glibc.write(fd, &v, 8) }
    }
}
