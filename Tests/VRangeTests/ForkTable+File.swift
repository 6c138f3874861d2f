// Fork safety of shared files (issue 18, class 2; DESIGN.md §9), as a
// table: fork() while another thread is held at each FileHookPoint, and
// inside each public operation that holds a use of the file (its
// `.inOperation` point). The fork child then purges, marks, pins, maps,
// accesses and closes every object, and must exit 0 within 10 s (its
// alarm). A point that holds a file lock makes fork wait in the files
// layer's prepare handler: the held thread is let go once the forking
// thread has reached it.
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Fork table: shared files", .serialized) struct ForkTableFile {
    /// A hook point, and the operation that reaches it.
    struct Row: CustomStringConvertible, Sendable {
        let name: String
        let point: FileHookPoint
        var description: String { name }
    }

    /// 8 protocol points + 11 operations' `.inOperation` points: 19 rows.
    static let rows: [Row] = [
        Row(name: "purgeLocked", point: .purgeLocked(word: 0)),
        Row(name: "purgeBeforePunch", point: .purgeBeforePunch(0..<0)),
        Row(name: "purgeAfterPunch", point: .purgeAfterPunch(0..<0)),
        Row(name: "publishedOneWord", point: .publishedOneWord(0..<0)),
        Row(name: "published", point: .published(0..<0)),
        Row(name: "accessLocked", point: .accessLocked(word: 0)),
        Row(name: "mappingsSnapshot", point: .mappingsSnapshot(0..<0)),
        Row(name: "fastMark", point: .fastMark(0..<0)),
    ] + FileOperation.allCases.map { Row(name: "inOperation(\($0.rawValue))", point: .inOperation($0)) }

    @Test func rowCount() { #expect(Self.rows.count == 19) }

    /// Whether `p` is the row's point (associated values aside).
    static func matches(_ p: FileHookPoint, _ row: FileHookPoint) -> Bool {
        switch (p, row) {
        case (.purgeLocked, .purgeLocked), (.purgeBeforePunch, .purgeBeforePunch),
             (.purgeAfterPunch, .purgeAfterPunch), (.publishedOneWord, .publishedOneWord),
             (.published, .published), (.accessLocked, .accessLocked), (.mappingsSnapshot, .mappingsSnapshot),
             (.fastMark, .fastMark):
            return true
        case (.inOperation(let a), .inOperation(let b)): return a == b
        default: return false
        }
    }

    /// What the held thread runs to reach the row's point.
    static func reach(_ point: FileHookPoint, _ f: VolatileFile, _ m: FileMapping, socket: Int32) {
        switch point {
        case .purgeLocked, .purgeBeforePunch, .purgeAfterPunch, .mappingsSnapshot, .purgeLockWait: _ = try? f.purgeAll()
        case .publishedOneWord: _ = try? m.markNonVolatile(0..<page)
        case .fastMark: try? m.markVolatile(0..<page)
        case .published: _ = try? m.markNonVolatile(0..<(64 * page))
        case .accessLocked:
            // A purge inside the access: the page faults in it, and its end
            // punches the page out again under the purge lock.
            _ = try? m.withVolatileAccess(0..<page) { buffer -> UInt8 in
                _ = try? f.purge(0..<page)
                return buffer[0]
            }
        case .inOperation(let op):
            let tableOp: FileTableOp = switch op {
            case .filePurge: .filePurgeAll
            case .fileStatus: .fileStatus
            case .fileMarkNonVolatile: .fileMarkNonVolatile
            case .fileMap: .fileMap
            case .fileSend: .fileSend
            case .fileInheritableDescriptors: .fileInheritableDescriptors
            case .filePurgeUnits: .fileForEachPurgeUnit
            case .mappingMarkNonVolatile: .mappingMarkNonVolatile
            case .mappingStatus: .mappingStatus
            case .mappingAccess: .mappingAccess
            case .mappingClose: .mappingClose
            }
            _ = tableOp.run(f, m, socket: socket)
        }
    }

    /// The fork child's work: every object used and closed. 0, or the step
    /// that failed.
    static func childWork(_ f: VolatileFile, _ m: FileMapping) -> Int32 {
        childWatchdog(10)
        f.testHook.withLock { $0 = nil }
        guard (try? f.purgeAll()) != nil else { return 20 }
        guard (try? f.markVolatile(0..<(2 * page))) != nil else { return 21 }
        guard (try? f.markNonVolatile(0..<(64 * page))) != nil else { return 22 }
        guard (try? f.status()) != nil else { return 23 }
        guard let m2 = try? f.map(options: .init(faultMechanism: .mprotect)) else { return 24 }
        guard (try? m2.markVolatile(0..<page)) != nil, (try? m2.markNonVolatile(0..<(64 * page))) != nil else { return 25 }
        guard (try? m2.withVolatileAccess(0..<page) { $0[0] }) != nil, (try? m2.status()) != nil else { return 26 }
        guard let d = try? f.inheritableDescriptors() else { return 27 }
        Kernel.close(fd: d.data)
        Kernel.close(fd: d.sidecar)
        f.forEachPurgeUnit { _ in }
        // The inherited mapping is the parent's: it says so, and closes.
        do {
            try m.markVolatile(0..<page)
            return 28
        } catch {
            // (.closed where the held thread was closing it when fork came)
            guard error == .inheritedAcrossFork || error == .closed else { return 29 }
        }
        m2.close(); m.close(); f.close()
        guard f.isReleased else { return 30 }
        return 0
    }

    @Test(arguments: rows.indices)
    func forkWhileHeld(_ index: Int) async {
        guard hooksAvailable("forkWhileHeld"), forkTestsRun("forkWhileHeld") else { return }
        setenv("VRANGE_FORK_TABLE_ROW", "\(index)", 1)
        await #expect(processExitsWith: .success, "row \(Self.rows[index])") {
            let row = ForkTableFile.rows[environmentInt("VRANGE_FORK_TABLE_ROW", 0)]
            childWatchdog(60)
            let (f, m) = try! tableFile(mechanism: .mprotect)
            let (a, b) = try! Kernel.socketPair()
            let gate = Gate()
            f.testHook.withLock { $0 = { p in
                guard ForkTableFile.matches(p, row.point) else { return }
                gate.holdFirst()
            } }
            let worker = TestThread { ForkTableFile.reach(row.point, f, m, socket: a) }
            guard waitUntil({ gate.reached }) else { print("\(row): the point was not reached"); _exit(10) }
            let status = Atomic<Int32>(-1)
            let prepared = vr_files_prepare_count()
            let forker = TestThread { status.store(forked { ForkTableFile.childWork(f, m) }, ordering: .relaxed) }
            // Let go of the held thread once the forker is in the prepare
            // handler (it waits there when the point holds a file lock).
            _ = waitUntil(seconds: 2) { vr_files_prepare_count() != prepared }
            gate.open()
            forker.join(); worker.join()
            if case .inOperation(.fileSend) = row.point {
                if let got = try? Kernel.receive(socket: b, capacity: 64) { for fd in got.descriptors { Kernel.close(fd: fd) } }
            }
            let s = status.load(ordering: .relaxed)
            if exitCode(s) != 0 {
                print("\(row): fork child status \(s): exit \(exitCode(s).map(String.init) ?? "-"), signal \(terminatingSignal(s).map(String.init) ?? "-")")
                _exit(Int32(exitCode(s) ?? 99))
            }
            // The parent goes on.
            f.testHook.withLock { $0 = nil }
            guard (try? f.purgeAll()) != nil, (try? f.markNonVolatile(0..<(64 * f.pageSize))) != nil else { _exit(11) }
            _exit(0)
        }
    }
}
