// The competing allocation: a thread in the workload's process (so in its
// cgroup) that maps and touches anonymous memory, 4 MiB at a time, following
// the scenario's shape, and gives it back when the shape falls. It is what
// a neighbour does to a cache that sized itself for the memory it saw.
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

final class Competitor: Sendable {
    static let chunk = 4 << 20
    let peak: Int
    let scenario: Scenario
    /// Bytes it holds now.
    let bytes = Atomic<Int>(0)
    /// Seconds of calm before it first grows: the caches warm up first.
    let warmup = 2.0

    init(peak: Int, scenario: Scenario) {
        self.peak = peak
        self.scenario = scenario
    }

    /// The bytes it wants `t` seconds into the run.
    func target(at t: Double) -> Int {
        guard t >= warmup, peak > 0 else { return 0 }
        let u = t - warmup
        let fraction: Double
        switch scenario {
        case .wave:
            // 2 s up, 1.5 s held, 1.5 s down, 1 s at rest: 6 s a wave.
            let p = u.truncatingRemainder(dividingBy: 6)
            fraction = p < 2 ? p / 2 : p < 3.5 ? 1 : p < 5 ? (5 - p) / 1.5 : 0
        case .spike:
            // At its peak for 2.5 s, then gone for 3.5 s.
            fraction = u.truncatingRemainder(dividingBy: 6) < 2.5 ? 1 : 0
        case .steady:
            fraction = min(1, u / 2)
        }
        return Int(Double(peak) * fraction) / Self.chunk * Self.chunk
    }

    /// What it holds at its peak (whole chunks).
    var peakBytes: Int { peak / Self.chunk * Self.chunk }

    /// Follows the shape until the run's end; `start` is the run's start.
    func run(start: Double, end: RunEnd) {
        var chunks: [UnsafeMutableRawPointer] = []
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        while end.isAhead {
            let want = target(at: monotonicSeconds() - start)
            while chunks.count * Self.chunk < want {
                guard let p = mmap(nil, Self.chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                      p != MAP_FAILED else { break }
                madvise(p, Self.chunk, MADV_NOHUGEPAGE)
                for off in stride(from: 0, to: Self.chunk, by: page) { p.storeBytes(of: 1, toByteOffset: off, as: UInt8.self) }
                chunks.append(p)
                bytes.store(chunks.count * Self.chunk, ordering: .relaxed)
                // About 48 MiB/s: a growing neighbour, not an instant one
                // (spike: as fast as it can).
                if scenario != .spike { usleep(80_000) }
            }
            while chunks.count * Self.chunk > want, let p = chunks.popLast() {
                munmap(p, Self.chunk)
                bytes.store(chunks.count * Self.chunk, ordering: .relaxed)
            }
            usleep(20_000)
        }
        for p in chunks { munmap(p, Self.chunk) }
        bytes.store(0, ordering: .relaxed)
    }
}

/// CLOCK_MONOTONIC in seconds.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
