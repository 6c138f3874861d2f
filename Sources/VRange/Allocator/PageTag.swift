// Per-page bookkeeping of a segment, kept outside the (purgeable) pages:
// span boundary tags for the free lists, and the slab page word that lets
// buffers sharing a page make it volatile only when all are unlocked.
import CVRange
import Synchronization

/// What a span is. Stored at the first and the last page of every span, so
/// that a freed span finds its free neighbours in O(1).
enum SpanKind: UInt8 {
    case interior = 0
    case free = 1
    case large = 2
    case slab = 3
}

/// The arena-locked tag of one page. Only the first and last page of a span
/// carry a meaningful tag (slab spans are one page).
struct PageTag {
    /// Span length in pages (free and large spans).
    var pages: UInt32 = 0
    /// Free span: when it was freed (coarse milliseconds, wrapping).
    /// Slab page: bitmap of its free slots.
    var aux: UInt32 = 0
    /// Index in the arena's free-list bucket or partial-slab list.
    var listIndex: UInt32 = 0
    var kind: SpanKind = .interior
    /// Slab page: its size class.
    var sizeClass: UInt8 = 0
    /// Free span flags (`FreeFlags`).
    var flags: UInt8 = 0
    var unused: UInt8 = 0
}

/// Flags of a free span.
enum FreeFlags {
    /// Some page may be marked volatile in the region's map: allocation must
    /// mark the span non-volatile first.
    static let mayBeVolatile: UInt8 = 1
    /// Marked volatile and purged by the release delay or a purger: its
    /// memory went back to the kernel.
    static let released: UInt8 = 2
}

/// The lock-free word of a slab page (buffers under a page share it).
///
///     bits 0–31   lost: slot j's contents were purged and it has not been
///                 locked since (it learns at its next lock)
///     bits 32–39  how many slots on the page are locked
///     bit 40      busy: a thread is marking the page (non-)volatile in the
///                 region; everyone else waits, so the region's state and the
///                 count never disagree
///     bit 41      volatile: the page is (or may be) marked volatile
///     bits 42–63  with busy: the fork generation of the thread that set it
///                 (`vr_alloc_generation`)
///
/// A page becomes volatile when its count drops to 0 and non-volatile when it
/// rises from 0: those two transitions run under `busy`, every other change
/// is one CAS. A busy bit of an older fork generation was set by a thread
/// that does not exist in this process (a fork child's parent thread, caught
/// in the middle of the transition): a waiter finishes the transition for it
/// (`Segment.recoverStaleBusy`).
enum SlabWord {
    static let lostMask: UInt64 = 0xFFFF_FFFF
    static let countOne: UInt64 = 1 << 32
    static let countMask: UInt64 = 0xFF << 32
    static let busy: UInt64 = 1 << 40
    static let volatile: UInt64 = 1 << 41
    static let generationShift: UInt64 = 42
    static let generationMask: UInt64 = ~0 << 42

    /// `w` made busy by the calling thread (its fork generation recorded).
    @inline(__always)
    static func busyWord(_ w: UInt64) -> UInt64 {
        (w & ~generationMask) | busy | UInt64(vr_alloc_generation()) << generationShift & generationMask
    }

    /// Whether busy word `w` was made busy before this process's last fork.
    @inline(__always)
    static func isStale(_ w: UInt64) -> Bool {
        w & generationMask != UInt64(vr_alloc_generation()) << generationShift & generationMask
    }

    @inline(__always)
    static func count(_ w: UInt64) -> Int { Int((w & countMask) >> 32) }
}
