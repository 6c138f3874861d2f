// Measurements (issue 19, deliverable 4), both sides in the same run: every
// configuration is a fresh process of this executable (a process can have
// one page cache), run round by round, interleaved, medians reported.
//
//   bench [--rounds R] [--rows N] [--dir DIR] [--mib M]
//       time of the workload (Workload.swift) with a cache_size that holds
//       the whole database (everything resident): built-in cache, VRange,
//       and VRange with a purger purging every unpinned page each 100 ms;
//       then the memory per cached page of each cache (`memory`).
//   memory --cache vrange|builtin --db PATH
//       reads every page of a makedb database with a cache_size that holds
//       it; prints "B <anonymous RSS grown per cached page> <pages>".
import CSQLite
import VRange
import VRangeSQLite
#if canImport(Glibc)
import Glibc
#endif

/// Runs this executable with `arguments`; its stdout lines, exit status and
/// CPU time (user + system, seconds).
func runSelf(_ arguments: [String]) -> (lines: [String], status: Int32, cpu: Double) {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { fail("pipe: \(errno)") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    let argv = ["/proc/self/exe"] + arguments
    var cArgs = argv.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, "/proc/self/exe", &actions, nil, &cArgs, environ)
    for p in cArgs { free(p) }
    posix_spawn_file_actions_destroy(&actions)
    close(fds[1])
    guard rc == 0 else { fail("posix_spawn: \(rc)") }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    close(fds[0])
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    return (String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init), status, cpu)
}

/// `x` with `digits` decimals (no Foundation here).
func fixed(_ x: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int((abs(x) * scale).rounded())
    let whole = n / Int(scale), frac = String(n % Int(scale))
    return (x < 0 ? "-" : "") + "\(whole)" + (digits > 0 ? "." + String(repeating: "0", count: digits - frac.count) + frac : "")
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func benchCommand(_ args: Arguments) -> Never {
    let rounds = args.int("rounds", 5), rows = args.int("rows", 40_000)
    let dir = args.string("dir", "/tmp")
    // 256 MiB: the whole database (about 9 MiB) stays cached.
    let common = ["--rows", "\(rows)", "--cache-kib", "262144", "--dir", dir]
    let configurations: [(name: String, arguments: [String])] = [
        ("built-in page cache", ["--cache", "builtin"]),
        ("VRange page cache", ["--cache", "vrange"]),
        ("VRange, purger purging every unpinned page each 100 ms", ["--cache", "vrange", "--budget", "0", "--tick-ms", "100"]),
    ]
    var times = [[Double]](repeating: [], count: configurations.count)
    var cpus = [[Double]](repeating: [], count: configurations.count)
    var results: [[String]] = []
    var stats = [String](repeating: "", count: configurations.count)
    for round in 0..<rounds {
        for (i, c) in configurations.enumerated() {
            let r = runSelf(["workload"] + common + c.arguments)
            guard r.status == 0, let t = r.lines.last(where: { $0.hasPrefix("T ") }).flatMap({ Double($0.dropFirst(2)) }) else {
                fail("\(c.name): exit \(r.status): \(r.lines.suffix(3))", status: 2)
            }
            let q = r.lines.filter { $0.hasPrefix("Q ") || $0.hasPrefix("I ") }
            if results.isEmpty { results.append(q) } else if q != results[0] { fail("\(c.name): results differ", status: 2) }
            times[i].append(t)
            cpus[i].append(r.cpu)
            stats[i] = r.lines.last { $0.hasPrefix("S ") } ?? ""
        }
        say("round \(round + 1): " + configurations.indices.map { fixed(times[$0].last!, 3) + " s" }.joined(separator: " / "))
    }
    let base = median(times[0]), baseCPU = median(cpus[0])
    for (i, c) in configurations.enumerated() {
        let m = median(times[i]), cpu = median(cpus[i])
        say("R \(c.name): median \(fixed(m, 3)) s (min \(fixed(times[i].min()!, 3)) s), \(fixed(m / base, 3))× the built-in cache's time; "
            + "CPU \(fixed(cpu, 3)) s, \(fixed(cpu / baseCPU, 3))×")
        if !stats[i].isEmpty { say("  \(stats[i])") }
    }

    // Memory per cached page.
    let db = dir + "/memory.db"
    let made = runSelf(["makedb", "--db", db, "--mib", "\(args.int("mib", 64))"])
    if made.status != 0 { fail("makedb: \(made.lines)", status: 2) }
    var perPage: [String: [Double]] = [:]
    for _ in 0..<3 {
        for cache in ["builtin", "vrange"] {
            let r = runSelf(["memory", "--cache", cache, "--db", db])
            guard r.status == 0, let b = r.lines.last(where: { $0.hasPrefix("B ") }) else { fail("memory \(cache): \(r.lines)", status: 2) }
            perPage[cache, default: []].append(Double(b.split(separator: " ")[1]) ?? 0)
        }
    }
    let builtin = median(perPage["builtin"]!), vrange = median(perPage["vrange"]!)
    say("R memory per cached 4 KiB page: VRange \(Int(vrange)) bytes, built-in \(Int(builtin)) bytes: \(fixed(vrange / builtin, 3))×")
    unlink(db)
    exit(0)
}

func memoryCommand(_ args: Arguments) -> Never {
    _ = setUp(cache: args.string("cache"), serialized: true, purger: nil)
    guard sqlite3_initialize() == SQLITE_OK else { fail("sqlite3_initialize") }
    do {
        let db = try Database(path: args.string("db"))
        try db.exec("PRAGMA cache_size = -1048576")
        let pages = Int(try db.text("PRAGMA page_count")) ?? 1
        try db.query("SELECT count(*) FROM sqlite_schema")
        let before = statusBytes("RssAnon")
        try db.query("SELECT sum(length(b)) FROM t")
        let after = statusBytes("RssAnon")
        say("B \((after - before) / max(1, pages)) \(pages)")
    } catch {
        fail("\(error)", status: 2)
    }
    exit(0)
}
