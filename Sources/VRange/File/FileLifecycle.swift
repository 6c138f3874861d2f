// The lifecycle of a VolatileFile (DESIGN.md §9): an operation that started
// finishes on a sidecar mapping and descriptors that are still the
// library's. Every operation that goes past the marks' fast paths holds a
// *use* of the file; `close()` marks the file closed at once (every later
// call throws `.closed`) and the last use to end — close()'s own, or that
// of an operation of another thread (a purger's thread among them) —
// releases the resources: the liveness description is closed, both
// descriptors are closed, and the sidecar's addresses are replaced with
// empty anonymous memory (a mark that passed its range check before close()
// may still write there), unmapped only at deinit.
//
// The count lives in the files layer's at-fork entry (vr_files.c): the
// child of fork() restarts it at zero, keeping the closed and released bits
// (the threads whose uses it counted do not exist there). A use begun before
// fork ends in the child without counting (its fork generation differs).
import CVRange
import Synchronization

extension VolatileFile {
    /// Bits of the use word: closed, released, then the count of uses.
    static let closedBit: UInt64 = 1
    static let releasedBit: UInt64 = 2
    static let oneUse: UInt64 = 4

    /// Begins a use; `.closed` once `close()` began. Returns the token that
    /// `endUse` takes (the fork generation).
    @inline(__always)
    func beginUse() throws(VRangeError) -> UInt64 {
        let generation = vr_fork_generation()
        let old = uses.pointee.wrappingAdd(Self.oneUse, ordering: .acquiringAndReleasing).oldValue
        if old & Self.closedBit != 0 {
            endUse(generation)
            throw .closed
        }
        return generation
    }

    /// Begins a use that a closed file still grants until its resources are
    /// released (`close()` itself, a mapping's close); nil after.
    func beginInternalUse() -> UInt64? {
        let generation = vr_fork_generation()
        let old = uses.pointee.wrappingAdd(Self.oneUse, ordering: .acquiringAndReleasing).oldValue
        if old & Self.releasedBit != 0 {
            endUse(generation)
            return nil
        }
        return generation
    }

    /// Ends a use; the last one of a closed file releases its resources.
    @inline(__always)
    func endUse(_ generation: UInt64) {
        // Begun before a fork, ended in the child: the child's count was reset.
        guard generation == vr_fork_generation() else { return }
        let now = uses.pointee.wrappingSubtract(Self.oneUse, ordering: .acquiringAndReleasing).newValue
        if now == Self.closedBit { releaseIfUnused() }
    }

    /// Runs `body` holding a use (see the top of this file).
    @inline(__always)
    func withUse<R>(_ operation: FileOperation, _ body: () throws(VRangeError) -> R) throws(VRangeError) -> R {
        let token = try beginUse()
        defer { endUse(token) }
        hook(.inOperation(operation))
        return try body()
    }

    /// Closed and no use in flight: the first to see it releases.
    func releaseIfUnused() {
        let (won, _) = uses.pointee.compareExchange(
            expected: Self.closedBit, desired: Self.closedBit | Self.releasedBit, ordering: .acquiringAndReleasing)
        if won { releaseResources() }
    }

    /// Closes the liveness description and both descriptors; the sidecar's
    /// addresses stay reserved (empty memory) until deinit. Once.
    func releaseResources() {
        state.withLock { $0.liveness.close() }
        // On failure the sidecar stays mapped (still the library's) until
        // deinit unmaps it.
        _ = try? Kernel.replaceWithEmpty(sidecar.base, length: sidecarLength)
        Kernel.close(fd: descriptors.data)
        Kernel.close(fd: descriptors.sidecar)
    }

    /// Whether the resources were released.
    var isReleased: Bool { uses.pointee.load(ordering: .acquiring) & Self.releasedBit != 0 }

    /// The file's mutexes in the order the at-fork prepare handler takes
    /// them: the order in which the files layer nests them (the purge mutex
    /// is held while slots are reclaimed and the mappings listed; the slot
    /// mutex while the process state is read).
    func linkForFork() {
        var locks: [UnsafeMutablePointer<pthread_mutex_t>?] = [
            purgeMutex.mutex, slotMutex.mutex, state.mutex, mappings.mutex,
        ]
        #if DEBUG
        locks.append(testHook.mutex)
        #endif
        let code = locks.withUnsafeBufferPointer { vr_file_fork_link(forkEntry, $0.baseAddress, Int32($0.count)) }
        precondition(code == 0, "VRange: vr_file_fork_link failed: \(code)")
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
