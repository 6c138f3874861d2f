// Test-only interleaving hooks of the files layer, compiled only in debug
// builds: a test (or the test peer process) installs a closure on one
// VolatileFile object (`testHook`), called at each named point of that
// object's operations; it may block there, yield, or record.

/// Points of the purge and pin protocols where a test may intervene.
enum FileHookPoint: Sendable, Equatable {
    /// A purge has locked pages of this word (state 10) and not yet
    /// re-checked whether they may be purged.
    case purgeLocked(word: Int)
    /// A purge recorded its intent for `run` and is about to punch it.
    case purgeBeforePunch(Range<Int>)
    /// A purge punched `run` and is about to mark it purged.
    case purgeAfterPunch(Range<Int>)
    /// A pin or file-level unmark published its marks for these pages and is
    /// about to read the page states.
    case published(Range<Int>)
    /// The end of an optimistic access locked (11 -> 10) the purged pages of
    /// this word that it had filled, to punch them out again.
    case accessLocked(word: Int)
}

extension VolatileFile {
    @inline(__always)
    func hook(_ point: @autoclosure () -> FileHookPoint) {
        #if DEBUG
        if let h = testHook.withLock({ $0 }) { h(point()) }
        #endif
    }
}
