// When a run ends: decided by the run's own sampling loop (its time is up,
// and with --until-filled its cache and competitor are full), and read by
// the viewers and the competitor, which go on until then.
import Synchronization

final class RunEnd: Sendable {
    private let over = Atomic<Bool>(false)

    /// Whether the run is still on.
    var isAhead: Bool { !over.load(ordering: .relaxed) }
    /// Ends the run (only the sampling loop calls it).
    func finish() { over.store(true, ordering: .relaxed) }
}
