// The lifecycle rule for shared files (issue 18, class 1; DESIGN.md §9), as
// a table: every public VolatileFile / FileMapping operation that goes past
// the marks' fast paths, held at a hook in its middle (holding its use of
// the file), while another thread closes the file, closes the mapping, or
// drops every reference (deinit); and the operations a Purger's thread
// runs, held there, against the same three. Each row: the operation ends
// with its value or `.closed` (no crash), every later call on what was
// closed throws `.closed`, resources go when the last use ends, a dropped
// object is deinitialised once the operation lets go.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The public operations of a shared file that hold a use, each with the
/// hook point that holds it in its middle.
enum FileTableOp: String, CaseIterable, Sendable {
    case filePurge, filePurgeAll, filePurgeUnit, fileStatus, fileMarkNonVolatile, fileMap, fileSend
    case fileInheritableDescriptors, fileForEachPurgeUnit
    case mappingMarkNonVolatile, mappingMarkNonVolatileOffset, mappingStatus, mappingAccess, mappingClose

    var point: FileOperation {
        switch self {
        case .filePurge, .filePurgeAll, .filePurgeUnit: .filePurge
        case .fileStatus: .fileStatus
        case .fileMarkNonVolatile: .fileMarkNonVolatile
        case .fileMap: .fileMap
        case .fileSend: .fileSend
        case .fileInheritableDescriptors: .fileInheritableDescriptors
        case .fileForEachPurgeUnit: .filePurgeUnits
        case .mappingMarkNonVolatile, .mappingMarkNonVolatileOffset: .mappingMarkNonVolatile
        case .mappingStatus: .mappingStatus
        case .mappingAccess: .mappingAccess
        case .mappingClose: .mappingClose
        }
    }

    /// Runs the operation; "ok", or the error. `socket` is for `fileSend`
    /// (the other end is drained by the caller when it says "ok").
    func run(_ f: VolatileFile, _ m: FileMapping, socket: Int32) -> String {
        let span = 64 * page  // two map words: the marks' slow path
        do {
            switch self {
            case .filePurge: _ = try f.purge(0..<span)
            case .filePurgeAll: _ = try f.purgeAll()
            case .filePurgeUnit: _ = f.purge(unit: 0)
            case .fileStatus: _ = try f.status()
            case .fileMarkNonVolatile: _ = try f.markNonVolatile(0..<span)
            case .fileMap: try f.map().close()
            case .fileSend: try f.send(over: socket)
            case .fileInheritableDescriptors:
                let d = try f.inheritableDescriptors()
                Kernel.close(fd: d.data); Kernel.close(fd: d.sidecar)
            case .fileForEachPurgeUnit: f.forEachPurgeUnit { _ in }
            case .mappingMarkNonVolatile: _ = try m.markNonVolatile(0..<span)
            case .mappingMarkNonVolatileOffset: _ = try m.markNonVolatile(offset: 0, length: span)
            case .mappingStatus: _ = try m.status()
            case .mappingAccess:
                // Page 0 holds tag 1 (tableFile): intact means 1.
                if case .intact(let v) = try m.withVolatileAccess(0..<page, { $0[0] }), v != 1 { return "intact(\(v)): a wrong value" }
            case .mappingClose: m.close()
            }
            return "ok"
        } catch {
            return "\(error)"
        }
    }
}

/// A file of 64 pages with one mapping, some pages purged and some volatile
/// (so that purges and repopulations have work), for the table tests.
func tableFile(mechanism: FaultMechanism = .automatic) throws -> (VolatileFile, FileMapping) {
    let f = try VolatileFile(byteCount: 64 * page, options: .init(maxMappers: 8))
    let m = try f.map(options: .init(faultMechanism: mechanism))
    for p in [0, 1, 33, 40] { fill(m, page: p, tag: UInt8(p + 1)) }
    try f.markVolatile(0..<(48 * page))
    _ = try f.purge((40 * page)..<(44 * page))
    return (f, m)
}

/// Holds the first thread that reaches `point` of `f` at `gate`. Captures
/// no file or mapping.
func holdAt(_ point: FileHookPoint, of f: VolatileFile, gate: Gate) {
    f.testHook.withLock { $0 = { p in
        guard p == point else { return }
        gate.holdFirst()
    } }
}

@Suite("Lifecycle table: shared files", .serialized) struct LifecycleTableFile {
    enum Closer: String, CaseIterable, Sendable { case fileClose, mappingClose, dropAll }
    enum Runner: String, Sendable { case otherThread, purgerThread }

    struct Row: CustomStringConvertible, Sendable {
        let op: FileTableOp
        let closer: Closer
        let runner: Runner
        var description: String { "\(op.rawValue) × \(closer.rawValue) (\(runner.rawValue))" }
    }

    /// 14 operations × 3 closers on another thread, plus the 2 operations a
    /// Purger's thread runs × 3 closers: 48 rows.
    static let rows: [Row] =
        FileTableOp.allCases.flatMap { op in Closer.allCases.map { Row(op: op, closer: $0, runner: .otherThread) } }
        + [FileTableOp.fileForEachPurgeUnit, .filePurgeUnit].flatMap { op in
            Closer.allCases.map { Row(op: op, closer: $0, runner: .purgerThread) }
        }

    @Test func rowCount() { #expect(Self.rows.count == 48) }

    final class Objects: @unchecked Sendable {
        let lock = Mutex<(VolatileFile?, FileMapping?)>((nil, nil))
    }

    @Test(arguments: rows)
    func operationInFlightWhileClosed(_ row: Row) throws {
        guard hooksAvailable("operationInFlightWhileClosed") else { return }
        let (a, b) = try Kernel.socketPair()
        defer { Kernel.close(fd: a); Kernel.close(fd: b) }
        let objects = Objects()
        weak var weakFile: VolatileFile?
        weak var weakMapping: FileMapping?
        let gate = Gate()
        let outcome = Mutex<String?>(nil)
        var purger: Purger?
        do {
            let (f, m) = try tableFile()
            weakFile = f; weakMapping = m
            objects.lock.withLock { $0 = (f, m) }
            holdAt(.inOperation(row.op.point), of: f, gate: gate)
        }
        var worker: TestThread?
        switch row.runner {
        case .otherThread:
            worker = TestThread {
                guard let (f, m) = objects.lock.withLock({ o in o.0.map { ($0, o.1!) } }) else { return }
                let r = row.op.run(f, m, socket: a)
                outcome.withLock { $0 = r }
            }
        case .purgerThread:
            purger = try testPurger(.init(budget: 0, pressureSources: .none, tick: .milliseconds(5)))
            purger!.register(objects.lock.withLock { $0.0! })
        }
        #expect(waitUntil { gate.reached }, "the operation reached its hook")
        let dataFD = objects.lock.withLock { $0.0!.descriptors.data }
        let mappedBase = objects.lock.withLock { $0.1!.mappedBase }
        // The closer, on this thread, while the operation is held.
        switch row.closer {
        case .fileClose: objects.lock.withLock { $0.0?.close() }
        case .mappingClose: objects.lock.withLock { $0.1?.close() }
        case .dropAll: objects.lock.withLock { $0 = (nil, nil) }
        }
        // What the operation may still use is still the library's.
        #expect(fcntl(dataFD, F_GETFD) >= 0, "\(row): the descriptors stay open while the operation is in flight")
        if !(row.closer == .dropAll && row.runner == .purgerThread) {  // there nothing holds the mapping: it is gone
            #expect(FileIssue18Tests.permissions(of: mappedBase) != "unmapped", "\(row): the mapping's addresses stay reserved")
        }
        if row.runner == .purgerThread, row.closer == .dropAll {
            // The purger holds files weakly: its pass keeps this one alive.
            #expect(weakFile != nil)
        }
        gate.open()
        worker?.join()
        purger?.stop()
        purger = nil
        if let r = outcome.withLock({ $0 }) {
            #expect(r == "ok" || r == "\(VRangeError.closed)", "\(row): the operation ended with \(r)")
            if r == "ok" && row.op == .fileSend {
                if let got = try? Kernel.receive(socket: b, capacity: 64) { for fd in got.descriptors { Kernel.close(fd: fd) } }
            }
        }

        switch row.closer {
        case .fileClose:
            let f = objects.lock.withLock { $0.0! }
            let m = objects.lock.withLock { $0.1! }
            f.testHook.withLock { $0 = nil }
            #expect(f.isClosed && f.isReleased, "\(row): closed, and released once the operation ended")
            #expect(throws: VRangeError.closed) { try f.purgeAll() }
            #expect(throws: VRangeError.closed) { try f.status() }
            #expect(throws: VRangeError.closed) { try f.markVolatile(0..<page) }
            #expect(throws: VRangeError.closed) { try f.markNonVolatile(0..<(64 * page)) }
            #expect(throws: VRangeError.closed) { try f.map() }
            #expect(throws: VRangeError.closed) { try f.inheritableDescriptors() }
            #expect(throws: VRangeError.closed) { try m.markVolatile(0..<page) }
            #expect(throws: VRangeError.closed) { try m.status() }
            #expect(throws: VRangeError.closed) { try m.withVolatileAccess(0..<page) { $0[0] } }
        case .mappingClose:
            let f = objects.lock.withLock { $0.0! }
            let m = objects.lock.withLock { $0.1! }
            f.testHook.withLock { $0 = nil }
            #expect(m.isClosed)
            #expect(throws: VRangeError.closed) { try m.markVolatile(0..<page) }
            #expect(throws: VRangeError.closed) { try m.markNonVolatile(0..<page) }
            #expect(throws: VRangeError.closed) { try m.status() }
            // The file goes on; its slot is free again.
            #expect(throws: Never.self) { try f.purgeAll() }
            let again = try f.map()
            #expect(try again.markNonVolatile(0..<page).range == 0..<page)
            again.close()
            f.close()
        case .dropAll:
            #expect(weakMapping == nil && weakFile == nil, "\(row): dropped, deinitialised once the operation let go")
        }
    }
}
