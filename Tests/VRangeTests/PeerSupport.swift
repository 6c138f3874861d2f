// Real separate processes for the shared-file tests: each Peer is a
// VRangeTestPeer process (built beside this test binary) spawned with
// posix_spawn and driven over a Unix socket, one command line and one reply
// line at a time. Every wait has a deadline; a peer still running when its
// Peer object goes away (a test failed or threw) is killed and reaped.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

struct PeerError: Error, CustomStringConvertible {
    let description: String
}

/// Seconds a peer may take to answer (VRANGE_PEER_TIMEOUT; generous: CI is
/// two loaded cores).
let peerTimeout = environmentInt("VRANGE_PEER_TIMEOUT", 60)

final class Peer {
    let pid: pid_t
    let socket: Int32
    private var buffer: [UInt8] = []
    private(set) var exited: Int32?

    /// The peer executable: beside this test binary.
    static var executable: String {
        var link = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &link, link.count - 1)
        let exe = n > 0 ? String(decoding: link.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        var parts = exe.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast()
        var dir = parts.joined(separator: "/")
        // The test bundle may be a directory (…/VRangePackageTests.xctest/…).
        while !dir.isEmpty && access(dir + "/VRangeTestPeer", X_OK) != 0 {
            var p = dir.split(separator: "/", omittingEmptySubsequences: false)
            p.removeLast()
            dir = p.joined(separator: "/")
        }
        return dir + "/VRangeTestPeer"
    }

    /// Spawns a peer; `inherit` are descriptors it gets as 4, 5, ... (the
    /// socket is 3).
    init(inherit: [Int32] = []) throws {
        let path = Self.executable
        guard access(path, X_OK) == 0 else {
            throw PeerError(description: "VRangeTestPeer not found at \(path): build with `swift build --build-tests`")
        }
        let (mine, theirs) = try Kernel.socketPair()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // The child gets the socket as 3 and `inherit` as 4, 5, ...: copy
        // every source above those numbers first, since a source that is
        // itself a target (a memfd that got descriptor 3 in a process with
        // few open) would be overwritten by an earlier dup2 of the list.
        let above = Int32(4 + inherit.count)
        var sources: [Int32] = []
        defer { for fd in sources { Kernel.close(fd: fd) } }
        for fd in [theirs] + inherit {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, above)
            guard copy >= 0 else {
                let e = errno
                Kernel.close(fd: theirs); Kernel.close(fd: mine)
                throw PeerError(description: "F_DUPFD_CLOEXEC of \(fd) failed: errno \(e)")
            }
            sources.append(copy)
        }
        for (i, fd) in sources.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + i)) }
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
        defer { for a in argv { free(a) } }
        // The Swift runtime's backtracer would keep a peer that dies of a
        // signal (on purpose, in some tests) busy symbolicating, holding the
        // test runner's output pipe open: peers run without it.
        var env: [UnsafeMutablePointer<CChar>?] = [strdup("SWIFT_BACKTRACE=enable=no")]
        var e = environ
        while let entry = e.pointee {
            if !String(cString: entry).hasPrefix("SWIFT_BACKTRACE=") { env.append(strdup(entry)) }
            e += 1
        }
        env.append(nil)
        defer { for v in env { free(v) } }
        let rc = posix_spawn(&pid, path, &actions, nil, argv, env)
        Kernel.close(fd: theirs)
        guard rc == 0 else {
            Kernel.close(fd: mine)
            throw PeerError(description: "posix_spawn failed: \(rc)")
        }
        self.pid = pid
        self.socket = mine
    }

    deinit {
        kill()
        Kernel.close(fd: socket)
    }

    /// Sends a command and returns its reply (without "ok "), or throws on
    /// "err ...", on a timeout (the peer is killed) or when it died.
    @discardableResult
    func send(_ command: String, timeout: Int = peerTimeout) throws -> String {
        try write(command + "\n")
        let line = try readLine(timeout: timeout, context: command)
        if line.hasPrefix("ok") { return String(line.dropFirst(line.count > 2 ? 3 : 2)) }
        throw PeerError(description: "peer \(pid): \(command) -> \(line)")
    }

    func write(_ s: String) throws {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PeerError(description: "peer \(pid): write failed (errno \(errno))") }
            off += n
        }
    }

    /// The next line, waiting at most `timeout` seconds.
    func readLine(timeout: Int = peerTimeout, context: String = "") throws -> String {
        let deadline = Kernel.monotonicNanoseconds() + UInt64(timeout) * 1_000_000_000
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            let now = Kernel.monotonicNanoseconds()
            guard now < deadline else {
                kill()
                throw PeerError(description: "peer \(pid): no answer to '\(context)' within \(timeout) s (killed)")
            }
            var p = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(1000, (deadline - now) / 1_000_000 + 1)))
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let status = waitExit(timeout: 10)
                throw PeerError(description: "peer \(pid) closed its socket during '\(context)' (status \(status.map(String.init) ?? "?"))")
            }
            buffer += chunk.prefix(n)
        }
    }

    /// Waits until the socket has something to read (a deadline, then the
    /// peer is killed).
    func waitReadable(timeout: Int = peerTimeout) throws {
        var p = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        var r: Int32
        repeat { r = poll(&p, 1, Int32(timeout * 1000)) } while r < 0 && errno == EINTR
        if r <= 0 {
            kill()
            throw PeerError(description: "peer \(pid): nothing to read within \(timeout) s (killed)")
        }
    }

    /// SIGKILL, then reap.
    func kill() {
        guard exited == nil else { return }
        _ = Glibc.kill(pid, SIGKILL)
        _ = waitExit(timeout: 30)
    }

    /// Waits (polling with a deadline) for the peer to exit; its wait status.
    @discardableResult
    func waitExit(timeout: Int = peerTimeout) -> Int32? {
        if let e = exited { return e }
        let deadline = Kernel.monotonicNanoseconds() + UInt64(timeout) * 1_000_000_000
        var status: Int32 = 0
        while Kernel.monotonicNanoseconds() < deadline {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { exited = status; return status }
            if r < 0 && errno != EINTR { return nil }
            var ts = timespec(tv_sec: 0, tv_nsec: 2_000_000)  // a poll interval, not a settle delay
            nanosleep(&ts, nil)
        }
        return nil
    }

    /// Sends a shared file's pair over the socket (after a "receive").
    func sendFile(_ f: VolatileFile) throws { try f.send(over: socket) }
}

/// Page ranges from a peer's "a-b,c-d" reply ("intact" is empty).
func parseRuns(_ s: String) -> [Range<Int>] {
    if s == "intact" { return [] }
    return s.split(separator: ",").map { part in
        let ends = part.split(separator: "-").map { Int($0)! }
        return ends[0]..<ends[1]
    }
}

/// Spawns `count` peers that adopt `file` (received over their sockets).
func peers(_ count: Int, sharing file: VolatileFile) throws -> [Peer] {
    var out: [Peer] = []
    for _ in 0..<count {
        let p = try Peer()
        try p.write("receive\n")
        let ready = try p.readLine(context: "receive")
        guard ready == "ready" else { throw PeerError(description: "receive: \(ready)") }
        try p.sendFile(file)
        let line = try p.readLine(context: "receive")
        guard line.hasPrefix("ok") else { throw PeerError(description: "receive: \(line)") }
        out.append(p)
    }
    return out
}

/// Fills page `p` of a mapping with `tag`'s pattern (as the peer does).
func fill(_ m: FileMapping, page p: Int, tag: UInt8) {
    let base = m.baseAddress + p * m.pageSize
    for i in stride(from: 0, to: m.pageSize, by: 8) {
        base.storeBytes(of: UInt64(tag) &* 0x0101_0101_0101_0101 ^ UInt64(i), toByteOffset: i, as: UInt64.self)
    }
}

/// "tag", "zero" or "other" for page `p` of a mapping.
func look(_ m: FileMapping, page p: Int, tag: UInt8) -> String {
    let base = UnsafeRawPointer(m.baseAddress + p * m.pageSize)
    var isTag = true, isZero = true
    for i in stride(from: 0, to: m.pageSize, by: 8) {
        let v = base.load(fromByteOffset: i, as: UInt64.self)
        if v != UInt64(tag) &* 0x0101_0101_0101_0101 ^ UInt64(i) { isTag = false }
        if v != 0 { isZero = false }
    }
    return isTag ? "tag" : (isZero ? "zero" : "other")
}
