// Scaling: mark + unmark from 2 threads on disjoint pages of one region
// (what PurgeableBuffer lock/unlock will do), against 1 thread; the same
// with one region per thread (nothing shared); and the machine's own
// scaling of bare CAS pairs on disjoint cache lines.
import CBench
import Synchronization
import VRange
#if canImport(Glibc)
import Glibc
#endif

private final class ThreadBody: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Starts a POSIX thread running `body`.
private func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let e = pthread_create(&thread, nil, { arg in
        Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, box)
    precondition(e == 0, "pthread_create failed: \(e)")
    return thread
}

private final class Failures: Sendable {
    let count = Atomic<Int>(0)
}

private final class StartLine: Sendable {
    let ready = Atomic<Int>(0)
    let go = Atomic<Bool>(false)
}

/// Operations per second when `threads` threads each run `work(index)`
/// (which does `perThread` operations) from a common start. The calling
/// thread is worker 0, so that no more threads than cores are runnable (a
/// third spinning thread on 2 cores would measure the scheduler instead),
/// and worker i is pinned to CPU i: left to itself, the scheduler here
/// often kept both workers on one CPU for the whole measurement.
private func rate(threads: Int, perThread: Int, _ work: @escaping @Sendable (Int) -> Void) -> Double {
    let line = StartLine()
    var others: [pthread_t] = []
    _ = cb_pin_to_cpu(0)
    defer { _ = cb_unpin() }
    for i in 1..<threads {
        others.append(spawn {
            _ = cb_pin_to_cpu(Int32(i))
            line.ready.add(1, ordering: .acquiringAndReleasing)
            while !line.go.load(ordering: .acquiring) {}
            work(i)
        })
    }
    while line.ready.load(ordering: .acquiring) < threads - 1 { sched_yield() }
    let t0 = now()
    line.go.store(true, ordering: .releasing)
    work(0)
    for t in others { pthread_join(t, nil) }
    let t = Double(now() - t0)
    return Double(threads * perThread) / (t / 1e9)
}

func threadRows(_ c: Config) throws -> [Row] {
    guard sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2 else {
        return [Row(what: "mark + unmark 1 page, 2 threads on disjoint pages", vrange: "n/a",
                    baseline: "only one CPU online", ratio: "—", goal: "≥ 1.80× aggregate", result: "n/a")]
    }
    // Pages 4 MiB apart: their map words are 256 bytes apart, on different
    // cache lines (and not adjacent ones), as disjoint buffers would mostly be.
    let region = try VolatileRegion(byteCount: 8 << 20)
    defer { region.close() }
    let ps = c.pageSize, n = c.threadIterations
    let failures = Failures()
    let marks = { @Sendable (i: Int) in
        let range = (i * (4 << 20))..<(i * (4 << 20) + ps)
        for _ in 0..<n {
            do {
                try region.markVolatile(range)
                _ = try region.markNonVolatile(range)
            } catch { failures.count.add(1, ordering: .relaxed) }
        }
    }
    // The same work with nothing shared at all: one region per thread. If
    // this scales no better than the row above, the machine is the limit.
    let own = [try VolatileRegion(byteCount: 8 << 20), try VolatileRegion(byteCount: 8 << 20)]
    defer { for r in own { r.close() } }
    let ownMarks = { @Sendable (i: Int) in
        let range = (i * (4 << 20))..<(i * (4 << 20) + ps)
        let region = own[i]
        for _ in 0..<n {
            do {
                try region.markVolatile(range)
                _ = try region.markNonVolatile(range)
            } catch { failures.count.add(1, ordering: .relaxed) }
        }
    }
    let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
    words.initialize(repeating: 0, count: 64)
    defer { words.deallocate() }
    nonisolated(unsafe) let w = words
    let cas = { @Sendable (i: Int) in _ = cb_cas_pair_loop(w + i * 16, n) }

    let m = try interleaved(rounds: c.short ? 3 : 15, [
        { rate(threads: 1, perThread: n, marks) },
        { rate(threads: 2, perThread: n, marks) },
        { rate(threads: 1, perThread: n, cas) },
        { rate(threads: 2, perThread: n, cas) },
        { rate(threads: 1, perThread: n, ownMarks) },
        { rate(threads: 2, perThread: n, ownMarks) },
    ])
    if failures.count.load(ordering: .relaxed) > 0 { throw BenchError("marks failed in the thread row") }
    let mops = { (r: Double) in "\(String(format2: r / 1e6, digits: 1)) M pairs/s" }
    return [
        Row("mark + unmark 1 page, 2 threads on disjoint pages of one region (region marks)",
            vrange: m[1], "2 threads: \(mops(m[1]))", baseline: m[0], "1 thread: \(mops(m[0]))",
            goal: .scalingAtLeast(1.8)),
        Row("same, each thread its own region (nothing shared: the machine's limit for this code)",
            vrange: m[5], "2 threads: \(mops(m[5]))", baseline: m[4], "1 thread: \(mops(m[4]))",
            goal: .scalingReport),
        Row("2 threads, bare CAS pairs on disjoint cache lines (the machine's own scaling)",
            vrange: m[3], "2 threads: \(mops(m[3]))", baseline: m[2], "1 thread: \(mops(m[2]))",
            goal: .scalingReport),
    ]
}
