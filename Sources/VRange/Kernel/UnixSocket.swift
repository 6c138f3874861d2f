// Unix stream sockets and descriptor passing (SCM_RIGHTS).
import CVRange

extension Kernel {
    /// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0).
    static func socketPair() throws(SystemError) -> (Int32, Int32) {
        var fds: (Int32, Int32) = (-1, -1)
        try withUnsafeMutableBytes(of: &fds) { raw throws(SystemError) in
            try checkCode("socketpair", vr_socketpair(raw.baseAddress!.assumingMemoryBound(to: Int32.self)))
        }
        return fds
    }

    /// sendmsg of `payload` with `descriptors` attached (SCM_RIGHTS, at most 253).
    static func send(socket: Int32, payload: [UInt8], descriptors: [Int32]) throws(SystemError) {
        let code = payload.withUnsafeBytes { p in
            descriptors.withUnsafeBufferPointer { d in
                vr_send_fds(socket, p.baseAddress, p.count, d.baseAddress, Int32(d.count))
            }
        }
        try checkCode("sendmsg(SCM_RIGHTS)", code)
    }

    /// recvmsg of up to `capacity` bytes and its descriptors (received
    /// close-on-exec). `descriptors` holds the first 8; `received` counts
    /// every one the message carried (those past 8 are closed). EMSGSIZE,
    /// with all of them closed, when the control data did not fit. An empty
    /// payload means the peer closed the socket.
    static func receive(socket: Int32, capacity: Int) throws(SystemError) -> (payload: [UInt8], descriptors: [Int32], received: Int) {
        var payload = [UInt8](repeating: 0, count: capacity)
        var fds: (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32) = (-1, -1, -1, -1, -1, -1, -1, -1)
        var length = 0
        var count: Int32 = 0
        let code = payload.withUnsafeMutableBytes { p in
            withUnsafeMutableBytes(of: &fds) { f in
                vr_recv_fds(socket, p.baseAddress, p.count, &length,
                            f.baseAddress!.assumingMemoryBound(to: Int32.self), &count)
            }
        }
        try checkCode("recvmsg(SCM_RIGHTS)", code)
        let received = withUnsafeBytes(of: fds) { Array($0.bindMemory(to: Int32.self).prefix(min(Int(count), 8))) }
        return (Array(payload.prefix(length)), received, Int(count))
    }
}
