// open, pread, write, close, access and stat of small kernel files (procfs,
// cgroupfs, PSI): what the purger's pressure sources read and write.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// How a file is opened: the access mode plus flags, always close-on-exec.
    struct OpenMode: Sendable, Equatable {
        let flags: Int32
        let name: String

        /// O_RDONLY.
        static let readOnly = OpenMode(flags: O_RDONLY, name: "O_RDONLY")
        /// O_WRONLY.
        static let writeOnly = OpenMode(flags: O_WRONLY, name: "O_WRONLY")
        /// O_RDWR.
        static let readWrite = OpenMode(flags: O_RDWR, name: "O_RDWR")

        /// The same mode with O_NONBLOCK added.
        var nonBlocking: OpenMode { OpenMode(flags: flags | O_NONBLOCK, name: name + "|O_NONBLOCK") }
    }

    /// What kind of file a path names (from stat).
    enum FileKind: Sendable, Equatable {
        case regular, directory, fifo, socket, characterDevice, other
    }

    /// open(path, mode | O_CLOEXEC | O_NOCTTY).
    ///
    /// - Returns: the new descriptor.
    /// - Throws: `SystemError` naming `open(<path>, <mode>)`.
    static func open(_ path: String, _ mode: OpenMode) throws(SystemError) -> Int32 {
        try check("open(\(path), \(mode.name))") {
            path.withCString { Glibc.open($0, mode.flags | O_CLOEXEC | O_NOCTTY) }
        }
    }

    /// pread(fd, …, 0) until end of file or `limit` bytes: the whole of a
    /// small kernel file, read from its start (a pread from 0 also re-arms
    /// the poll notification of cgroup files such as memory.events).
    ///
    /// - Throws: `SystemError` naming `read(<what>)`.
    static func readAll(fd: Int32, what: String, limit: Int = 1 << 20) throws(SystemError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = 4096
        while out.count < limit {
            let start = out.count
            out.append(contentsOf: repeatElement(0, count: min(chunk, limit - start)))
            let n = try check("read(\(what))") {
                out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + start, $0.count - start, off_t(start)) }
            }
            out.removeLast(out.count - start - n)
            if n == 0 { break }
            chunk = min(chunk * 2, 1 << 16)
        }
        return out
    }

    /// The whole of the small file at `path` (open, pread, close).
    ///
    /// - Throws: `SystemError` from open or read.
    static func readFile(_ path: String, limit: Int = 1 << 20) throws(SystemError) -> [UInt8] {
        let fd = try open(path, .readOnly)
        defer { close(fd: fd) }
        return try readAll(fd: fd, what: path, limit: limit)
    }

    /// One write(fd, bytes): kernel interfaces such as PSI triggers and
    /// cgroup.event_control take their whole argument in a single call. A
    /// short write is reported as EIO (it never happens on these files).
    ///
    /// - Throws: `SystemError` naming `write(<what>)`.
    static func writeOnce(fd: Int32, _ bytes: [UInt8], what: String) throws(SystemError) {
        let n = try check("write(\(what))") { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
        if n != bytes.count { throw SystemError(call: "write(\(what))", errno: EIO) }
    }

    /// Writes `text` to the file at `path` in one write() (open O_WRONLY,
    /// write, close): how cgroup knobs are set.
    ///
    /// - Throws: `SystemError` from open or write.
    static func writeFile(_ path: String, _ text: String) throws(SystemError) {
        let fd = try open(path, .writeOnly)
        defer { close(fd: fd) }
        try writeOnce(fd: fd, Array(text.utf8), what: path)
    }

    /// Whether `path` exists (access(path, F_OK)).
    static func exists(_ path: String) -> Bool {
        path.withCString { access($0, F_OK) } == 0
    }

    /// stat(path): the kind of file it names.
    ///
    /// - Throws: `SystemError` naming `stat(<path>)`.
    static func fileKind(_ path: String) throws(SystemError) -> FileKind {
        var s = stat()
        _ = try check("stat(\(path))") { path.withCString { stat($0, &s) } }
        switch s.st_mode & S_IFMT {
        case S_IFREG: return .regular
        case S_IFDIR: return .directory
        case S_IFIFO: return .fifo
        case S_IFSOCK: return .socket
        case S_IFCHR: return .characterDevice
        default: return .other
        }
    }
}
