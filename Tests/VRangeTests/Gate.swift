// A held window for the race, lifecycle and fork tests: one thread holds at
// a point until another opens it (bounded), and the test can wait until a
// thread is held there.
import Synchronization

/// A held window: one thread `hold()`s until another `open()`s it (bounded).
final class Gate: Sendable {
    private let reachedFlag = Atomic<Bool>(false)
    private let openFlag = Atomic<Bool>(false)
    /// Marks the window reached, then waits until opened (at most `seconds`).
    func hold(seconds: Double = 10) {
        reachedFlag.store(true, ordering: .releasing)
        _ = waitUntil(seconds: seconds) { openFlag.load(ordering: .acquiring) }
    }
    /// Holds only the first thread that comes (the others pass on): marks
    /// the window reached, then waits until opened (at most `seconds`).
    func holdFirst(seconds: Double = 10) {
        guard !reachedFlag.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = waitUntil(seconds: seconds) { openFlag.load(ordering: .acquiring) }
    }
    func open() { openFlag.store(true, ordering: .releasing) }
    var reached: Bool { reachedFlag.load(ordering: .acquiring) }
    var isOpen: Bool { openFlag.load(ordering: .acquiring) }
    /// Waits until a thread holds here; false after `seconds`.
    func waitReached(seconds: Double = 10) -> Bool { waitUntil(seconds: seconds) { reached } }
}
