// Metadata: the bytes a region keeps beside the bytes it manages. Two
// measures: the library's own accounting (`metadataBytes`: the volatility
// map, 2 bits per page, on the heap) and, as a cross-check, the growth of
// /proc/self/maps around the region's creation beyond the region itself
// (0 when the map fits in the existing heap).
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
        let mapped = mappedBytes() - before - size
        let extra = region.metadataBytes
        region.close()
        let percent = 100 * Double(extra) / Double(size)
        rows.append(Row("metadata, \(fmtBytes(size)) region", vrange: percent / 100,
                        "\(fmtBytes(extra)) = \(String(format2: percent, digits: percent < 0.01 ? 4 : 3)) % (new mappings: \(fmtBytes(mapped)))",
                        baseline: .nan, "managed: \(fmtBytes(size))", goal: .absoluteAtMost(0.002, "≤ 0.2 %")))
    }
    return rows
}
