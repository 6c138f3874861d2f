// Every public region operation racing the end of its region (issue 18,
// class 1): the operation is held at a hook point in its middle while
// another thread closes the region (close()) or drops the last other
// reference to it (deinit), or, for a Purger's purge, closes or unregisters
// and drops it. The operation then completes on memory that is still the
// region's, or throws `.closed`; what it reports is true (an access never
// reports the replacement's zeros intact, an unmark reports the page that
// was purged); nothing crashes or hangs; after close() every call throws
// `.closed`, and after the drop the region is gone.
// Some operations see another thread change the page meanwhile (`meanwhile`):
// an unmark whose page is marked volatile and purged again before the end
// (its re-check must not protect close()'s empty mapping), a kernel-driven
// unmark of a page the kernel reclaimed before it began (it must report the
// page purged, or throw `.closed`: never intact).
// Rows: (10 operations + a purger's purge) × 2 mechanisms × 2 ends + 5
// kernel-driven operations × 2 ends = 54 (22 where userfaultfd is missing).
import CVRange
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Lifecycle, regions", .serialized) struct RegionLifecycleTable {
    enum Operation: String, Sendable, CaseIterable {
        case markVolatile, markNonVolatile, accessBeforeBody, accessAfterBody, purge, purgeAll
        case pageStates, status, pageOut, purgerPurge
        case kernelDrivenMarkVolatile, kernelDrivenMarkNonVolatile, kernelDrivenAccess, kernelDrivenStatus
        /// markNonVolatile of page 0 (purged), held after clearing it while
        /// page 0 is marked volatile and purged again: its late re-check.
        case markNonVolatileRepurged
        /// Kernel-driven markNonVolatile of page 2, which the kernel
        /// reclaimed before it began, held in its settling pass.
        case kernelDrivenMarkNonVolatileOfAReclaimedPage

        var kernelDriven: Bool { rawValue.hasPrefix("kernelDriven") }

        /// Where the operation is held, and on which page (nil: any).
        var hold: (point: Int32, page: Int?) {
            switch self {
            case .markVolatile: (Int32(VR_HOOK_MAP_BEFORE_CAS), nil)
            case .markNonVolatile, .markNonVolatileRepurged: (Int32(VR_HOOK_UNMARK_CLEARED), nil)
            case .accessBeforeBody, .kernelDrivenAccess: (Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), nil)
            case .accessAfterBody: (Int32(VR_HOOK_ACCESS_BEFORE_POSTCHECK), nil)
            case .purge, .purgerPurge: (Int32(VR_HOOK_DISCARD), 2)
            case .purgeAll, .kernelDrivenMarkVolatile: (Int32(VR_HOOK_MAP_LOCKED), nil)
            case .pageStates, .status, .pageOut, .kernelDrivenStatus: (Int32(VR_HOOK_REGION_CHECKED), nil)
            case .kernelDrivenMarkNonVolatile, .kernelDrivenMarkNonVolatileOfAReclaimedPage: (Int32(VR_HOOK_DIRTY_PAGE), nil)
            }
        }
    }

    enum End: String, Sendable, CaseIterable {
        /// close() on another thread.
        case close
        /// The last other reference dropped (a purger's registration too).
        case deinitialize
    }

    struct Row: Sendable, CustomStringConvertible {
        var operation: Operation
        var mechanism: FaultMechanism
        var end: End
        var description: String { "\(operation.rawValue), \(mechanism), \(end.rawValue)" }
    }

    static var rows: [Row] {
        var out: [Row] = []
        for op in Operation.allCases {
            for m in (op.kernelDriven ? (userfaultfdAvailable ? [.userfaultfd] : []) : mechanisms) {
                for end in End.allCases { out.append(Row(operation: op, mechanism: m, end: end)) }
            }
        }
        return out
    }

    /// What the held operation returned.
    enum Outcome: Sendable, Equatable {
        case done
        case closed
        case access(VolatileAccess<UInt8>)
        case unmarked([Range<Int>])
        /// An unmark of page 2 (42): what it reported purged, and the byte
        /// read just after it returned (the worker still holds the region).
        case unmarkedPage([Range<Int>], UInt8)
        case other(String)
    }

    @Test(arguments: rows)
    func operationRacingTheEnd(_ row: Row) throws {
        guard hooksAvailable("operationRacingTheEnd") else { return }
        try withHooks {
            // Page 0: written, volatile, purged. Page 1: written, non-volatile.
            // Page 2: 42, volatile. Page 3: never written.
            var region: VolatileRegion? = try region(pages: 4, row.mechanism, kernelDriven: row.operation.kernelDriven)
            fill(region!, page: 0, tag: 1)
            fill(region!, page: 1, tag: 2)
            region!.bytes[2 * page] = 42
            try region!.markVolatile(bytes(0..<1))
            try region!.purge(bytes(0..<1))
            try region!.markVolatile(bytes(2..<3))
            if row.operation == .kernelDrivenMarkNonVolatileOfAReclaimedPage {
                #expect(try reclaimAll(region!, 2..<3), "\(row): the kernel did not reclaim page 2")
            }
            weak let gone = region
            let outcome = Locked<Outcome?>(nil)
            let hold = row.operation.hold
            let holdArg = hold.page.map { hookArg(region!, page: $0) } ?? 0
            // The closer's close() waiting for a change in flight says so.
            arm(1, Int32(VR_HOOK_CLOSE_WAITING), set: Flag.c)

            var purger: Purger?
            var worker: TestThread?
            if row.operation == .purgerPurge {
                arm(0, hold.point, arg: holdArg, set: Flag.a, waitAny: Flag.b, times: 1)
                let p = try Purger(.init(budget: 0, pressureSources: .none, tick: .milliseconds(5)))
                p.register(region!)
                purger = p
            } else {
                let op = row.operation
                worker = TestThread { [r = region!] in
                    arm(0, hold.point, arg: holdArg, tid: currentTID(), set: Flag.a, waitAny: Flag.b, times: 1)
                    let result = Self.run(op, on: r)
                    outcome.withLock { $0 = result }
                    vr_test_hook_set_flags(Flag.e)
                }
            }
            #expect(waitForFlags(Flag.a), "\(row): the operation never reached its hold")
            if row.operation == .markNonVolatileRepurged {
                // Page 0, cleared by the held unmark, marked volatile and
                // purged again: its re-check will find it purged.
                try region!.markVolatile(bytes(0..<1))
                try region!.purge(bytes(0..<1))
            }

            // The end, from another thread.
            var closer: TestThread?
            switch row.end {
            case .close:
                closer = TestThread { [r = region!] in
                    r.close()
                    vr_test_hook_set_flags(Flag.d)
                }
                // Until close() is done, or waits for the operation.
                #expect(waitForFlags(Flag.c | Flag.d), "\(row): close() neither ended nor waited")
            case .deinitialize:
                if let purger { _ = purger.unregister(region!) }
                region = nil
            }
            vr_test_hook_set_flags(Flag.b)
            if let p = purger {
                #expect(waitUntil { vr_test_hook_count(Int32(VR_HOOK_DISCARD)) > 0 }, "\(row): the purger's purge never ended")
                p.stop()
            } else {
                guard waitForFlags(Flag.e, seconds: 20) else {
                    Issue.record("\(row): the operation hung")
                    return  // leave the thread: joining would hang the suite
                }
                worker?.join()
            }
            if let closer {
                guard waitForFlags(Flag.d, seconds: 20) else {
                    Issue.record("\(row): close() hung")
                    return
                }
                closer.join()
            }
            worker = nil
            closer = nil
            purger = nil

            // What the operation reported is true.
            switch outcome.withLock({ $0 }) {
            case .access(.intact(let byte)):
                #expect(byte == 42, "\(row): the access reported \(byte) intact; the page held 42")
            case .unmarked(let purged):
                #expect(purged == [bytes(0..<1)], "\(row): the unmark reported \(purged) purged, page 0 was")
            case .unmarkedPage(let purged, let byte):
                if row.operation == .kernelDrivenMarkNonVolatileOfAReclaimedPage {
                    #expect(purged == [bytes(2..<3)], "\(row): the unmark of the reclaimed page 2 reported \(purged) purged")
                } else {
                    #expect(purged == [bytes(2..<3)] || (purged.isEmpty && byte == 42),
                            "\(row): the unmark reported \(purged) purged, and page 2 reads \(byte), not 42")
                }
            case .other(let what):
                Issue.record("\(row): \(what)")
            default: break
            }

            switch row.end {
            case .close:
                let r = region!
                #expect(r.isClosed)
                // close() promises that its empty mapping reads zeros: no
                // late re-check or rediscard protected a page of it.
                for p in 0..<4 {
                    #expect(!touchFaults(UnsafeRawPointer(r.baseAddress + p * page)), "\(row): page \(p) of the closed region faults")
                }
                #expect(throws: VRangeError.closed) { try r.markVolatile(bytes(1..<2)) }
                #expect(throws: VRangeError.closed) { _ = try r.markNonVolatile(bytes(0..<1)) }
                #expect(throws: VRangeError.closed) { _ = try r.purge(bytes(2..<3)) }
                #expect(throws: VRangeError.closed) { _ = try r.pageStates(bytes(0..<4)) }
                #expect(throws: VRangeError.closed) { _ = try r.status() }
                #expect(throws: VRangeError.closed) { try r.pageOut(bytes(0..<1)) }
                #expect(throws: VRangeError.closed) { _ = try r.withVolatileAccess(bytes(2..<3)) { _ in Issue.record("body ran") } }
                #expect(r.purge(unit: 0) == 0)
            case .deinitialize:
                #expect(gone == nil, "\(row): the region outlived its last reference")
            }
        }
    }

    /// Runs `op` once on `r` (the worker's side of a row).
    static func run(_ op: Operation, on r: VolatileRegion) -> Outcome {
        do throws(VRangeError) {
            switch op {
            case .markVolatile, .kernelDrivenMarkVolatile:
                try r.markVolatile(bytes(1..<2))
                return .done
            case .markNonVolatile, .markNonVolatileRepurged:
                return .unmarked(try r.markNonVolatile(bytes(0..<1)).purgedRanges)
            case .kernelDrivenMarkNonVolatile, .kernelDrivenMarkNonVolatileOfAReclaimedPage:
                let purged = try r.markNonVolatile(bytes(2..<3)).purgedRanges
                return .unmarkedPage(purged, r.bytes[2 * page])
            case .accessBeforeBody, .accessAfterBody, .kernelDrivenAccess:
                return .access(try r.withVolatileAccess(bytes(2..<3)) { $0[0] })
            case .purge:
                let n = try r.purge(bytes(2..<3))
                return n == 0 || n == page ? .done : .other("purge released \(n) bytes")
            case .purgeAll:
                _ = try r.purgeAll()
                return .done
            case .pageStates:
                _ = try r.pageStates(bytes(0..<4))
                return .done
            case .status, .kernelDrivenStatus:
                _ = try r.status()
                return .done
            case .pageOut:
                try r.pageOut(bytes(1..<2))
                return .done
            case .purgerPurge:
                return .done
            }
        } catch .closed {
            return .closed
        } catch {
            return .other("threw \(error)")
        }
    }
}
