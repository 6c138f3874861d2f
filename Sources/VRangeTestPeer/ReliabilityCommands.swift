// The reliability tests' commands (see main.swift for the protocol):
//   chaos KIND INDEX N SEED MILLIS LEDGERFD [safe] [jitter]
//        runs participant INDEX of N of kind KIND ("file": FileChaos on
//        the adopted file; "cache": CacheChaos, an allocator-backed cache of
//        its own) until MILLIS have passed; replies its counts.
//   scribble MILLIS SEED MODE
//        writes random bytes over the adopted file's sidecar (MODE "body":
//        after the 128-byte header; "all": header included, and the header
//        is hit first) through a plain mapping of its own, until MILLIS
//        have passed; replies how many writes it made.
//   accessslow ID LO HI
//        an optimistic access of mapping ID's pages LO..<HI whose body
//        replies "inbody", waits for a line "go", then reads page LO.
import Synchronization
#if DEBUG
@testable import VRange
#else
import VRange
#endif
import VRangeChaosLedger
#if canImport(Glibc)
import Glibc
#endif

func reliabilityCommand(_ words: [Substring]) throws -> String? {
    let n = words.dropFirst().map { Int($0) ?? -1 }
    switch words.first ?? "" {
    case "chaos":
        guard words.count >= 7, let f = file else { return "err chaos needs an adopted file and 6 arguments" }
        let kind = words[1]
        let ledger = ChaosLedger(fd: Int32(n[5]))
        guard ledger != nil || words.contains("safe") else { return "err no ledger on descriptor \(n[5])" }
        if words.contains("jitter") { installJitter(f) }
        let deadline = monotonicNow() + UInt64(max(n[4], 0)) * 1_000_000
        switch kind {
        case "file":
            let worker = FileChaos(file: f, ledger: ledger, index: n[1], participants: max(n[2], 1),
                                   seed: UInt64(bitPattern: Int64(n[3])), safe: words.contains("safe"))
            return worker.run(until: deadline)
        case "cache":
            return CacheChaos(ledger: ledger, index: n[1], seed: UInt64(bitPattern: Int64(n[3]))).run(until: deadline)
        default:
            return "err unknown participant kind \(kind)"
        }
    case "scribble":
        guard let f = file else { return "err scribble needs an adopted file" }
        return scribble(f, millis: n[0], seed: UInt64(bitPattern: Int64(n[1])), headerToo: words.count > 3 && words[3] == "all")
    case "accessslow":
        guard let m = mappings[n[0]] else { throw VRangeError.closed }
        let ps = m.pageSize
        let r = try m.withVolatileAccess((n[1] * ps)..<(n[2] * ps)) { buf -> UInt8 in
            reply("inbody")
            while let line = readLine(), line != "go" {}
            return buf[0]
        }
        return r == .purged ? "ok purged" : "ok intact"
    default:
        return nil
    }
}

func monotonicNow() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Writes random bytes over the sidecar until the deadline: runs of 1 to 64
/// bytes at random offsets, words at random offsets, now and then a whole
/// page of one byte; a yield between bursts.
func scribble(_ f: VolatileFile, millis: Int, seed: UInt64, headerToo: Bool) -> String {
    let fd = f.descriptors.sidecar
    var st = stat()
    guard fstat(fd, &st) == 0, let raw = mmap(nil, Int(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
          raw != MAP_FAILED else { return "err cannot map the sidecar (errno \(errno))" }
    defer { munmap(raw, Int(st.st_size)) }
    let size = Int(st.st_size)
    let first = headerToo ? 0 : 128
    var random = SplitMix64(seed: seed)
    let deadline = monotonicNow() + UInt64(max(millis, 0)) * 1_000_000
    var writes = 0
    if headerToo {  // the header first: later adopters must refuse the file
        raw.storeBytes(of: random.next(), toByteOffset: 16, as: UInt64.self)
        writes += 1
    }
    while monotonicNow() < deadline {
        for _ in 0..<16 {
            let at = first + Int(random.next() % UInt64(size - first))
            switch random.next() % 8 {
            case 0:  // a run of bytes
                let len = min(1 + Int(random.next() % 64), size - at)
                for i in 0..<len { raw.storeBytes(of: UInt8(truncatingIfNeeded: random.next()), toByteOffset: at + i, as: UInt8.self) }
            case 1:  // a page's worth of one byte (states, marks: all 00, 01, 10 or 11 at once)
                let b = [0x00, 0x55, 0xAA, 0xFF][Int(random.next() % 4)] as UInt8
                let len = min(4096, size - at)
                memset(raw + at, Int32(b), len)
            default:  // one aligned word
                let w = at & ~7
                if w + 8 <= size { (raw + w).assumingMemoryBound(to: Atomic<UInt64>.self).pointee.store(random.next(), ordering: .relaxed) }
            }
            writes += 1
        }
        sched_yield()
    }
    return "ok writes=\(writes)"
}

/// Yields at every test hook point of the file's operations (debug builds):
/// widens every race window.
func installJitter(_ f: VolatileFile) {
    #if DEBUG
    f.testHook.withLock { $0 = { _ in sched_yield() } }
    #endif
}

/// Records a chaos participant's violation in the ledger (when it has one)
/// and on stderr, where the test shows it.
func reportViolation(_ text: String, in ledger: ChaosLedger?) {
    ledger?.violation(text)
    let line = Array(("VIOLATION " + text + "\n").utf8)
    _ = line.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
}
