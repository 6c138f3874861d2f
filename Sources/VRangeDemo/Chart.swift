// The SVG chart: one panel per run on a shared time axis. Memory charged
// (the cgroup's, else RSS), the cache's resident bytes, the competing
// allocation, the limit, bytes purged per sample interval as bars,
// pressure events as vertical marks, and the moment a run was killed.

func svgChart(_ runs: [RunResult], limit: Int?, duration: Double, subtitle: String) -> String {
    let width = 960.0, panelHeight = 250.0, top = 76.0, left = 70.0, right = 24.0, gap = 74.0
    let plotWidth = width - left - right
    let height = top + Double(runs.count) * (panelHeight + gap) + 30
    let allMemory = runs.flatMap { $0.samples.map { max($0.memory, $0.cache + $0.competitor) } }
    let yMax = Double(max(limit ?? 0, allMemory.max() ?? 0, 1 << 20)) * 1.12
    let mibStep = niceStep(yMax / Double(1 << 20) / 5)
    var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
        viewBox="0 0 \(Int(width)) \(Int(height))" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="#ffffff"/>
        <text x="\(left)" y="26" font-size="18" font-weight="bold">VRangeDemo: a tile cache under memory pressure</text>
        <text x="\(left)" y="46" font-size="12" fill="#444">\(escape(subtitle))</text>

        """
    for (i, r) in runs.enumerated() {
        let y0 = top + Double(i) * (panelHeight + gap) + 20
        func x(_ t: Double) -> Double { left + plotWidth * min(max(t, 0), duration) / duration }
        func y(_ b: Int) -> Double { y0 + panelHeight - panelHeight * Double(b) / yMax }
        let f = Figures(r: r)
        let heading = r.kind == .plain ? "plain cache (Dictionary of [UInt8])" : "VRange (PurgeableCache + Purger)"
        var verdict = "\(r.outcome) at \(fmt1(f.seconds)) s · \(Int(f.throughput)) tiles/s · hit rate \(Int(f.hitRate * 100)) % · \(r.last.wrong) wrong values"
        if r.kind == .vrange { verdict += " · purged \(mib(r.last.purged)) in \(r.events.count) pressure events" }
        svg += "<text x=\"\(left)\" y=\"\(y0 - 26)\" font-size=\"14\" font-weight=\"bold\">\(escape(heading))</text>\n"
        svg += "<text x=\"\(left)\" y=\"\(y0 - 8)\" fill=\"\(r.survived ? "#1a7f37" : "#c62828")\">\(escape(verdict))</text>\n"
        svg += "<rect x=\"\(left)\" y=\"\(y0)\" width=\"\(plotWidth)\" height=\"\(panelHeight)\" fill=\"#fafafa\" stroke=\"#bbb\"/>\n"
        // Grid and axes.
        var m = 0.0
        while m * Double(1 << 20) < yMax {
            let gy = y(Int(m * Double(1 << 20)))
            svg += "<line x1=\"\(left)\" y1=\"\(gy)\" x2=\"\(left + plotWidth)\" y2=\"\(gy)\" stroke=\"#e4e4e4\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(gy + 4)\" text-anchor=\"end\" fill=\"#555\">\(Int(m))</text>\n"
            m += mibStep
        }
        svg += "<text transform=\"translate(\(left - 48) \(y0 + panelHeight / 2)) rotate(-90)\" text-anchor=\"middle\" fill=\"#555\">MiB</text>\n"
        var t = 0.0
        let tStep = niceStep(duration / 10)
        while t <= duration + 0.001 {
            svg += "<text x=\"\(x(t))\" y=\"\(y0 + panelHeight + 16)\" text-anchor=\"middle\" fill=\"#555\">\(fmt1(t))</text>"
            t += tStep
        }
        svg += "<text x=\"\(left + plotWidth)\" y=\"\(y0 + panelHeight + 30)\" text-anchor=\"end\" fill=\"#555\">seconds</text>\n"
        // Competitor (area), purges (bars), cache and memory (lines).
        if !r.samples.isEmpty {
            var area = "M\(x(r.samples[0].t)),\(y(0))"
            for s in r.samples { area += " L\(x(s.t)),\(y(s.competitor))" }
            area += " L\(x(r.samples.last!.t)),\(y(0)) Z"
            svg += "<path d=\"\(area)\" fill=\"#9e9e9e\" fill-opacity=\"0.35\" stroke=\"none\"/>\n"
        }
        var previous = 0
        for s in r.samples {
            let delta = s.purged - previous
            previous = s.purged
            if delta > 0 {
                svg += "<rect x=\"\(x(s.t) - 2)\" y=\"\(y(delta))\" width=\"4\" height=\"\(y(0) - y(delta))\" fill=\"#e53935\"/>"
            }
        }
        svg += polyline(r.samples.map { (x($0.t), y($0.cache)) }, colour: "#2e7d32", width: 1.8)
        svg += polyline(r.samples.map { (x($0.t), y($0.memory)) }, colour: "#1565c0", width: 2.4)
        if let limit {
            svg += "<line x1=\"\(left)\" y1=\"\(y(limit))\" x2=\"\(left + plotWidth)\" y2=\"\(y(limit))\" stroke=\"#c62828\" stroke-dasharray=\"6 4\" stroke-width=\"1.5\"/>"
            svg += "<text x=\"\(left + 6)\" y=\"\(y(limit) - 5)\" fill=\"#c62828\">limit \(limit >> 20) MiB</text>\n"
        }
        for e in r.events {
            let colour = e.level == "critical" ? "#b71c1c" : "#ef6c00"
            svg += "<line x1=\"\(x(e.t))\" y1=\"\(y0)\" x2=\"\(x(e.t))\" y2=\"\(y0 + panelHeight)\" stroke=\"\(colour)\" stroke-width=\"1\" stroke-dasharray=\"2 3\"/>"
            svg += "<path d=\"M\(x(e.t) - 5),\(y0) L\(x(e.t) + 5),\(y0) L\(x(e.t)),\(y0 + 8) Z\" fill=\"\(colour)\"/>\n"
        }
        if !r.survived, let last = r.samples.last {
            let (cx, cy) = (x(last.t), y(last.memory))
            svg += "<path d=\"M\(cx - 7),\(cy - 7) L\(cx + 7),\(cy + 7) M\(cx - 7),\(cy + 7) L\(cx + 7),\(cy - 7)\" stroke=\"#c62828\" stroke-width=\"3\"/>"
            let anchor = cx > left + plotWidth * 0.7 ? "end" : "start"
            svg += "<text x=\"\(cx + (anchor == "end" ? -12 : 12))\" y=\"\(cy + 4)\" text-anchor=\"\(anchor)\" font-weight=\"bold\" fill=\"#c62828\">\(escape(r.outcome)) at \(fmt1(last.t)) s</text>\n"
        }
    }
    // Legend.
    var ly = height - 34
    let items: [(String, String)] = [("#1565c0", "memory charged (cgroup, else RSS)"), ("#2e7d32", "cache: resident values"),
                                     ("#9e9e9e", "competing allocation"), ("#e53935", "bytes purged per sample"),
                                     ("#ef6c00", "moderate pressure"), ("#b71c1c", "critical pressure")]
    var lx = left
    for (n, (colour, label)) in items.enumerated() {
        if n == 3 { lx = left; ly += 18 }
        svg += "<rect x=\"\(lx)\" y=\"\(ly - 9)\" width=\"14\" height=\"10\" fill=\"\(colour)\"/><text x=\"\(lx + 18)\" y=\"\(ly)\">\(label)</text>\n"
        lx += 60 + Double(label.count) * 6.4
    }
    return svg + "</svg>\n"
}

private func polyline(_ points: [(Double, Double)], colour: String, width: Double) -> String {
    guard !points.isEmpty else { return "" }
    let p = points.map { "\(round1($0.0)),\(round1($0.1))" }.joined(separator: " ")
    return "<polyline points=\"\(p)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"\(width)\" stroke-linejoin=\"round\"/>\n"
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
private func niceStep(_ raw: Double) -> Double {
    var p = 1.0
    while p * 10 <= raw { p *= 10 }
    while p > raw && p > 0.1 { p /= 10 }
    for k in [1.0, 2, 5, 10] where k * p >= raw { return k * p }
    return 10 * p
}

private func round1(_ v: Double) -> Double { (v * 10).rounded() / 10 }

func fmt1(_ v: Double) -> String {
    let tenths = Int((v * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}

private func escape(_ s: String) -> String {
    s.replacingOccurrences("&", "&amp;").replacingOccurrences("<", "&lt;").replacingOccurrences(">", "&gt;")
}

extension String {
    /// Every `target` replaced by `replacement` (no Foundation here).
    func replacingOccurrences(_ target: Character, _ replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
