// Timing, interleaving, goals and the table. Every VRange figure is timed in
// the same rounds as its baseline (their order alternating from round to
// round) and each side reports its median.
import CBench
#if canImport(Glibc)
import Glibc
#endif

/// Sizes and repetitions of one run.
struct Config {
    /// `--short`: small sizes and few rounds, so CI can run it in seconds.
    let short: Bool
    /// The "1 GiB" of the large rows (64 MiB in short mode).
    let bigBytes: Int
    /// Rounds of the large rows (each one a full pass over `bigBytes`).
    let bigRounds: Int
    /// Rounds of the small rows, and operations per round.
    let smallRounds: Int
    let batch: Int
    /// Pages per round of the fault rows (each page one fault).
    let faultPages: Int
    /// Iterations per thread in the two-thread row.
    let threadIterations: Int
    let pageSize = 4096

    init(short: Bool) {
        self.short = short
        bigBytes = short ? 64 << 20 : 1 << 30
        bigRounds = short ? 3 : 11
        smallRounds = short ? 7 : 31
        batch = short ? 2_000 : 20_000
        faultPages = short ? 64 : 512
        threadIterations = short ? 50_000 : 1_000_000
    }

    var bigLabel: String { short ? "64 MiB" : "1 GiB" }
    var bigPages: Int { bigBytes / pageSize }
}

@inline(__always) func now() -> UInt64 { cb_now_ns() }

/// Runs each contender once per round, rotating which goes first, and
/// returns each contender's median result (a cost per operation).
func interleaved(rounds: Int, warmup: Int = 1, _ contenders: [() throws -> Double]) throws -> [Double] {
    try interleavedSamples(rounds: rounds, warmup: warmup, contenders).map(median)
}

/// The same, every round's figure per contender (round r of each contender
/// taken in the same pass), for per-round ratios.
func interleavedSamples(rounds: Int, warmup: Int = 1, _ contenders: [() throws -> Double]) throws -> [[Double]] {
    for _ in 0..<warmup { for c in contenders { _ = try c() } }
    var samples = Array(repeating: [Double](), count: contenders.count)
    for round in 0..<rounds {
        for k in 0..<contenders.count {
            let i = (k + round) % contenders.count
            samples[i].append(try contenders[i]())
        }
    }
    if showSamples {
        for (i, xs) in samples.enumerated() {
            eprint("  samples[\(i)]: " + xs.map { fmtTime($0) }.joined(separator: " "))
        }
    }
    return samples
}

/// VRANGE_BENCH_SAMPLES=1: every round's figure on standard error, to see
/// the spread behind a median.
let showSamples = (getenv("VRANGE_BENCH_SAMPLES").map { String(cString: $0) } ?? "") == "1"

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    if s.isEmpty { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// A failure that makes a figure meaningless: stops the run.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Checks a C baseline's result (0 means a call failed).
func checked(_ ns: UInt64, _ what: String) throws -> Double {
    guard ns > 0 else { throw BenchError("\(what) failed") }
    return Double(ns)
}

// MARK: - Formatting

func fmtTime(_ ns: Double) -> String {
    if ns.isNaN { return "n/a" }
    if ns < 10 { return String(format2: ns, digits: 2) + " ns" }
    if ns < 1_000 { return String(format2: ns, digits: 1) + " ns" }
    if ns < 1_000_000 { return String(format2: ns / 1_000, digits: 2) + " µs" }
    if ns < 1_000_000_000 { return String(format2: ns / 1_000_000, digits: 1) + " ms" }
    return String(format2: ns / 1_000_000_000, digits: 2) + " s"
}

/// "71.2 ms (14.0 GiB/s)" for `bytes` done in `ns`.
func fmtBulk(_ ns: Double, bytes: Int) -> String {
    let gibs = Double(bytes) / Double(1 << 30) / (ns / 1e9)
    return "\(fmtTime(ns)) (\(String(format2: gibs, digits: 1)) GiB/s)"
}

func fmtRatio(_ r: Double) -> String {
    if r.isNaN || r.isInfinite { return "n/a" }
    if r > 0 && r < 0.1 {
        // Two significant digits: 0.0036×, not 0.00×.
        var digits = 2
        var x = r * 100
        while x < 10 && digits < 8 { x *= 10; digits += 1 }
        return String(format2: r, digits: digits) + "×"
    }
    return String(format2: r, digits: r >= 100 ? 0 : (r >= 10 ? 1 : 2)) + "×"
}

func fmtBytes(_ b: Int) -> String {
    if b >= 1 << 30 && b % (1 << 30) == 0 { return "\(b >> 30) GiB" }
    if b >= 1 << 20 && b % (1 << 20) == 0 { return "\(b >> 20) MiB" }
    if b >= 1 << 10 && b % (1 << 10) == 0 { return "\(b >> 10) KiB" }
    return "\(b) B"
}

extension String {
    /// Fixed-point formatting without Foundation.
    init(format2 value: Double, digits: Int) {
        if value.isNaN { self = "nan"; return }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = Int(scaled / scale)
        var s = (value < 0 ? "-" : "") + String(whole)
        if digits > 0 {
            let frac = Int(scaled - Double(whole) * scale)
            var f = String(frac)
            while f.count < digits { f = "0" + f }
            s += "." + f
        }
        self = s
    }
}

// MARK: - Goals and rows

/// What a row promises, and how its ratio is computed from the two figures.
enum Goal {
    /// VRange must be at least `x` times faster: ratio = baseline / VRange.
    case faster(Double)
    /// VRange may take at most `x` times the baseline: ratio = VRange / baseline.
    case timeAtMost(Double)
    /// VRange's throughput at least `x` of the baseline's: ratio = baseline time / VRange time.
    case throughputAtLeast(Double)
    /// Aggregate throughput at least `x` times the baseline's: ratio = VRange / baseline (both rates).
    case scalingAtLeast(Double)
    /// VRange's own figure at most `limit` (no baseline).
    case absoluteAtMost(Double, String)
    /// Report only: the ratio is VRange / baseline when both exist.
    case report
    /// Report only, for two rates: the ratio is VRange / baseline.
    case scalingReport
    /// The capability has not landed.
    case notYet(String)
}

struct Row {
    let what: String
    let vrange: String
    let baseline: String
    let ratio: String
    let goal: String
    let result: String

    /// A row from two numbers (`nan` for a missing one) and their texts.
    init(_ what: String, vrange v: Double, _ vText: String, baseline b: Double, _ bText: String, goal: Goal) {
        self.what = what
        self.vrange = vText
        self.baseline = bText
        switch goal {
        case .faster(let x):
            let r = b / v
            ratio = fmtRatio(r) + " faster"
            self.goal = "≥ \(fmtRatio(x)) faster"
            result = Row.verdict(r >= x, r)
        case .timeAtMost(let x):
            let r = v / b
            ratio = fmtRatio(r) + " the time"
            self.goal = "≤ \(fmtRatio(x)) the time"
            result = Row.verdict(r <= x, r)
        case .throughputAtLeast(let x):
            let r = b / v
            ratio = fmtRatio(r) + " the throughput"
            self.goal = "≥ \(fmtRatio(x)) the throughput"
            result = Row.verdict(r >= x, r)
        case .scalingAtLeast(let x):
            let r = v / b
            ratio = fmtRatio(r) + " aggregate"
            self.goal = "≥ \(fmtRatio(x)) aggregate"
            result = Row.verdict(r >= x, r)
        case .absoluteAtMost(let limit, let text):
            ratio = "—"
            self.goal = text
            result = Row.verdict(v <= limit, v)
        case .report:
            ratio = (v.isNaN || b.isNaN) ? "—" : fmtRatio(v / b) + " the time"
            self.goal = "report"
            result = "—"
        case .scalingReport:
            ratio = fmtRatio(v / b) + " aggregate"
            self.goal = "report"
            result = "—"
        case .notYet(let text):
            ratio = "—"
            self.goal = text
            result = "not yet"
        }
    }

    init(what: String, vrange: String, baseline: String, ratio: String, goal: String, result: String) {
        self.what = what
        self.vrange = vrange
        self.baseline = baseline
        self.ratio = ratio
        self.goal = goal
        self.result = result
    }

    static func verdict(_ ok: Bool, _ r: Double) -> String {
        if r.isNaN { return "n/a" }
        return ok ? "met" : "**missed**"
    }

    /// A row for a capability that has not landed: its baseline still runs.
    static func notYet(_ what: String, baseline: String, goal: String) -> Row {
        Row(what: what, vrange: "not yet", baseline: baseline, ratio: "—", goal: goal, result: "not yet")
    }
}

/// Prints rows as a Markdown table (readable in a terminal, pasteable into
/// BENCHMARKS.md).
func printTable(_ rows: [Row]) {
    let header = ["#", "what", "VRange", "baseline (same run)", "ratio", "goal", "result"]
    var cells = [header]
    for (i, r) in rows.enumerated() {
        cells.append(["\(i + 1)", r.what, r.vrange, r.baseline, r.ratio, r.goal, r.result])
    }
    var widths = Array(repeating: 0, count: header.count)
    for line in cells { for (i, c) in line.enumerated() { widths[i] = max(widths[i], c.count) } }
    func pad(_ s: String, _ w: Int) -> String { s + String(repeating: " ", count: max(0, w - s.count)) }
    for (n, line) in cells.enumerated() {
        print("| " + line.enumerated().map { pad($1, widths[$0]) }.joined(separator: " | ") + " |")
        if n == 0 { print("|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|") }
    }
}
