// Sharing a VolatileFile between processes: both descriptors travel
// together — inherited across fork(), handed to a spawned child, or sent
// over a Unix socket with SCM_RIGHTS — and the receiver adopts the pair
// (which validates everything).
import CVRange

extension VolatileFile {
    /// The tag every shared-file message starts with ("VRF1") and its length.
    static let messageTag: [UInt8] = Array("VRF1".utf8)

    /// Sends the file's two descriptors over a connected Unix socket
    /// (`sendmsg` with `SCM_RIGHTS`). The receiver gets its own descriptors
    /// of the same files; this object keeps its own.
    ///
    /// - Throws: `.closed`, or `.system` when sendmsg fails.
    public func send(over socket: Int32) throws(VRangeError) {
        try withUse(.fileSend) { () throws(VRangeError) in
            do throws(SystemError) {
                try Kernel.send(socket: socket, payload: Self.messageTag,
                                descriptors: [descriptors.data, descriptors.sidecar])
            } catch { throw .system(error) }
        }
    }

    /// Receives a file sent with `send(over:)` (`recvmsg`, descriptors
    /// close-on-exec) and adopts it. Blocks until a message arrives.
    ///
    /// - Throws: `.invalidSharedFile(.badMessage)` for a message that is not
    ///   one (or an end of stream, or control data that did not fit),
    ///   `.invalidSharedFile(.missingDescriptors(received: n))` when it does
    ///   not carry exactly two descriptors (`n` counts every one it carried,
    ///   up to the kernel's 253), any adoption error (the received
    ///   descriptors are closed then, as for every error), or `.system` when
    ///   recvmsg fails.
    public convenience init(receivingFrom socket: Int32) throws(VRangeError) {
        let message: (payload: [UInt8], descriptors: [Int32], received: Int)
        do { message = try Kernel.receive(socket: socket, capacity: 64) } catch {
            // Control data that did not fit (every descriptor closed): not
            // a shared-file message.
            if error.errno == EMSGSIZE { throw .invalidSharedFile(.badMessage) }
            throw .system(error)
        }
        func reject(_ p: SharedFileProblem) -> VRangeError {
            for fd in message.descriptors { Kernel.close(fd: fd) }
            return .invalidSharedFile(p)
        }
        guard message.payload == Self.messageTag else { throw reject(.badMessage) }
        guard message.received == 2 else { throw reject(.missingDescriptors(received: message.received)) }
        let pair = SharedFileDescriptors(data: message.descriptors[0], sidecar: message.descriptors[1])
        do { try self.init(adopting: pair) } catch {
            for fd in message.descriptors { Kernel.close(fd: fd) }
            throw error
        }
    }

    /// Duplicates of the two descriptors without close-on-exec, for a child
    /// started with `posix_spawn` or `exec` (pass their numbers to it, and
    /// close them in the parent afterwards). With `posix_spawn`, a
    /// `posix_spawn_file_actions_adddup2` of `descriptors` does the same.
    public func inheritableDescriptors() throws(VRangeError) -> SharedFileDescriptors {
        try withUse(.fileInheritableDescriptors) { () throws(VRangeError) -> SharedFileDescriptors in
            try duplicates()
        }
    }

    private func duplicates() throws(VRangeError) -> SharedFileDescriptors {
        do throws(SystemError) {
            let data = try Kernel.duplicate(fd: descriptors.data)
            do throws(SystemError) {
                let side = try Kernel.duplicate(fd: descriptors.sidecar)
                try Kernel.setCloseOnExec(fd: data, false)
                try Kernel.setCloseOnExec(fd: side, false)
                return SharedFileDescriptors(data: data, sidecar: side)
            } catch {
                Kernel.close(fd: data)
                throw error
            }
        } catch { throw .system(error) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
