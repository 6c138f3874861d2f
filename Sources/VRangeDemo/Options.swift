// The demo's command line: every flag, its default, and --help. The parent
// passes the same flags on to each child (plus the hidden --child and
// --cgroup), so one parser serves both.
#if canImport(Glibc)
import Glibc
#endif

/// The shape of the competing allocation that shares the workload's memory.
enum Scenario: String, CaseIterable {
    /// Grows to its peak, holds, shrinks, rests, again (a neighbour's batch job).
    case wave
    /// Jumps to its peak at once, holds, drops, again (a sudden burst).
    case spike
    /// Grows to its peak once and keeps it (a neighbour that settles in).
    case steady
}

/// Which cache a child runs.
enum CacheKind: String {
    case plain, vrange
}

struct Options {
    var duration = 20.0
    var limitMiB = 256
    var cacheMiB = 192
    var competitorMiB = 96
    var workingSetMiB = 512
    var tileSide = 256
    var octaves = 5
    var threads = 2
    var scenario = Scenario.wave
    var noPressure = false
    var untilFilled = false
    var only: CacheKind?
    var chartPath = "vrange-demo.svg"
    var jsonPath: String?
    var sampleMilliseconds = 100
    // Hidden: set by the parent for its children.
    var child: CacheKind?
    var cgroup: String?
    var budget: Int?

    static let help = """
        VRangeDemo: a cache of rendered map tiles under real memory pressure, run
        twice side by side: with a plain in-memory cache (a Dictionary of [UInt8])
        and with VRange's PurgeableCache. Each run is a child process; as root with
        a cgroup memory controller it is placed in a memory-limited cgroup next to
        a competing allocation that grows and shrinks. Every value served is
        checked against the digest of its first rendering.

        usage: swift run -c release VRangeDemo [options]

          --duration S        seconds per run (default 20)
          --limit MiB         memory limit of each run's cgroup (default 256)
          --cache MiB         cost limit of both caches (default 192)
          --competitor MiB    peak of the competing allocation (default 96)
          --working-set MiB   size of the whole tile map (default 512)
          --tile PIXELS       tile edge in pixels, 4 bytes a pixel (default 256)
          --octaves N         noise octaves per pixel: rendering cost (default 5)
          --threads N         viewer threads per run (default 2)
          --scenario NAME     competitor shape: wave (grows, holds, shrinks),
                              spike (jumps to its peak), steady (grows once, stays)
                              (default wave)
          --no-pressure       no cgroup, no competitor, no budget: a baseline
          --until-filled      a run goes on past --duration until its cache was
                              handed --cache MiB of tiles and the competitor is
                              at its peak (at most 4 x --duration): the outcome
                              then does not depend on how fast this machine is
          --only plain|vrange run one of the two
          --chart PATH        where the SVG chart goes (default vrange-demo.svg)
          --json PATH         also write a machine-readable report there
          --sample-ms N       sampling period (default 100)
          -h, --help          this text

        Without root or a cgroup memory controller it says so, watches the best
        pressure source the purger finds (PSI, MemAvailable) and enforces the
        limit on the VRange run as a byte budget; the plain run is then judged
        by whether its peak RSS went over the limit.
        """

    /// Parses `arguments` (without the program name). Exits on --help and on
    /// errors, with the reason.
    static func parse(_ arguments: [String]) -> Options {
        var o = Options()
        var i = 0
        func value() -> String {
            i += 1
            guard i < arguments.count else { fail("\(arguments[i - 1]) needs a value") }
            return arguments[i]
        }
        func number(_ min: Double, _ max: Double) -> Double {
            let flag = arguments[i], text = value()
            guard let v = Double(text), v >= min, v <= max else { fail("\(flag) \(text): expected a number in \(min)...\(max)") }
            return v
        }
        func int(_ min: Int, _ max: Int) -> Int { Int(number(Double(min), Double(max))) }
        while i < arguments.count {
            switch arguments[i] {
            case "-h", "--help":
                say(help)
                exit(0)
            case "--duration": o.duration = number(1, 3600)
            case "--limit": o.limitMiB = int(16, 1 << 20)
            case "--cache": o.cacheMiB = int(1, 1 << 20)
            case "--competitor": o.competitorMiB = int(0, 1 << 20)
            case "--working-set": o.workingSetMiB = int(1, 1 << 20)
            case "--tile": o.tileSide = int(16, 4096)
            case "--octaves": o.octaves = int(1, 16)
            case "--threads": o.threads = int(1, 256)
            case "--scenario":
                let text = value()
                guard let s = Scenario(rawValue: text) else {
                    fail("--scenario \(text): one of \(Scenario.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                o.scenario = s
            case "--no-pressure": o.noPressure = true
            case "--until-filled": o.untilFilled = true
            case "--only":
                let text = value()
                guard let k = CacheKind(rawValue: text) else { fail("--only \(text): plain or vrange") }
                o.only = k
            case "--chart": o.chartPath = value()
            case "--json": o.jsonPath = value()
            case "--sample-ms": o.sampleMilliseconds = int(10, 10_000)
            case "--child": o.child = CacheKind(rawValue: value())
            case "--cgroup": o.cgroup = value()
            case "--budget": o.budget = int(0, Int.max)
            default: fail("unknown option \(arguments[i]) (see --help)")
            }
            i += 1
        }
        if o.tileSide % 4 != 0 { fail("--tile \(o.tileSide): must be a multiple of 4") }
        return o
    }

    /// The flags that describe the workload, for a child's command line.
    var childArguments: [String] {
        var a = ["--duration", "\(duration)", "--limit", "\(limitMiB)", "--cache", "\(cacheMiB)",
                 "--competitor", "\(competitorMiB)", "--working-set", "\(workingSetMiB)",
                 "--tile", "\(tileSide)", "--octaves", "\(octaves)", "--threads", "\(threads)",
                 "--scenario", scenario.rawValue, "--sample-ms", "\(sampleMilliseconds)"]
        if noPressure { a.append("--no-pressure") }
        if untilFilled { a.append("--until-filled") }
        return a
    }

    var tileBytes: Int { tileSide * tileSide * 4 }
    /// The longest a run may last: `duration`, or four times it with
    /// `--until-filled`.
    var longestRun: Double { untilFilled ? duration * 4 : duration }
    /// Tiles in the map: the working set.
    var tileCount: Int { max(16, (workingSetMiB << 20) / tileBytes) }
}

/// Prints `why` to stderr and exits with status 2.
func fail(_ why: String) -> Never {
    writeAll(2, "VRangeDemo: \(why)\n")
    exit(2)
}
