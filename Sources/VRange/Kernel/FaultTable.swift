// The C fault handler's region table and per-thread access scopes, wrapped.
import CVRange

extension Kernel {
    enum FaultTable {
        enum Mechanism: Int32, Sendable {
            case userfaultfd = 1  // VR_MECHANISM_USERFAULTFD
            case mprotect = 2     // VR_MECHANISM_MPROTECT
        }

        /// What the handler needs to know about a region (vr_region_info).
        struct Region {
            var base: UnsafeMutableRawPointer
            var length: Int
            var pageSize: Int
            /// The page-state words and discard generations of the region's
            /// first page (a volatility map's, from that page's word on).
            var words: UnsafeMutablePointer<UInt64>
            var generations: UnsafeMutablePointer<UInt32>
            var coverageLost: UnsafeMutablePointer<UInt64>
            /// One bit per chunk registered with the userfaultfd.
            var chunks: UnsafeMutablePointer<UInt64>
            var chunkPages: Int
            var mechanism: Mechanism
            var kernelDriven: Bool
            /// A mapping of a shared file: its page states live in a sidecar
            /// that other processes change too.
            var shared: Bool = false
            /// hugetlbfs: `pageSize` bytes of zeros to fill pages from.
            var zeroSource: UnsafeRawPointer? = nil
            /// Shared files: this process's private pin bits (one a page from
            /// `base`), the sidecar's purge control block, and the file page
            /// at `base` (see vr_region_info).
            var pins: UnsafePointer<UInt64>? = nil
            var intent: UnsafePointer<UInt64>? = nil
            var firstPage: Int = 0
            /// Shared files: the mapping's stale-fill table (VR_STALE_WORDS
            /// words; see vr_region_info).
            var stale: UnsafeMutablePointer<UInt64>? = nil

            var info: vr_region_info {
                vr_region_info(
                    base: base, length: length, page_size: pageSize, map: words,
                    generations: generations, coverage_lost: coverageLost,
                    chunks: chunks, chunk_pages: chunkPages, zero_source: zeroSource, mechanism: mechanism.rawValue,
                    flags: (kernelDriven ? Int32(VR_REGION_KERNEL_DRIVEN) : 0) | (shared ? Int32(VR_REGION_SHARED) : 0),
                    pins: pins, intent: intent, first_page: firstPage, stale: stale)
            }

            /// Pages per chunk of userfaultfd registration: 64 MiB of 4 KiB
            /// pages (a region never purged is never registered; one purged
            /// here and there costs a VMA split and the chunk's page tables).
            static let chunkPages = 16384

            /// Words of the chunk bitmap of a region of `pages` pages.
            static func chunkWords(pages: Int) -> Int {
                ((pages + chunkPages - 1) / chunkPages + 63) / 64
            }
        }

        /// Installs the handlers (first call only) and publishes a region.
        /// Returns its slot. `ENOSPC`: the table is full.
        static func register(_ region: Region) throws(SystemError) -> Int32 {
            var slot: Int32 = -1
            var info = region.info
            try checkCode("sigaction", vr_region_register(&info, &slot))
            return slot
        }

        /// Registers the chunks covering `pages` of region `slot` with the
        /// userfaultfd (each once, populated first: see CVRange.h).
        @inline(__always)
        static func registerChunks(slot: Int32, pages: Range<Int>) throws(SystemError) {
            try checkCode("ioctl(UFFDIO_REGISTER)", vr_region_register_chunks(slot, pages.lowerBound, pages.count))
        }

        /// Withdraws a region; returns once no handler is looking at it.
        static func unregister(slot: Int32) { vr_region_unregister(slot) }

        /// Says that a region's memory is about to be replaced (close): a
        /// fault there resumes instead of raising SIGBUS.
        static func closing(slot: Int32) { vr_region_closing(slot) }

        /// Verifies (and if it was lost, restores) the userfaultfd
        /// registration of `slot`. Returns the registration epoch and whether
        /// the region is registered now.
        static func checkRegistration(slot: Int32) -> (epoch: UInt64, registered: Bool) {
            var epoch: UInt64 = 0
            let e = vr_region_check_registration(slot, &epoch)
            return (epoch, e == 0)
        }

        /// The registration epoch (moves on whenever a registration was lost).
        static var registrationEpoch: UInt64 { vr_uffd_epoch() }

        /// How many regions the at-fork child handler failed to re-register.
        static var forkRestoreFailures: UInt32 { vr_fork_restore_failures() }

        /// Unprotects pages `first..<first+count` of `region` by widening the
        /// range to whole protected runs (no VMA split): the answer to ENOMEM
        /// at vm.max_map_count. Counts the purged pages made accessible.
        static func unprotectWidened(_ region: Region, first: Int, count: Int) throws(SystemError) {
            var info = region.info
            try checkCode("mprotect (widened)", vr_unprotect_widened(&info, first, count))
        }

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

        /// Kernel-driven settling pass over pages the caller holds locked:
        /// reads each page (a reclaimed one faults and comes back as the zero
        /// page), writes the resident ones that hold data (cancelling their
        /// lazy free); sets bit i of `faulted` for each reclaimed page.
        static func dirtyPages(
            slot: Int32, start: UnsafeMutableRawPointer, count: Int, pageSize: Int,
            faulted: UnsafeMutablePointer<UInt64>
        ) -> Int {
            vr_dirty_pages(slot, start, count, pageSize, faulted)
        }
    }

    /// SIGBUS and SIGSEGV unblocked for the duration of `body`: the kernel
    /// delivers a blocked synchronous fault with the default action (death),
    /// so a thread started with a full signal mask could not take the faults
    /// an optimistic access expects. One rt_sigprocmask, a second only if
    /// they were blocked.
    @inline(__always)
    static func withFaultSignalsUnblocked<R>(_ body: () -> R) -> R {
        var blocked: Int32 = 0
        _ = vr_unblock_fault_signals(&blocked)
        defer { if blocked != 0 { _ = vr_reblock_fault_signals(blocked) } }
        return body()
    }
}
