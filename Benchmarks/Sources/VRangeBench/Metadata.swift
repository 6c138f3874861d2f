// Metadata: the memory a region maps beyond the bytes it manages, measured
// from /proc/self/maps around its creation (the volatility map: 2 bits per
// page, in its own mapping, so rounded up to a page).
import VRange

/// Total bytes of every mapping of this process.
func mappedBytes() -> Int {
    var total = 0
    for line in (readTextFile("/proc/self/maps") ?? "").split(separator: "\n") {
        guard let span = line.split(separator: " ").first else { continue }
        let ends = span.split(separator: "-")
        guard ends.count == 2, let lo = Int(ends[0], radix: 16), let hi = Int(ends[1], radix: 16) else { continue }
        total += hi - lo
    }
    return total
}

func metadataRows(_ c: Config) throws -> [Row] {
    // A first region creates whatever is created once per process.
    try VolatileRegion(byteCount: 1 << 20).close()
    var rows: [Row] = []
    for size in Set([c.bigBytes, 64 << 20, 64 << 10]).sorted(by: >) {
        let before = mappedBytes()
        let region = try VolatileRegion(byteCount: size)
        let extra = mappedBytes() - before - size
        region.close()
        let percent = 100 * Double(extra) / Double(size)
        rows.append(Row("metadata, \(fmtBytes(size)) region", vrange: percent / 100,
                        "\(fmtBytes(extra)) mapped = \(String(format2: percent, digits: percent < 0.01 ? 4 : 3)) %",
                        baseline: .nan, "managed: \(fmtBytes(size))", goal: .absoluteAtMost(0.002, "≤ 0.2 %")))
    }
    return rows
}
