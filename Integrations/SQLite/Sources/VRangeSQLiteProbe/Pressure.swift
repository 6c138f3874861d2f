// Real memory pressure (issue 19, deliverable 3): a database larger than the
// memory limit, read with a cache_size larger than the limit.
//
//   makedb --db PATH --mib N
//       writes a database of about N MiB (one table t(a INTEGER PRIMARY KEY,
//       b BLOB) of 1000-byte rows), on SQLite's built-in page cache.
//   pressure --cache vrange|builtin --db PATH --cache-kib K [--cgroup DIR]
//            [--passes P] [--budget BYTES]
//       joins cgroup DIR (its cgroup.procs) when given, opens PATH with
//       PRAGMA cache_size = -K, reads every row P times (full scans and
//       point lookups), then runs PRAGMA integrity_check. Prints a sample
//       "M seconds anonymous-rss peak-rss" every 50 ms (so that a run the kernel kills
//       keeps its figures), "I <integrity_check>", and at the end
//       "F anon=<peak anonymous RSS sampled> hwm=<peak RSS> purged=<bytes> events=<pressure events>" and, for
//       vrange, "S <statistics>". --budget: a byte budget for the purger
//       (the fallback without a memory cgroup).
import CSQLite
import Synchronization
import VRange
import VRangeSQLite
#if canImport(Glibc)
import Glibc
#endif

/// A "Key:   N kB" figure of /proc/self/status, in bytes.
func statusBytes(_ key: String) -> Int {
    let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 8192)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return 0 }
    let text = String(decoding: buffer[0..<n], as: UTF8.self)
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return 0 }
    let number = line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) }
    return (number ?? 0) * 1024
}

func makeDatabaseCommand(_ args: Arguments) -> Never {
    let path = args.string("db")
    let rows = args.int("mib", 64) * 1024 * 1024 / 1100
    unlink(path)
    do {
        let db = try Database(path: path)
        try db.exec("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)")
        try db.exec("""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(rows))
            INSERT INTO t SELECT i, randomblob(1000) FROM n
            """)
    } catch {
        fail("\(error)", status: 2)
    }
    say("D \(rows) rows")
    exit(0)
}

func pressureCommand(_ args: Arguments) -> Never {
    if let dir = Optional(args.string("cgroup", "")), !dir.isEmpty {
        let fd = open(dir + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
        let text = "\(getpid())"
        guard fd >= 0, write(fd, text, text.utf8.count) == text.utf8.count else {
            fail("cannot join the cgroup \(dir): errno \(errno)", status: 3)
        }
        close(fd)
    }
    let cache = args.string("cache")
    var purger: Purger?
    if cache == "vrange" {
        // The reads fill the cache at hundreds of MiB a second: the
        // cgroup's headroom read every 20 ms (default 1 s), moderate events
        // acted on every 100 ms (default 5 s).
        var config = Purger.Configuration(moderateInterval: .milliseconds(100), tick: .milliseconds(10),
                                          cgroupHeadroomInterval: .milliseconds(20))
        let budget = args.int("budget", -1)
        if budget >= 0 { config.budget = budget }
        do { purger = try Purger(config) } catch { fail("Purger: \(error)") }
        say("N purger: \(purger!.activeSource.map { "watching \($0)" } ?? "no pressure source")"
            + (budget >= 0 ? ", byte budget \(budget)" : ""))
    }
    _ = setUp(cache: cache, serialized: true, purger: purger, kernelDriven: args.flag("kernel-driven"))

    let start = monotonicSeconds()
    let stop = Atomic<Bool>(false)
    let peakAnon = Mutex<Int>(0)
    let sampler = Worker {
        while !stop.load(ordering: .relaxed) {
            let anon = statusBytes("RssAnon")
            peakAnon.withLock { $0 = max($0, anon) }
            say("M \(monotonicSeconds() - start) \(anon) \(statusBytes("VmHWM"))")
            usleep(50_000)
        }
    }
    let passes = args.int("passes", 2)
    do {
        let db = try Database(path: args.string("db"))
        try db.exec("PRAGMA cache_size = -\(args.int("cache-kib", 1 << 20))")
        let rows = Int(try db.text("SELECT max(a) FROM t")) ?? 0
        var rng = Random(state: 42)
        for pass in 0..<passes {
            let scan = try db.query("SELECT count(*), sum(length(b)) FROM t")
            for _ in 0..<2000 { try db.query("SELECT length(b) FROM t WHERE a = ?", [.int(Int64(rng.below(max(1, rows)) + 1))]) }
            say("P \(pass) \(scan.rows) \(String(scan.digest, radix: 16)) \(monotonicSeconds() - start)")
        }
        say("I \(try db.text("PRAGMA integrity_check"))")
    } catch {
        stop.store(true, ordering: .relaxed)
        sampler.join()
        fail("\(error)", status: 2)
    }
    stop.store(true, ordering: .relaxed)
    sampler.join()
    let st = purger?.statistics()
    say("F anon=\(peakAnon.withLock { $0 }) hwm=\(statusBytes("VmHWM")) purged=\(st?.purgedBytes ?? 0) events=\(st?.pressureEvents ?? 0) "
        + "seconds=\(monotonicSeconds() - start)")
    if cache == "vrange" { say("S \(PurgeablePageCache.statistics)") }
    withExtendedLifetime(purger) {}
    exit(0)
}
