// VRangeTestPeer: a separate process that the shared-file tests spawn and
// drive, one command per line over the socket on descriptor 3, one reply
// line each ("ok ..." or "err ..."). It exits when the socket closes (the
// test process is gone) or on "exit". Debug builds also obey the test hooks
// ("hold": block in the middle of a purge until killed).
//
// Pages in commands are page indices: file pages for file-level commands,
// mapping pages for mapping commands (a mapping is named by a small integer).
// The chaos, scribbling and slow-access commands are in ReliabilityCommands.swift.
import CVRange
#if DEBUG
@testable import VRange
#else
import VRange
#endif
#if canImport(Glibc)
import Glibc
#endif

let control: Int32 = 3
nonisolated(unsafe) var file: VolatileFile?
nonisolated(unsafe) var mappings: [Int: FileMapping] = [:]
nonisolated(unsafe) var pending: [UInt8] = []

func reply(_ s: String) {
    let line = Array((s + "\n").utf8)
    var off = 0
    while off < line.count {
        let n = line[off...].withUnsafeBytes { write(control, $0.baseAddress, $0.count) }
        if n <= 0 { if errno == EINTR { continue }; exit(3) }
        off += n
    }
}

/// The next line from the socket, or nil at end of stream.
func readLine() -> String? {
    while true {
        if let nl = pending.firstIndex(of: 10) {
            let line = String(decoding: pending[..<nl], as: UTF8.self)
            pending.removeSubrange(...nl)
            return line
        }
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = chunk.withUnsafeMutableBytes { read(control, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return nil }
        pending += chunk.prefix(n)
    }
}

func pageSize() -> Int { file?.pageSize ?? Int(sysconf(Int32(_SC_PAGESIZE))) }
func byteRange(_ lo: Int, _ hi: Int) -> Range<Int> { (lo * pageSize())..<(hi * pageSize()) }
func runs(_ r: NonVolatileResult) -> String {
    let ps = pageSize()
    let list = r.purgedRanges.map { "\($0.lowerBound / ps)-\($0.upperBound / ps)" }
    return list.isEmpty ? "intact" : list.joined(separator: ",")
}

/// Fills page `p` of mapping `m` with a pattern of `tag`.
func fill(_ m: FileMapping, _ p: Int, _ tag: UInt8) {
    let base = m.baseAddress + p * m.pageSize
    for i in stride(from: 0, to: m.pageSize, by: 8) {
        base.storeBytes(of: UInt64(tag) &* 0x0101_0101_0101_0101 ^ UInt64(i), toByteOffset: i, as: UInt64.self)
    }
}

/// "tag" when page `p` holds tag's pattern, "zero" when all zero, else "other".
func look(_ m: FileMapping, _ p: Int, _ tag: UInt8) -> String {
    let base = UnsafeRawPointer(m.baseAddress + p * m.pageSize)
    var isTag = true, isZero = true
    for i in stride(from: 0, to: m.pageSize, by: 8) {
        let v = base.load(fromByteOffset: i, as: UInt64.self)
        if v != UInt64(tag) &* 0x0101_0101_0101_0101 ^ UInt64(i) { isTag = false }
        if v != 0 { isZero = false }
    }
    return isTag ? "tag" : (isZero ? "zero" : "other")
}

func run(_ words: [Substring]) throws -> String {
    let cmd = words.first ?? ""
    let n = words.dropFirst().map { Int($0) ?? -1 }
    func mapping(_ id: Int) throws -> FileMapping {
        guard let m = mappings[id] else { throw VRangeError.closed }
        return m
    }
    func theFile() throws -> VolatileFile {
        guard let f = file else { throw VRangeError.closed }
        return f
    }
    switch cmd {
    case "adopt":  // adopt DATA SIDECAR (inherited descriptors)
        file = try VolatileFile(adopting: SharedFileDescriptors(data: Int32(n[0]), sidecar: Int32(n[1])))
        return "ok \(file!.size)"
    case "receive":  // "ready", then the test sends the pair over the socket
        reply("ready")
        file = try VolatileFile(receivingFrom: control)
        return "ok \(file!.size)"
    case "send":  // sends our pair back over the control socket, after the reply
        return "ok"
    case "map":  // map ID LO HI [private]
        let opts = FileMapping.Options(privateMapping: words.count > 4 && words[4] == "private")
        let m = try theFile().map(byteRange(n[1], n[2]), options: opts)
        mappings[n[0]] = m
        return "ok \(m.faultMechanism)"
    case "unmap":
        mappings.removeValue(forKey: n[0])?.close()
        return "ok"
    case "vote": try mapping(n[0]).markVolatile(byteRange(n[1], n[2])); return "ok"
    case "pin": return "ok " + runs(try mapping(n[0]).markNonVolatile(byteRange(n[1], n[2])))
    case "fvol": try theFile().markVolatile(byteRange(n[0], n[1])); return "ok"
    case "fnonvol": return "ok " + runs(try theFile().markNonVolatile(byteRange(n[0], n[1])))
    case "purge": return "ok \(try theFile().purge(byteRange(n[0], n[1])) / pageSize())"
    case "fill":  // fill ID PAGE TAG
        fill(try mapping(n[0]), n[1], UInt8(n[2])); return "ok"
    case "look": return "ok " + look(try mapping(n[0]), n[1], UInt8(n[2]))
    case "access":
        let r = try mapping(n[0]).withVolatileAccess(byteRange(n[1], n[2])) { $0[0] }
        return r == .purged ? "ok purged" : "ok intact"
    case "touch":  // touch ID PAGE: reads a byte (SIGBUS if purged)
        let m = try mapping(n[0])
        return "ok \(vr_read_byte(m.baseAddress + n[1] * m.pageSize))"
    case "status":
        let s = try theFile().status()
        return "ok purged=\(s.purgedBytes / pageSize()) purgeable=\(s.purgeableBytes / pageSize()) "
            + "filevolatile=\(s.fileVolatileBytes / pageSize()) shared=\(s.sharedMappers) private=\(s.privateMappers)"
    case "truncate":  // ftruncate of the data descriptor to N bytes: the errno
        let fd = try theFile().descriptors.data
        return ftruncate(fd, off_t(n[0])) == 0 ? "ok 0" : "ok \(errno)"
    case "hold":  // hold POINT: block at that point of the next purge until killed
        #if DEBUG
        let point = String(words[1])
        try theFile().testHook.withLock { $0 = { p in
            let hit: Bool
            switch p {
            case .purgeLocked: hit = point == "locked"
            case .purgeBeforePunch: hit = point == "punch"
            case .purgeAfterPunch: hit = point == "punched"
            case .published, .publishedOneWord: hit = false
            case .accessLocked: hit = point == "accesslocked"
            case .mappingsSnapshot, .inOperation, .fastMark, .purgeLockWait: hit = false
            }
            if hit {
                reply("held")
                var b: UInt8 = 0
                while read(control, &b, 1) != 0 {}  // until killed (or the socket closes)
                _exit(9)
            }
        } }
        return "ok"
        #else
        return "err hooks need a debug build"
        #endif
    case "churn":  // churn ID PAGE TAG ROUNDS: vote, pin, check, refill; counts violations
        let m = try mapping(n[0])
        let (pg, tag, rounds) = (n[1], UInt8(n[2]), n[3])
        var violations = 0, lost = 0
        fill(m, pg, tag)
        for _ in 0..<rounds {
            try m.markVolatile(byteRange(pg, pg + 1))
            sched_yield()
            let r = try m.markNonVolatile(byteRange(pg, pg + 1))
            let seen = look(m, pg, tag)
            if r.wasPurged {
                lost += 1
                if seen != "zero" { violations += 1 }
                fill(m, pg, tag)
            } else if seen != "tag" {
                violations += 1
            }
        }
        return "ok violations=\(violations) lost=\(lost)"
    case "purgeloop":  // purgeloop ROUNDS: purges the whole file again and again
        var total = 0
        for _ in 0..<n[0] { total += try theFile().purgeAll() / pageSize(); sched_yield() }
        return "ok \(total)"
    case "jitter":  // yield at every hook point (widens every race window)
        #if DEBUG
        try theFile().testHook.withLock { $0 = { _ in sched_yield() } }
        return "ok"
        #else
        return "err hooks need a debug build"
        #endif
    case "closefile":
        mappings.values.forEach { $0.close() }
        mappings = [:]
        file?.close()
        file = nil
        return "ok"
    case "pid": return "ok \(getpid())"
    case "exit": exit(0)
    default: return try reliabilityCommand(words) ?? "err unknown command \(cmd)"
    }
}

signal(SIGPIPE, SIG_IGN)
while let line = readLine() {
    let words = line.split(separator: " ")
    do {
        let out = try run(words)
        reply(out)
        // "send": after the reply, wait for "go" (so that the test's reading
        // of the reply cannot swallow the descriptors), then send the pair.
        if words.first == "send", readLine() == "go" { try file?.send(over: control) }
    } catch {
        reply("err \(error)")
    }
}
exit(0)
