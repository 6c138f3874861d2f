// Rows 14–17 and the buffer rows: VolatileAllocator allocate + touch + free
// against glibc malloc/free and mmap/munmap; PurgeableBuffer lock + unlock
// (page span, small buffer alone on its page, small buffer beside a locked
// neighbour) against region marks and bare CAS; and lock + unlock from 1, 2
// and more threads on their own buffers (issue 9).
import CBench
import Synchronization
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// allocate(size) + one write per page + free, `n` times; ns per round.
/// The writes are `cb_write_each_page`, which `mallocTouchFree` and the
/// mmap loop call too: the same touch code on every side. (Earlier this
/// loop inlined its own writes and glibc's loop was C. Timed side by side
/// in one process the two harnesses gave the same ratios within the
/// run-to-run spread, but only one touch routine leaves nothing to argue.)
@inline(never)
func allocateTouchFree(_ a: VolatileAllocator, size: Int, pageSize: Int, _ n: Int) throws -> Double {
    let t0 = now()
    for i in 0..<n {
        var b = try a.allocate(byteCount: size)
        b.withUnsafeMutableBytes { raw in
            cb_write_each_page(raw.baseAddress!, size, pageSize, UInt8(truncatingIfNeeded: i))
        }
        b.free()
    }
    return Double(now() - t0) / Double(n)
}

/// malloc(size) + `cb_write_each_page` + free, `n` times; ns per round.
/// A Swift loop of the same shape as `allocateTouchFree`, so the two differ
/// only in the allocator called.
@inline(never)
func mallocTouchFree(size: Int, pageSize: Int, _ n: Int) throws -> Double {
    let t0 = now()
    for i in 0..<n {
        guard let p = malloc(size) else { throw BenchError("malloc(\(size)) failed") }
        cb_write_each_page(p, size, pageSize, UInt8(truncatingIfNeeded: i))
        free(p)
    }
    return Double(now() - t0) / Double(n)
}

func allocatorRows(_ c: Config) throws -> [Row] {
    var rows: [Row] = []
    let allocator = try VolatileAllocator()
    for size in [64 << 10, 256 << 10, 1 << 20, 4 << 20] {
        // At 1 and 4 MiB both sides are within 1 % of each other (the writes
        // to 256-1024 pages are nearly all of it), closer than the host's
        // round-to-round spread: four times the usual rounds, and how many
        // rounds VRange won, say more than one median. mmap + munmap, 35 µs
        // to 2 ms a round trip and never close, gets a twentieth of the
        // iterations so the extra rounds stay cheap.
        let iterations = max(20, (c.short ? 2_000 : 20_000) * (64 << 10) / size)
        let mmapIterations = max(5, iterations / 20)
        let samples = try interleavedSamples(rounds: 4 * c.smallRounds, [
            { try allocateTouchFree(allocator, size: size, pageSize: c.pageSize, iterations) },
            { try mallocTouchFree(size: size, pageSize: c.pageSize, iterations) },
            { try checked(cb_mmap_munmap_touched(size, c.pageSize, mmapIterations), "mmap") / Double(mmapIterations) },
        ])
        let m = samples.map(median)
        let won = zip(samples[0], samples[1]).filter { $0.0 <= $0.1 }.count
        let vsGlibc = m[1] / m[0], vsMmap = m[2] / m[0]
        let ok = vsGlibc >= 1 && vsMmap >= 5
        rows.append(Row(what: "allocate + free \(fmtBytes(size)), touched (VolatileAllocator)",
                        vrange: fmtTime(m[0]),
                        baseline: "glibc malloc/free: \(fmtTime(m[1])); mmap/munmap: \(fmtTime(m[2]))",
                        ratio: "\(fmtRatio(vsGlibc)) glibc's speed (faster in \(won) of \(samples[0].count) rounds); \(fmtRatio(vsMmap)) faster than mmap",
                        goal: "≥ 1× glibc; ≥ 5× faster than mmap", result: ok ? "met" : "**missed**"))
    }
    // The same 64 KiB row without thread caches: what the magazines (one CAS
    // each way) give, where membarrier is unavailable or the option is off.
    let noCache = try VolatileAllocator(options: .init(threadCache: false))
    let n64 = c.short ? 2_000 : 20_000
    let off = try interleaved(rounds: c.smallRounds, [
        { try allocateTouchFree(noCache, size: 64 << 10, pageSize: c.pageSize, n64) },
        { try mallocTouchFree(size: 64 << 10, pageSize: c.pageSize, n64) },
    ])
    rows.append(Row("allocate + free 64 KiB, touched, threadCache: false (magazines only)", vrange: off[0],
                    fmtTime(off[0]), baseline: off[1], "glibc malloc/free: \(fmtTime(off[1]))", goal: .report))
    let s = allocator.statistics
    if s.releasedBytes != 0 || s.segmentsCreated > 4 {
        eprint("note: allocator churn released \(s.releasedBytes) bytes, created \(s.segmentsCreated) segments")
    }
    return rows
}

// MARK: - Lock + unlock, one thread

/// lock + unlock of `buffer`, `n` times; ns per pair. Traps on a purge.
@inline(never)
func lockPairs(_ buffer: inout PurgeableBuffer, _ n: Int) throws -> Double {
    let t0 = now()
    for _ in 0..<n {
        buffer.unlock()
        if buffer.lock().wasPurged { throw BenchError("an intact buffer came back purged") }
    }
    return Double(now() - t0) / Double(n)
}

func bufferRows(_ c: Config) throws -> [Row] {
    let allocator = try VolatileAllocator()
    var onePage = try allocator.allocate(byteCount: c.pageSize)
    // A small buffer alone on its page (the only slot used of its class),
    // and one whose page a locked neighbour holds non-volatile.
    var alone = try allocator.allocate(byteCount: 128)
    var shared = try allocator.allocate(byteCount: 256)
    let neighbour = try allocator.allocate(byteCount: 256)  // stays locked
    let region = try VolatileRegion(byteCount: 4 << 20)
    defer { region.close() }
    let word = UnsafeMutablePointer<UInt64>.allocate(capacity: 8)
    word.initialize(repeating: 0, count: 8)
    defer { word.deallocate() }
    let m = try interleaved(rounds: c.smallRounds, [
        { try lockPairs(&onePage, c.batch) },
        { try lockPairs(&alone, c.batch) },
        { try lockPairs(&shared, c.batch) },
        { try markPairs(region, 0..<c.pageSize, c.batch) },
        { try checked(cb_cas_pair_loop(word, c.batch), "cas") / Double(c.batch) },
    ])
    _ = consume neighbour
    return [
        Row("PurgeableBuffer unlock + lock, 1 page (intact)", vrange: m[0], fmtTime(m[0]),
            baseline: m[3], "region mark pair, 1 page: \(fmtTime(m[3]))", goal: .report),
        Row("small buffer (128 B) unlock + lock, alone on its page (page changes state)", vrange: m[1], fmtTime(m[1]),
            baseline: m[0], "1-page buffer: \(fmtTime(m[0]))", goal: .report),
        Row("small buffer (256 B) unlock + lock, neighbour holds the page (count only)", vrange: m[2], fmtTime(m[2]),
            baseline: m[4], "2 × CAS on a word: \(fmtTime(m[4]))", goal: .report),
    ]
}

// MARK: - Lock + unlock, many threads

private final class Gate: Sendable {
    let ready = Atomic<Int>(0)
    let go = Atomic<Bool>(false)
    let failures = Atomic<Int>(0)
}

private final class Worker: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Lock + unlock pairs per second when `threads` threads each allocate their
/// own buffer of `size` bytes (from their own arena) and lock + unlock it
/// `n` times from a common start. The caller is worker 0; worker i is
/// pinned to CPU i (modulo the CPUs online).
private func bufferRate(_ a: VolatileAllocator, threads: Int, size: Int, _ n: Int) -> (Double, Int) {
    let gate = Gate()
    let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    let work = { @Sendable (i: Int) in
        var b: PurgeableBuffer
        do { b = try a.allocate(byteCount: size) } catch { gate.failures.add(1, ordering: .relaxed); gate.ready.add(1, ordering: .relaxed); return }
        if i > 0 {
            gate.ready.add(1, ordering: .acquiringAndReleasing)
            while !gate.go.load(ordering: .acquiring) {}
        }
        for _ in 0..<n {
            b.unlock()
            if b.lock().wasPurged { gate.failures.add(1, ordering: .relaxed) }
        }
        b.free()
    }
    _ = cb_pin_to_cpu(0)
    defer { _ = cb_unpin() }
    var others: [pthread_t] = []
    for i in 1..<threads {
        let box = Unmanaged.passRetained(Worker { _ = cb_pin_to_cpu(Int32(i % cpus)); work(i) }).toOpaque()
        var t = pthread_t()
        let e = pthread_create(&t, nil, { arg in
            Unmanaged<Worker>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, box)
        precondition(e == 0, "pthread_create failed: \(e)")
        others.append(t)
    }
    while gate.ready.load(ordering: .acquiring) < threads - 1 { sched_yield() }
    let t0 = now()
    gate.go.store(true, ordering: .releasing)
    work(0)
    for t in others { pthread_join(t, nil) }
    let t = Double(now() - t0)
    return (Double(threads * n) / (t / 1e9), gate.failures.load(ordering: .relaxed))
}

/// Thread counts: 1, 2 and each of 4, 8, 16 up to the CPUs online, or
/// VRANGE_BENCH_THREADS (e.g. "1,2,4,8,16").
func benchThreadCounts() -> [Int] {
    if let raw = getenv("VRANGE_BENCH_THREADS") {
        let list = String(cString: raw).split(separator: ",").compactMap { Int($0) }.filter { $0 >= 1 }
        if !list.isEmpty { return Array(Set(list + [1])).sorted() }
    }
    let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    return [1, 2, 4, 8, 16].filter { $0 <= max(2, cpus) }
}

func bufferThreadRows(_ c: Config) throws -> [Row] {
    let counts = benchThreadCounts()
    let allocator = try VolatileAllocator(options: .init(arenaCount: max(2 * counts.max()!, 4)))
    let n = c.threadIterations
    var contenders: [() throws -> Double] = []
    var failures = 0
    for size in [c.pageSize, 128] {
        for t in counts {
            contenders.append {
                let (r, f) = bufferRate(allocator, threads: t, size: size, n)
                failures += f
                return r
            }
        }
    }
    let m = try interleaved(rounds: c.short ? 3 : 15, contenders)
    if failures > 0 { throw BenchError("buffer thread rows: \(failures) failures") }
    // Threads exist now: glibc has left its single-threaded fast path (no
    // atomics at all), which rows 14–17 measured. The same 64 KiB row again,
    // as any program that ever started a thread sees it.
    let n64 = c.short ? 2_000 : 20_000
    let mt = try interleaved(rounds: c.smallRounds, [
        { try allocateTouchFree(allocator, size: 64 << 10, pageSize: c.pageSize, n64) },
        { try mallocTouchFree(size: 64 << 10, pageSize: c.pageSize, n64) },
    ])
    let mops = { (r: Double) in "\(String(format2: r / 1e6, digits: 1)) M pairs/s" }
    var rows: [Row] = [
        Row("allocate + free 64 KiB, touched, in a process that has started threads", vrange: mt[0], fmtTime(mt[0]),
            baseline: mt[1], "glibc malloc/free (multi-threaded): \(fmtTime(mt[1]))", goal: .report),
    ]
    for (k, label) in ["1-page buffers", "128 B buffers"].enumerated() {
        let base = m[k * counts.count]
        for (j, t) in counts.enumerated() where t > 1 {
            let v = m[k * counts.count + j]
            rows.append(Row("PurgeableBuffer unlock + lock, \(t) threads on their own \(label) (≥ 0.8× linear)",
                            vrange: v, "\(t) threads: \(mops(v))", baseline: base, "1 thread: \(mops(base))",
                            goal: .scalingAtLeast(0.8 * Double(t))))
        }
    }
    return rows
}
