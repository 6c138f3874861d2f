// socket + connect to an AF_UNIX stream socket, and draining a descriptor:
// the socket form of the systemd $MEMORY_PRESSURE_WATCH convention (a
// service manager that sends a byte per pressure event).
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK) connected
    /// to `path`.
    ///
    /// - Returns: the connected descriptor.
    /// - Throws: `SystemError` naming `socket` or `connect(<path>)`;
    ///   ENAMETOOLONG when the path does not fit in `sun_path`.
    static func connectUnixStream(_ path: String) throws(SystemError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        if bytes.count >= capacity { throw SystemError(call: "connect(\(path))", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let fd = try check("socket(AF_UNIX)") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 {
            let code = Glibc.errno
            // A non-blocking connect to a listening local socket completes at
            // once or is in progress; either way the descriptor is usable.
            if code != EINPROGRESS {
                close(fd: fd)
                throw SystemError(call: "connect(\(path))", errno: code)
            }
        }
        return fd
    }

    /// read(fd) into a scratch buffer until EAGAIN: drains what a FIFO or a
    /// socket has to say.
    ///
    /// - Returns: how many bytes were read; 0 with `ended` set at end of file.
    /// - Throws: `SystemError` naming `read(<what>)`.
    static func drain(fd: Int32, what: String) throws(SystemError) -> (bytes: Int, ended: Bool) {
        var total = 0
        var scratch = [UInt8](repeating: 0, count: 256)
        while true {
            let n = scratch.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 { total += n; continue }
            if n == 0 { return (total, true) }
            let code = Glibc.errno
            if code == EINTR { continue }
            if code == EAGAIN { return (total, false) }
            throw SystemError(call: "read(\(what))", errno: code)
        }
    }
}
