// Helpers for the purger's tests: fake purgeable memory with a shared log of
// what was purged, an injectable clock, waiting on a condition with a
// deadline, and small file and cgroup helpers.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The order in which units were purged, across fakes.
final class PurgeLog: Sendable {
    private let entries = Locked<[String]>([])
    func append(_ s: String) { entries.withLock { $0.append(s) } }
    var all: [String] { entries.withLock { $0 } }
}

/// PurgeableMemory with units set by the test; purging one logs "name.id".
final class FakeMemory: PurgeableMemory, Sendable {
    struct Unit: Sendable {
        var priority: PurgePriority
        var lastUsed: UInt64
        var bytes: Int
    }
    let name: String
    let log: PurgeLog
    private let units: Locked<[Int: Unit]>

    init(_ name: String, log: PurgeLog, units: [Int: Unit]) {
        self.name = name
        self.log = log
        self.units = Locked(units)
    }

    func forEachPurgeUnit(_ body: (PurgeUnit) -> Void) {
        let snapshot = units.withLock { $0 }
        for (id, u) in snapshot.sorted(by: { $0.key < $1.key }) where u.bytes > 0 {
            body(PurgeUnit(id: id, priority: u.priority, lastUsed: u.lastUsed, volatileBytes: u.bytes))
        }
    }

    func purge(unit id: Int) -> Int {
        let released = units.withLock { u -> Int in
            let b = u[id]?.bytes ?? 0
            u[id]?.bytes = 0
            return b
        }
        if released > 0 { log.append("\(name).\(id)") }
        return released
    }

    func set(_ id: Int, bytes: Int) { units.withLock { $0[id]?.bytes = bytes } }
}

/// A monotonic clock the test moves by hand.
final class TestClock: Sendable {
    private let ns = Atomic<UInt64>(1_000_000_000_000)
    var now: UInt64 { ns.load(ordering: .relaxed) }
    func advance(milliseconds: UInt64) { ns.add(milliseconds * 1_000_000, ordering: .relaxed) }
    var closure: @Sendable () -> UInt64 { { [self] in self.now } }
}

/// A purger with an injected clock and the live host.
func testPurger(_ configuration: Purger.Configuration, clock: TestClock? = nil) throws -> Purger {
    if let clock { return try Purger(configuration, clock: clock.closure, host: LiveHost()) }
    return try Purger(configuration)
}

/// Polls `condition` until it holds or `seconds` pass (no fixed sleep:
/// yields for the first few thousand looks, so that a race test reacts at
/// once, then every millisecond). Returns whether it held.
func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Kernel.monotonicNanoseconds() + UInt64(seconds * 1e9)
    var looks = 0
    while Kernel.monotonicNanoseconds() < deadline {
        if condition() { return true }
        looks += 1
        if looks < 5000 {
            sched_yield()
        } else {
            var ts = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&ts, nil)
        }
    }
    return condition()
}

/// A region of `pages` pages, every page written and marked volatile.
func volatileRegion(pages: Int, priority: PurgePriority = .normal, tag: UInt8 = 1) throws -> VolatileRegion {
    let r = try VolatileRegion(byteCount: pages * page, options: .init(purgePriority: priority))
    for p in 0..<pages { fill(r, page: p, tag: tag) }
    try r.markVolatile(0..<r.size)
    return r
}

/// The whole of a file as text, or nil.
func readText(_ path: String) -> String? {
    guard let bytes = try? Kernel.readFile(path) else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

/// Writes `text` to a new temporary file and returns its path.
func temporaryFile(_ text: String, name: String = "vrange-test") -> String {
    var template = Array("/tmp/\(name)-XXXXXX".utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    precondition(fd >= 0, "mkstemp failed")
    _ = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    close(fd)
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Replaces the contents of the file at `path`.
/// Replaces the contents of the file at `path` in one write from offset 0,
/// then cuts what is left over: a source polling the file never reads it
/// empty (O_TRUNC first would let a poll land between the two steps and see
/// a malformed, empty file). The tests' rewrites keep the length.
func rewrite(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY)
    precondition(fd >= 0)
    let n = text.utf8CString.withUnsafeBufferPointer { pwrite(fd, $0.baseAddress, $0.count - 1, 0) }
    precondition(n >= 0)
    _ = ftruncate(fd, off_t(n))
    close(fd)
}

/// Whether this process runs as root.
var isRoot: Bool { geteuid() == 0 }

/// Whether volatile page `p` of `r` still holds the pattern of `tag`, read
/// through an optimistic access (a purged page answers false instead of
/// raising SIGBUS, so that a wrong purge fails the test, not the process).
func volatileHolds(_ r: VolatileRegion, page p: Int, tag: UInt8) -> Bool {
    let result = try? r.withVolatileAccess((p * page)..<((p + 1) * page)) { buffer -> Bool in
        for i in stride(from: 0, to: page, by: 8)
        where buffer.load(fromByteOffset: i, as: UInt64.self) != UInt64(tag) &* 0x0101_0101_0101_0101 ^ UInt64(i) {
            return false
        }
        return true
    }
    return result == .intact(true)
}
