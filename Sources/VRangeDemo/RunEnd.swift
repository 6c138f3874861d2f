// When a run ends: a deadline in monotonic seconds that the run's own
// sampling loop may push back (--until-filled), read by the viewers and the
// competitor.
import Synchronization

final class RunEnd: Sendable {
    private let bits: Atomic<UInt64>

    init(_ deadline: Double) { bits = Atomic(deadline.bitPattern) }

    var deadline: Double { Double(bitPattern: bits.load(ordering: .relaxed)) }
    /// Whether the run is still on.
    var isAhead: Bool { monotonicSeconds() < deadline }
    /// Moves the end to `deadline` (only the sampling loop calls it).
    func extend(to deadline: Double) { bits.store(deadline.bitPattern, ordering: .relaxed) }
}
