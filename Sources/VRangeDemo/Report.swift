// The end of the demo: the summary table of both runs, and the
// machine-readable report (--json) that the test and CI read.
#if canImport(Glibc)
import Glibc
#endif

/// The figures of one run, as the table and the report show them.
struct Figures {
    let r: RunResult
    var seconds: Double { r.last.t }
    var throughput: Double { seconds > 0 ? Double(r.last.served) / seconds : 0 }
    var hitRate: Double { r.last.served > 0 ? Double(r.last.hits) / Double(r.last.served) : 0 }
    var reactions: [Int] { r.events.compactMap(\.reactionMicroseconds).sorted() }
    var medianReaction: Int? { reactions.isEmpty ? nil : reactions[reactions.count / 2] }
    var maxReaction: Int? { reactions.last }
    var peakSource: String { r.cgroupPeak != nil ? "cgroup" : "VmHWM" }
    var source: String { r.final?.source ?? r.notes.first { $0.hasPrefix("purger: ") }.map { String($0.dropFirst(8)) } ?? "-" }
}

func summaryTable(_ runs: [RunResult]) -> String {
    let f = runs.map(Figures.init)
    func fmt(_ d: Double, _ digits: Int) -> String {
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        let v = Int((d * p).rounded())
        return digits == 0 ? "\(v)" : "\(v / Int(p)).\(String(String(v % Int(p) + Int(p)).dropFirst()))"
    }
    var rows: [(String, [String])] = [("", runs.map { $0.kind == .plain ? "plain cache" : "VRange" })]
    rows.append(("outcome", f.map { "\($0.r.outcome) at \(fmt($0.seconds, 1)) s" }))
    rows.append(("throughput", f.map { "\(fmt($0.throughput, 0)) tiles/s" }))
    rows.append(("hit rate", f.map { "\(fmt($0.hitRate * 100, 1)) %" }))
    rows.append(("tiles served", f.map { "\($0.r.last.served)" }))
    rows.append(("rendered / rebuilt", f.map { "\($0.r.last.renders) / \($0.r.last.rebuilds)" }))
    rows.append(("peak memory", f.map { "\(mib($0.r.peak)) (\($0.peakSource))" }))
    rows.append(("over its limit", f.map { $0.r.limit == nil ? "-" : $0.r.overLimit ? "yes" : "no" }))
    rows.append(("purged", f.map { $0.r.kind == .plain ? "-" : mib($0.r.last.purged) }))
    rows.append(("pressure events", f.map { $0.r.kind == .plain ? "-" : "\($0.r.events.count)" }))
    rows.append(("reaction median/max", f.map { x in
        guard let m = x.medianReaction, let top = x.maxReaction else { return "-" }
        return "\(milliseconds(m)) / \(milliseconds(top))"
    }))
    rows.append(("wrong values", f.map { "\($0.r.last.wrong)" }))
    let width0 = rows.map(\.0.count).max() ?? 0
    let widths = runs.indices.map { i in rows.map { $0.1[i].count }.max() ?? 0 }
    return rows.map { label, cells in
        "  " + label.padding(width0) + "  " + cells.enumerated().map { $1.padding(widths[$0]) }.joined(separator: "   ")
    }.joined(separator: "\n")
}

extension String {
    func padding(_ n: Int) -> String { self + String(repeating: " ", count: max(0, n - count)) }
}

/// The report as JSON (hand-written: the demo has no dependencies).
func jsonReport(_ runs: [RunResult], mode: PressureMode, options o: Options, chart: String) -> String {
    func q(_ s: String) -> String {
        "\"" + s.unicodeScalars.map { c -> String in
            switch c {
            case "\"": return "\\\""
            case "\\": return "\\\\"
            case _ where c.value < 0x20: return "\\u00" + (c.value < 16 ? "0" : "") + String(c.value, radix: 16)
            default: return String(c)
            }
        }.joined() + "\""
    }
    func opt(_ v: Int?) -> String { v.map(String.init) ?? "null" }
    var reason = ""
    if case .noCgroup(let why) = mode { reason = why }
    let entries = runs.map { r -> String in
        let f = Figures(r: r)
        return """
            {"kind": \(q(r.kind.rawValue)), "outcome": \(q(r.outcome)), "survived": \(r.survived), "killed": \(r.killed), \
            "signal": \(opt(r.signal.map(Int.init))), "oomKills": \(r.oomKills), "overLimit": \(r.overLimit), \
            "limitHits": \(r.limitHits), "seconds": \(f.seconds), "served": \(r.last.served), \
            "throughput": \(f.throughput), "hitRate": \(f.hitRate), "renders": \(r.last.renders), \
            "rebuilds": \(r.last.rebuilds), "peakBytes": \(r.peak), "peakSource": \(q(f.peakSource)), \
            "purgedBytes": \(r.last.purged), "pressureEvents": \(r.events.count), \
            "reactionMedianMicroseconds": \(opt(f.medianReaction)), "reactionMaxMicroseconds": \(opt(f.maxReaction)), \
            "wrongValues": \(r.last.wrong), "source": \(q(f.source)), "samples": \(r.samples.count)}
            """
    }
    return """
        {"mode": \(q(mode.name)), "noCgroupReason": \(q(reason)), "limitBytes": \(o.noPressure ? "null" : "\(o.limitMiB << 20)"), \
        "budgetBytes": \(opt(mode.isNoCgroup ? PressureMode.budget(o) : nil)), "duration": \(o.duration), \
        "scenario": \(q(o.scenario.rawValue)), "chart": \(q(chart)),
         "runs": [
          \(entries.joined(separator: ",\n  "))
         ]}

        """
}

extension PressureMode {
    var isNoCgroup: Bool { if case .noCgroup = self { true } else { false } }
}

/// Writes `text` to `path` (created or truncated); false on failure.
func writeFile(_ path: String, _ text: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { return false }
        offset += n
    }
    return true
}
