// The workload both runs share: viewers panning over a tile map, asking a
// cache for every tile of their viewport, checking every value served
// against the digest of its first rendering. Only the cache differs.
import Synchronization
import VRange

/// What a run counts; read by the sampler while the viewers run.
final class Counters: Sendable {
    let served = Atomic<Int>(0)
    let hits = Atomic<Int>(0)
    let frames = Atomic<Int>(0)
    /// First renderings of a tile, and renderings of a tile rendered before
    /// (it was evicted or purged: a rebuild).
    let renders = Atomic<Int>(0)
    let rebuilds = Atomic<Int>(0)
    /// Values served whose header or digest did not match.
    let wrong = Atomic<Int>(0)
}

/// Renders tiles, remembers the digest of each tile's first rendering, and
/// checks the values served against it.
final class TileWork: Sendable {
    let renderer: TileRenderer
    let counters = Counters()
    private let digests: Mutex<[UInt64]>

    init(renderer: TileRenderer, tileCount: Int) {
        self.renderer = renderer
        digests = Mutex([UInt64](repeating: 0, count: tileCount))
    }

    /// Renders `key` and records its digest (a second rendering that differs
    /// from the first counts as a wrong value: rendering must be
    /// deterministic).
    func render(_ key: Int) -> [UInt8] {
        let tile = renderer.render(key)
        let d = tile.withUnsafeBytes { tileDigest($0) }
        let first = digests.withLock { table -> Bool in
            if table[key] == 0 { table[key] = d; return true }
            if table[key] != d { counters.wrong.add(1, ordering: .relaxed) }
            return false
        }
        if first { counters.renders.add(1, ordering: .relaxed) } else { counters.rebuilds.add(1, ordering: .relaxed) }
        return tile
    }

    /// Checks a value served for `key`.
    func check(_ key: Int, _ bytes: UnsafeRawBufferPointer) {
        let expected = digests.withLock { $0[key] }
        if !tileHeaderMatches(bytes, key: key) || bytes.count != renderer.byteCount || tileDigest(bytes) != expected {
            counters.wrong.add(1, ordering: .relaxed)
        }
        counters.served.add(1, ordering: .relaxed)
    }
}

/// A cache of tiles: serves `key` (from memory or rendered), handing the
/// bytes served to `check`. Returns whether it was a hit.
protocol TileCache: Sendable {
    func serve(_ key: Int, _ work: TileWork) -> Bool
    /// Bytes of values the cache holds in memory now.
    var residentBytes: Int { get }
}

/// The plain cache: a Dictionary of [UInt8] under one lock, least recently
/// used entries evicted beyond its cost limit. What most programs have.
final class PlainTileCache: TileCache {
    private struct State {
        var values: [Int: (bytes: [UInt8], used: UInt64)] = [:]
        var bytes = 0
        var clock: UInt64 = 0
    }
    private let state = Mutex(State())
    private let costLimit: Int

    init(costLimit: Int) { self.costLimit = costLimit }

    func serve(_ key: Int, _ work: TileWork) -> Bool {
        let cached = state.withLock { s -> [UInt8]? in
            guard let v = s.values[key] else { return nil }
            s.clock += 1
            s.values[key] = (v.bytes, s.clock)
            return v.bytes
        }
        if let cached {
            cached.withUnsafeBytes { work.check(key, $0) }
            return true
        }
        let tile = work.render(key)
        var evicted: [[UInt8]] = []
        state.withLock { s in
            s.clock += 1
            if let old = s.values.updateValue((tile, s.clock), forKey: key) { s.bytes -= old.bytes.count }
            s.bytes += tile.count
            while s.bytes > costLimit, let oldest = s.values.min(by: { $0.value.used < $1.value.used }) {
                evicted.append(oldest.value.bytes)
                s.values[oldest.key] = nil
                s.bytes -= oldest.value.bytes.count
            }
        }
        evicted.removeAll()  // freed outside the lock
        tile.withUnsafeBytes { work.check(key, $0) }
        return false
    }

    var residentBytes: Int { state.withLock { $0.bytes } }
}

/// VRange's cache: values in purgeable buffers, unlocked while nobody
/// reads them; a value purged under pressure is rendered again on demand.
final class VRangeTileCache: TileCache {
    let cache: PurgeableCache<Int>

    init(costLimit: Int, work: TileWork) {
        cache = PurgeableCache<Int>(costLimit: costLimit) { key in work.render(key) }
    }

    func serve(_ key: Int, _ work: TileWork) -> Bool {
        // Checked in place, while the buffer is locked: what a reader sees.
        if cache.withBytes(forKey: key, { work.check(key, $0) }) != nil { return true }
        guard let tile = try? cache.fetchBytes(forKey: key) else {
            work.counters.wrong.add(1, ordering: .relaxed)  // cannot happen: rendering does not throw
            return false
        }
        tile.withUnsafeBytes { work.check(key, $0) }
        return false
    }

    var residentBytes: Int { cache.statistics.residentBytes }
}

/// One viewer: a viewport of tiles panning over the map (a torus), mostly
/// straight on, sometimes turning; deterministic per viewer.
struct Viewer {
    let columns: Int
    let rows: Int
    let width = 4, height = 3
    var x: Int, y: Int
    var dx = 1, dy = 0
    var rng: UInt64

    init(index: Int, columns: Int, rows: Int) {
        self.columns = columns
        self.rows = rows
        rng = 0x5EED_0000 &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15
        x = (index * columns / 3) % columns
        y = (index * rows / 2) % rows
    }

    /// The tiles of the next frame.
    mutating func next() -> [Int] {
        rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        let r = Int(rng >> 33) % 100
        if r < 12 {
            (dx, dy) = [(1, 0), (-1, 0), (0, 1), (0, -1)][Int(rng >> 40) % 4]
        }
        x = (x + dx + columns) % columns
        y = (y + dy + rows) % rows
        var keys: [Int] = []
        for j in 0..<height {
            for i in 0..<width { keys.append(((y + j) % rows) * columns + (x + i) % columns) }
        }
        return keys
    }
}

/// The map's shape for `tileCount` tiles: about twice as wide as high.
func mapShape(tileCount: Int) -> (columns: Int, rows: Int) {
    var rows = 1
    while 2 * (rows + 1) * (rows + 1) <= tileCount { rows += 1 }
    return (max(1, tileCount / rows), rows)
}
