// The C fault handler's region table and per-thread access scopes, wrapped.
import CVRange

extension Kernel {
    enum FaultTable {
        enum Mechanism: Int32, Sendable {
            case userfaultfd = 1  // VR_MECHANISM_USERFAULTFD
            case mprotect = 2     // VR_MECHANISM_MPROTECT
        }

        /// Installs the handlers (first call only) and publishes a region.
        /// Returns its slot.
        static func register(
            base: UnsafeMutableRawPointer, length: Int, pageSize: Int,
            map: UnsafePointer<UInt64>, mechanism: Mechanism
        ) throws(SystemError) -> Int32 {
            var slot: Int32 = -1
            try checkCode("vr_region_register",
                          vr_region_register(base, length, pageSize, map, mechanism.rawValue, &slot))
            return slot
        }

        /// Withdraws a region; returns once no handler is looking at it.
        static func unregister(slot: Int32) { vr_region_unregister(slot) }

        /// How many regions the at-fork child handler failed to re-register.
        static var forkRestoreFailures: UInt32 { vr_fork_restore_failures() }

        /// Opens an access scope; false when nested too deep.
        static func beginScope(slot: Int32, base: UnsafeRawPointer, length: Int) -> Bool {
            vr_scope_begin(slot, base, length) == 0
        }

        /// The pages that faulted inside a scope, as handed back by `endScope`.
        struct ScopeFaults {
            var count: Int
            var records: (UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt,
                          UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            /// More pages faulted than were recorded.
            var overflow: Bool

            /// Calls `body` with each recorded page address.
            func forEachPage(_ body: (UInt) -> Void) {
                withUnsafeBytes(of: records) { raw in
                    let pages = raw.bindMemory(to: UInt.self)
                    for i in 0..<min(count, Int(VR_SCOPE_RECORDS)) { body(pages[i]) }
                }
            }
        }

        /// Closes the innermost scope.
        static func endScope() -> ScopeFaults {
            var faults = ScopeFaults(count: 0, overflow: false)
            var overflow: Int32 = 0
            let n = withUnsafeMutableBytes(of: &faults.records) { raw in
                vr_scope_end(raw.baseAddress!.assumingMemoryBound(to: UInt.self), &overflow)
            }
            faults.count = Int(n)
            faults.overflow = overflow != 0
            return faults
        }

        /// Dirties one byte of each page (cancelling MADV_FREE) inside a scope
        /// of its own (always available, whatever the nesting); sets bit i of
        /// `faulted` for each page the kernel had reclaimed. The caller holds
        /// the pages' locks.
        static func dirtyPages(
            slot: Int32, start: UnsafeMutableRawPointer, count: Int, pageSize: Int,
            faulted: UnsafeMutablePointer<UInt64>
        ) -> Int {
            vr_dirty_pages(slot, start, count, pageSize, faulted)
        }
    }
}
