// Small system helpers of the demo: reading small files,
// figures from /proc/self/status, threads.
#if canImport(Glibc)
import Glibc
#endif

/// The contents of a small file (procfs, cgroupfs), nil if it cannot be read.
func readText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// A "Key:   N kB" figure of /proc/self/status, in bytes.
func statusBytes(_ status: String, _ key: String) -> Int {
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return 0 }
    let number = line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) } ?? 0
    return number * 1024
}

/// A started thread; `join()` waits for it.
struct Thread {
    private let handle: pthread_t

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    init(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if rc != 0 { fail("pthread_create: \(rc)") }
        handle = t
    }

    func join() { pthread_join(handle, nil) }
}

/// Whether stdout is a terminal, and its width (80 when unknown).
var terminalColumns: Int? {
    guard isatty(1) == 1 else { return nil }
    var w = winsize()
    return ioctl(1, UInt(TIOCGWINSZ), &w) == 0 && w.ws_col > 0 ? Int(w.ws_col) : 80
}

/// Bytes as MiB with one decimal.
func mib(_ bytes: Int) -> String {
    let tenths = (bytes * 10 + (1 << 19)) >> 20
    return "\(tenths / 10).\(tenths % 10) MiB"
}

/// Writes `text` to descriptor `fd` whole (unbuffered: the live line, the
/// children's lines and an interrupt's words never reorder).
func writeAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}

/// A line on stdout.
func say(_ text: String = "") { writeAll(1, text + "\n") }
