// Liveness without trusting pids: each VolatileFile object opens its own
// open file description of the sidecar (re-opening /proc/self/fd/N, since
// inherited or SCM_RIGHTS-passed descriptors share the sender's) and holds
// an OFD write lock on byte i for every mapper slot i it owns, and on byte
// `slotCount` while it purges. The kernel drops those locks when the process
// dies, whatever the pid namespace and however soon the pid is reused; a
// survivor sees the byte unlocked (F_OFD_GETLK) and reclaims the slot.
import CVRange

/// One process's open file description of the sidecar.
final class Liveness: @unchecked Sendable {
    let fd: Int32
    /// vr_fork_generation() when it was opened: in a child of fork() the
    /// descriptor was closed by the at-fork handler (it would keep the
    /// parent's slots alive) and this object is stale.
    let forkGeneration: UInt64

    init(sidecar: Int32) throws(SystemError) {
        let fd = try Kernel.reopen(fd: sidecar)
        let code = vr_liveness_fd_add(fd)
        if code != 0 {
            Kernel.close(fd: fd)
            throw SystemError(call: "vr_liveness_fd_add", errno: code)
        }
        self.fd = fd
        self.forkGeneration = vr_fork_generation()
    }

    /// Whether this process is a fork child of the one that opened it.
    var isStale: Bool { vr_fork_generation() != forkGeneration }

    func close() {
        guard !isStale else { return }  // already closed in this process by the at-fork handler
        vr_liveness_fd_remove(fd)
        Kernel.close(fd: fd)
    }

    /// Takes byte `byte` if it is free; false when another open file
    /// description holds it. Never waits: a wait on another process is
    /// bounded by its caller (PeerWait), never left to the kernel.
    func lock(_ byte: Int) throws(SystemError) -> Bool {
        try Kernel.lockByte(fd: fd, byte)
    }

    func unlock(_ byte: Int) { try? Kernel.unlockByte(fd: fd, byte) }

    /// Whether another open file description holds byte `byte`.
    func heldElsewhere(_ byte: Int) -> Bool {
        // A failed probe counts as held: never reclaim on doubt.
        (try? Kernel.byteIsLocked(fd: fd, byte)) ?? true
    }

    /// The highest byte + 1 of `bytes` that another open file description
    /// holds, `bytes.lowerBound` when none (one F_OFD_GETLK per lock found,
    /// from the low end up). A failed probe counts as held: the upper end.
    func heldElsewhereBound(_ bytes: Range<Int>) -> Int {
        var lo = bytes.lowerBound, bound = bytes.lowerBound
        while lo < bytes.upperBound {
            let held: Int?
            do { held = try Kernel.lockedRangeEnd(fd: fd, lo..<bytes.upperBound) } catch { return bytes.upperBound }
            guard let end = held else { break }  // none held from lo up
            bound = min(max(end, lo + 1), bytes.upperBound)
            lo = bound
        }
        return bound
    }
}

/// What one process knows about its own use of a file: its liveness
/// description and the slots it owns. Replaced in a fork child.
struct ProcessState {
    var liveness: Liveness
    var owned: Set<Int> = []
}
