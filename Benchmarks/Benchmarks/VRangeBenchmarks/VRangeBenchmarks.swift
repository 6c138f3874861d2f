// The VRange operations under package-benchmark (`swift package benchmark`
// in Benchmarks/): per-operation latency distributions and, through the
// malloc interposer, the allocations each operation makes (the mark path
// must make none). The ratio table against the raw syscalls is
// VRangeBench's job (Sources/VRangeBench); these are the same operations
// with package-benchmark's statistics, for regression tracking.
//
// VRANGE_BENCH_SHORT=1 cuts every benchmark to a few iterations: CI runs the
// executable that way (Benchmarks/run.sh --short) so that it cannot rot.
import Benchmark
import CBench
import VRange
#if canImport(Glibc)
import Glibc
#endif

let pageSize = 4096
let purgeBytes = 64 << 20
let short = getenv("VRANGE_BENCH_SHORT").map { String(cString: $0) == "1" } ?? false

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: short ? 1 : 3,
        scalingFactor: .kilo,
        maxDuration: short ? .milliseconds(100) : .seconds(2),
        maxIterations: short ? 20 : 1_000
    )

    guard let region = try? VolatileRegion(byteCount: 4 << 20),
          let raw = cb_map(4 << 20)
    else { fatalError("VRangeBenchmarks: cannot map memory") }
    _ = cb_touch_pages(raw, 4 << 20, pageSize)
    let onePage = 0..<pageSize
    let sixtyFourKiB = 0..<(64 << 10)

    Benchmark("mark volatile + non-volatile, 1 page") { benchmark in
        for _ in benchmark.scaledIterations {
            try region.markVolatile(onePage)
            blackHole(try region.markNonVolatile(onePage).wasPurged)
        }
    }

    Benchmark("mark volatile + non-volatile, 64 KiB") { benchmark in
        for _ in benchmark.scaledIterations {
            try region.markVolatile(sixtyFourKiB)
            blackHole(try region.markNonVolatile(sixtyFourKiB).wasPurged)
        }
    }

    Benchmark("baseline: madvise(MADV_NORMAL), 1 page") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(cb_madvise(raw, pageSize, cb_MADV_NORMAL))
        }
    }

    Benchmark("baseline: two CAS on a word") { benchmark in
        let word = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        word.initialize(to: 0)
        defer { word.deallocate() }
        benchmark.startMeasurement()
        blackHole(cb_cas_pair_loop(word, benchmark.scaledIterations.count))
        benchmark.stopMeasurement()
    }

    Benchmark("optimistic access, page known purged") { benchmark in
        try region.markVolatile(onePage)
        try region.purge(onePage)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try region.withVolatileAccess(onePage) { cb_read_byte($0.baseAddress!) }.value)
        }
        benchmark.stopMeasurement()
        _ = try region.markNonVolatile(onePage)
    }

    // One purge per iteration: the pages are written first, outside the
    // measured part, so that there is memory to free.
    let bulk = Benchmark.Configuration(
        metrics: [.wallClock, .mallocCountTotal], warmupIterations: 1, scalingFactor: .one,
        maxDuration: short ? .milliseconds(200) : .seconds(3), maxIterations: short ? 3 : 50)

    guard let big = try? VolatileRegion(byteCount: purgeBytes), let bigRaw = cb_map(purgeBytes) else {
        fatalError("VRangeBenchmarks: cannot map memory")
    }
    let all = 0..<purgeBytes

    Benchmark("purge 64 MiB, written (region purgeAll)", configuration: bulk) { benchmark in
        _ = try big.markNonVolatile(all)
        _ = cb_touch_pages(big.baseAddress, purgeBytes, pageSize)
        try big.markVolatile(all)
        benchmark.startMeasurement()
        blackHole(try big.purgeAll())
        benchmark.stopMeasurement()
    }

    Benchmark("baseline: madvise(MADV_DONTNEED) 64 MiB, written", configuration: bulk) { benchmark in
        _ = cb_touch_pages(bigRaw, purgeBytes, pageSize)
        benchmark.startMeasurement()
        blackHole(cb_madvise(bigRaw, purgeBytes, cb_MADV_DONTNEED))
        benchmark.stopMeasurement()
    }

    Benchmark("mark non-volatile of purged 64 MiB (repopulate)", configuration: bulk) { benchmark in
        try big.markVolatile(all)
        try big.purgeAll()
        benchmark.startMeasurement()
        blackHole(try big.markNonVolatile(all).purgedBytes)
        benchmark.stopMeasurement()
    }
}
