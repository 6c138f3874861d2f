// VRangeSQLiteProbe: runs SQLite workloads in a process of its own, on
// VRange's page cache or on SQLite's built-in one (the page cache is
// process-global and must be installed before SQLite initialises, so each
// configuration needs a fresh process). The tests spawn it and compare what
// it prints.
//
//   workload --cache vrange|builtin --dir DIR [--rows N] [--seed S]
//            [--cache-kib K] [--threading serialized|multithread]
//            [--purge random|none] [--budget BYTES] [--tick-ms T]
//            [--page-size P] [--mutate]
//       the speedtest1-like workload (Workload.swift). Prints "Q name …"
//       lines, "I <integrity_check>", and for vrange "S <statistics>".
//       --purge random: a thread purges a random quarter of the unpinned
//       pages every 0.2-2 ms; --budget: a Purger keeps at most BYTES of
//       unpinned pages resident (checked every 10 ms). --mutate: the
//       test-only mutation, purged pages served as intact.
//   makedb, pressure: real memory pressure (Pressure.swift)
//   bench, memory: the measurements (Bench.swift)
//
// Exit status: 0 when everything ran; 2 when SQLite reported an error
// (printed as "E message"); 64 for bad arguments.
import CSQLite
import Synchronization
import VRange
import VRangeSQLite
#if canImport(Glibc)
import Glibc
#endif

/// A line on stdout, unbuffered (a process the kernel kills keeps every
/// line it printed).
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}

func fail(_ message: String, status: Int32 = 64) -> Never {
    say("E \(message)")
    exit(status)
}

struct Arguments {
    private var values: [String: String] = [:]
    private var flags: Set<String> = []
    let command: String

    init(_ argv: [String]) {
        command = argv.first ?? ""
        var i = 1
        while i < argv.count {
            let a = argv[i]
            guard a.hasPrefix("--") else { fail("unexpected argument \(a)") }
            if i + 1 < argv.count && !argv[i + 1].hasPrefix("--") {
                values[String(a.dropFirst(2))] = argv[i + 1]
                i += 2
            } else {
                flags.insert(String(a.dropFirst(2)))
                i += 1
            }
        }
    }

    func string(_ key: String, _ fallback: String? = nil) -> String {
        guard let v = values[key] ?? fallback else { fail("--\(key) is required") }
        return v
    }

    func int(_ key: String, _ fallback: Int) -> Int {
        guard let v = values[key] else { return fallback }
        guard let n = Int(v) else { fail("--\(key): not a number: \(v)") }
        return n
    }

    func flag(_ key: String) -> Bool { flags.contains(key) }
}

/// Sets SQLite's threading mode and, for `vrange`, installs the page cache
/// (with `purger` when given). Returns the allocator.
func setUp(cache: String, serialized: Bool, purger: Purger?, kernelDriven: Bool = false) -> VolatileAllocator? {
    let rc = vrsqlite_config_threading(serialized ? SQLITE_CONFIG_SERIALIZED : SQLITE_CONFIG_MULTITHREAD)
    if rc != SQLITE_OK { fail("sqlite3_config(threading): \(rc)") }
    switch cache {
    case "builtin":
        return nil
    case "vrange":
        do {
            let source: SegmentSource = kernelDriven ? .anonymous(.init(kernelDriven: true)) : .anonymous()
            let allocator = try VolatileAllocator(options: .init(source: source))
            try PurgeablePageCache.install(allocator: allocator, purger: purger)
            return allocator
        } catch {
            fail("install: \(error)")
        }
    default:
        fail("--cache must be vrange or builtin")
    }
}

/// A thread that purges a random quarter of the allocator's purge units
/// every 0.2 to 2 ms until stopped.
final class RandomPurger: Sendable {
    let stopped = Atomic<Bool>(false)
    let purgedBytes = Atomic<Int>(0)
    let passes = Atomic<Int>(0)

    func start(_ allocator: VolatileAllocator, seed: UInt64) -> Worker {
        Worker {
            var rng = Random(state: seed ^ 0x5eed)
            while !self.stopped.load(ordering: .relaxed) {
                usleep(UInt32(200 + rng.below(1800)))
                var ids: [Int] = []
                allocator.forEachPurgeUnit { ids.append($0.id) }
                var bytes = 0
                for id in ids where rng.below(4) == 0 { bytes += allocator.purge(unit: id) }
                self.purgedBytes.add(bytes, ordering: .relaxed)
                self.passes.add(1, ordering: .relaxed)
            }
        }
    }
}

func workloadCommand(_ args: Arguments) -> Never {
    var o = WorkloadOptions()
    o.rows = args.int("rows", o.rows)
    o.seed = UInt64(args.int("seed", Int(o.seed)))
    o.cacheKiB = args.int("cache-kib", o.cacheKiB)
    o.threads = args.int("threads", o.threads)
    o.pageSize = args.int("page-size", o.pageSize)
    o.serialized = args.string("threading", "serialized") == "serialized"
    let cache = args.string("cache")
    let budget = args.int("budget", -1)
    var purger: Purger?
    if cache == "vrange" && budget >= 0 {
        let tick = Duration.milliseconds(args.int("tick-ms", 10))
        do { purger = try Purger(.init(budget: budget, pressureSources: .none, tick: tick)) } catch {
            fail("Purger: \(error)")
        }
    }
    let allocator = setUp(cache: cache, serialized: o.serialized, purger: purger)
    if args.flag("mutate") { PurgeablePageCache.servesPurgedPagesForTesting = true }
    let random = RandomPurger()
    let thread = allocator != nil && args.string("purge", "none") == "random"
        ? random.start(allocator!, seed: o.seed) : nil
    let start = monotonicSeconds()
    do {
        try runWorkload(dir: args.string("dir"), o) { say($0) }
    } catch {
        random.stopped.store(true, ordering: .relaxed)
        thread?.join()
        say("S \(PurgeablePageCache.statistics)")
        fail("\(error)", status: 2)
    }
    random.stopped.store(true, ordering: .relaxed)
    thread?.join()
    say("T \(monotonicSeconds() - start)")
    if allocator != nil {
        let purged = random.purgedBytes.load(ordering: .relaxed) + (purger?.statistics().purgedBytes ?? 0)
        let extra = PurgeablePageCache.lastExtraSize
        say("X szExtra \(extra), a cached 4 KiB page costs \(PurgeablePageCache.bytesPerCachedPage(pageSize: 4096, extraSize: extra)) bytes")
        say("S \(PurgeablePageCache.statistics); purged \(purged) bytes (random passes "
              + "\(random.passes.load(ordering: .relaxed)))")
    }
    exit(0)
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

let arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
switch arguments.command {
case "workload": workloadCommand(arguments)
case "makedb": makeDatabaseCommand(arguments)
case "pressure": pressureCommand(arguments)
case "bench": benchCommand(arguments)
case "memory": memoryCommand(arguments)
default: fail("usage: VRangeSQLiteProbe workload|pressure … (see main.swift)")
}
