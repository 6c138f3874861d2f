// Live progress on the terminal: one status line per run, redrawn in place
// (memory with a sparkline, cache, volatile and purged bytes, hit rate,
// throughput, wrong values), with notes and pressure events printed above
// it. When stdout is not a terminal: a plain line a second, no escapes.
#if canImport(Glibc)
import Glibc
#endif

final class Live {
    private let columns = terminalColumns
    private var kind = CacheKind.plain
    private var limit: Int?
    private var memory: [Int] = []
    private var samples: [Sample] = []
    private var lastPlain = -1.0
    private var lineShown = false

    func begin(_ kind: CacheKind, limit: Int?, cgroup: String?) {
        self.kind = kind
        self.limit = limit
        memory = []
        samples = []
        lastPlain = -1
        say("\n\(title(kind)) run\(cgroup.map { " in \($0)" } ?? "")")
    }

    func sample(_ s: Sample) {
        samples.append(s)
        memory.append(s.memory)
        if columns != nil {
            draw(status(s, sparkline: true))
        } else if s.t - lastPlain >= 1 {
            lastPlain = s.t
            say(status(s, sparkline: false))
        }
    }

    func event(_ e: Event) {
        let reaction = e.reactionMicroseconds.map { " in \(milliseconds($0))" } ?? ""
        message("\(pad(e.t))s  pressure \(e.level) (\(e.source)): purged \(mib(e.purged))\(reaction)")
    }

    /// A line above the status line.
    func message(_ text: String) {
        if columns != nil && lineShown { writeAll(1, "\r\u{1B}[2K") }
        say("  " + text)
        lineShown = false
        if columns != nil, let s = samples.last { draw(status(s, sparkline: true)) }
    }

    func end(_ r: RunResult) {
        if columns != nil && lineShown { say("") }
        lineShown = false
        let at = r.samples.last.map { " at \(pad($0.t)) s" } ?? ""
        say("  → \(r.outcome)\(at)\(r.oomKills > 0 ? " (the cgroup's OOM killer: \(r.oomKills))" : "")")
    }

    private func draw(_ text: String) {
        let width = max(20, (columns ?? 80) - 1)
        writeAll(1, "\r\u{1B}[2K" + String(text.prefix(width)))
        lineShown = true
    }

    private func status(_ s: Sample, sparkline: Bool) -> String {
        // Throughput over the last second.
        let earlier = samples.last { $0.t <= s.t - 1 } ?? samples.first ?? s
        let rate = s.t > earlier.t ? Double(s.served - earlier.served) / (s.t - earlier.t) : 0
        let hit = s.served > 0 ? Double(s.hits) * 100 / Double(s.served) : 0
        var parts = ["\(title(kind)) \(pad(s.t))s",
                     "mem \(mib(s.memory))\(limit.map { "/\($0 >> 20)" } ?? "")" + (sparkline ? " " + spark() : ""),
                     "cache \(mib(s.cache))"]
        if kind == .vrange { parts += ["volatile \(mib(s.volatile))", "purged \(mib(s.purged))"] }
        parts += ["competitor \(s.competitor >> 20) MiB", "hit \(Int(hit))%", "\(Int(rate)) tiles/s", "wrong \(s.wrong)"]
        return parts.joined(separator: " │ ")
    }

    /// The memory of the last 12 s (24 cells of 0.5 s; the highest sample
    /// of each), scaled to the limit.
    private func spark() -> String {
        let bars = Array("▁▂▃▄▅▆▇█")
        let perCell = max(1, samples.count > 1 ? Int(0.5 / max(0.001, samples[1].t - samples[0].t)) : 5)
        var cells: [Int] = []
        var i = memory.count
        while i > 0 && cells.count < 24 {
            cells.insert(memory[max(0, i - perCell)..<i].max() ?? 0, at: 0)
            i -= perCell
        }
        let top = max(limit ?? 0, memory.max() ?? 1, 1)
        return String(cells.map { bars[min(bars.count - 1, $0 * bars.count / (top + 1))] })
    }
}

func title(_ kind: CacheKind) -> String { kind == .plain ? "plain " : "VRange" }

/// Seconds with one decimal, padded to 5 characters.
func pad(_ t: Double) -> String {
    let tenths = Int((t * 10).rounded())
    let s = "\(tenths / 10).\(tenths % 10)"
    return String(repeating: " ", count: max(0, 5 - s.count)) + s
}

/// Microseconds as milliseconds with two decimals.
func milliseconds(_ us: Int) -> String {
    let hundredths = (us + 5) / 10
    return "\(hundredths / 100).\(String(repeating: "0", count: hundredths % 100 < 10 ? 1 : 0))\(hundredths % 100) ms"
}
