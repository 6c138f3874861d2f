// Collecting pages word by word into maximal runs: for reporting purged
// ranges, and for handing locked runs to their work.
import CVRange

/// Collects pages locked word by word into maximal runs of at most `maxRun`
/// pages; each finished run is handed to the work, then released.
struct LockedRuns {
    let map: VolatilityMap
    let release: LockRelease
    private var runs: RunCoalescer

    init(map: VolatilityMap, maxRun: Int, release: LockRelease) {
        self.map = map
        self.release = release
        self.runs = RunCoalescer(maxRun: maxRun)
    }

    @inline(__always)
    mutating func add(_ first: Int, _ count: Int, _ work: (Range<Int>) -> Void) {
        let (map, release) = (map, release)
        runs.add(first, count) { run in Self.finish(run, map, release, work) }
    }

    @inline(__always)
    mutating func finish(_ work: (Range<Int>) -> Void) {
        let (map, release) = (map, release)
        runs.flush { run in Self.finish(run, map, release, work) }
    }

    @inline(__always)
    private static func finish(_ run: Range<Int>, _ map: VolatilityMap, _ release: LockRelease, _ work: (Range<Int>) -> Void) {
        TestHook.fire(Int32(VR_HOOK_MAP_LOCKED), UnsafeRawPointer(map.words + run.lowerBound / VolatilityMap.pagesPerWord))
        work(run)
        TestHook.fire(Int32(VR_HOOK_MAP_BEFORE_RELEASE), UnsafeRawPointer(map.words + run.lowerBound / VolatilityMap.pagesPerWord))
        map.release(run, to: release)
    }
}

/// Joins runs reported word by word into maximal runs (of at most `maxRun`
/// pages), handing each to `body` once it can grow no more.
struct RunCoalescer {
    private let maxRun: Int
    private var start = 0
    private var end = 0

    init(maxRun: Int = .max) { self.maxRun = maxRun }

    @inline(__always)
    mutating func add(_ first: Int, _ count: Int, _ body: (Range<Int>) -> Void) {
        if first == end && end > start && end - start + count <= maxRun {
            end += count
        } else {
            flush(body)
            start = first
            end = first + count
        }
    }

    @inline(__always)
    mutating func flush(_ body: (Range<Int>) -> Void) {
        if end > start { body(start..<end) }
        start = 0
        end = 0
    }
}
