// Test-only interleaving hooks of the files layer, compiled only in debug
// builds: a test (or the test peer process) installs a closure on one
// VolatileFile object (`testHook`), called at each named point of that
// object's operations; it may block there, yield, or record.
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Points of the purge and pin protocols where a test may intervene.
enum FileHookPoint: Sendable, Equatable {
    /// A purge has locked pages of this word (state 10) and not yet
    /// re-checked whether they may be purged.
    case purgeLocked(word: Int)
    /// A purge recorded its intent for `run` and is about to punch it.
    case purgeBeforePunch(Range<Int>)
    /// A purge punched `run` and is about to mark it purged.
    case purgeAfterPunch(Range<Int>)
    /// A pin or file-level unmark of pages in one map word published its
    /// marks and is about to read the word's page states once (the fast
    /// path of `VolatileFile.unmark`).
    case publishedOneWord(Range<Int>)
    /// A pin or file-level unmark published its marks for these pages and is
    /// about to wait out the locked ones and repopulate the purged ones.
    case published(Range<Int>)
    /// The end of an optimistic access locked (11 -> 10) the purged pages of
    /// this word that it had filled, to punch them out again.
    case accessLocked(word: Int)
    /// A purge took its snapshot of this process's mprotect mappings for
    /// `run` and is about to protect them.
    case mappingsSnapshot(Range<Int>)
    /// A public operation holds a use of the file (its sidecar and
    /// descriptors stay the library's until it ends) and is about to work.
    case inOperation(FileOperation)
    /// A mapping's vote or pin passed its range check on the fast path (no
    /// use held) and is about to write its marks for these file pages.
    case fastMark(Range<Int>)
    /// A purge (or a huge-page repopulation) found the purge lock held by
    /// another process and is about to wait for it (once per look).
    case purgeLockWait
}

/// The operations that hold a use of a file (`FileHookPoint.inOperation`).
enum FileOperation: String, Sendable, Equatable, CaseIterable {
    case filePurge, fileStatus, fileMarkNonVolatile, fileMap, fileSend, fileInheritableDescriptors
    case filePurgeUnits, mappingMarkNonVolatile, mappingStatus, mappingAccess, mappingClose
}

#if DEBUG
/// Where a test installs its hook: a closure under a mutex, and a flag read
/// first, so that an operation takes the mutex only while a hook is
/// installed (the fast path of a mark must not synchronize threads that
/// the sanitizer should see racing).
final class FileTestHookSlot: @unchecked Sendable {
    typealias Hook = @Sendable (FileHookPoint) -> Void
    private let hook = Locked<Hook?>(nil)
    private let armed = Atomic<Bool>(false)

    /// Changes the hook (the value `body` leaves in place is installed).
    func withLock<R>(_ body: (inout Hook?) -> R) -> R {
        hook.withLock { h in
            let r = body(&h)
            armed.store(h != nil, ordering: .releasing)
            return r
        }
    }

    /// The mutex, for the at-fork handlers.
    var mutex: UnsafeMutablePointer<pthread_mutex_t> { hook.mutex }

    /// The installed hook, if any.
    @inline(__always)
    var current: Hook? {
        armed.load(ordering: .acquiring) ? hook.withLock { $0 } : nil
    }
}
#endif

extension VolatileFile {
    @inline(__always)
    func hook(_ point: @autoclosure () -> FileHookPoint) {
        #if DEBUG
        if let h = testHook.current { h(point()) }
        #endif
    }
}
