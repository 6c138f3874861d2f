// Single flight: the first request for a missing key runs the rebuild; the
// others, synchronous or async, wait for its result instead of running their
// own. Threads block on an event; tasks suspend on a continuation.
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@usableFromInline
final class RebuildFlight: Sendable {
    private struct State {
        var result: Result<[UInt8], any Error>?
        var continuations: [CheckedContinuation<[UInt8], any Error>] = []
    }
    private let state = Locked(State())
    private let done = Kernel.Event()
    /// The fork generation it began in (ForkRegistry): in a fork child, a
    /// flight of an older one has no leader and is replaced, not waited for.
    let generation = ForkRegistry.cache.generation
    /// Set (under the key's shard mutex) when the key is set or removed
    /// while the rebuild runs: its result is then not stored (it is older
    /// than that write), though every caller waiting on it gets it.
    let superseded = Atomic<Bool>(false)
    /// The thread that made it, and runs its rebuild (`PurgeableCache.join`
    /// makes a flight for the request that leads it).
    private let leader = pthread_self()

    /// Whether the calling thread runs this flight's rebuild: a request of
    /// it for the flight's key is its rebuild fetching its own key.
    var ledByCurrentThread: Bool { pthread_equal(leader, pthread_self()) != 0 }

    /// Publishes the result and wakes every waiter.
    func complete(_ result: Result<[UInt8], any Error>) {
        let waiting = state.withLock { s in
            s.result = result
            let c = s.continuations
            s.continuations = []
            return c
        }
        for c in waiting { c.resume(with: result) }
        done.signal()
    }

    /// Blocks the thread until the rebuild is done.
    func wait() throws -> [UInt8] {
        done.wait()
        return try state.withLock { $0.result! }.get()
    }

    /// Suspends the task until the rebuild is done.
    func value() async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<[UInt8], any Error>) in
            let ready = state.withLock { s -> Result<[UInt8], any Error>? in
                if let r = s.result { return r }
                s.continuations.append(c)
                return nil
            }
            if let ready { c.resume(with: ready) }
        }
    }
}
