// The speedtest1-like workload: bulk inserts in transactions, unindexed and
// indexed selects, updates, deletes, joins, VACUUM, then several threads
// each with its own connection (and, in serialized mode, two threads sharing
// one), then PRAGMA integrity_check. Deterministic: every line it prints
// ("Q name rows digest") depends only on --rows and --seed, never on timing
// or on the page cache, so a run on VRange's page cache must print exactly
// what a run on SQLite's built-in one prints.
import CSQLite
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64.
struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// speedtest1's idea: a number spelled out, so that rows have text of
/// varied length that sorts and compares unlike the numbers.
func words(_ n: Int) -> String {
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    var out = "", v = n
    repeat {
        out = names[v % 10] + (out.isEmpty ? "" : " ") + out
        v /= 10
    } while v > 0
    return out
}

struct WorkloadOptions {
    var rows = 20_000
    var seed: UInt64 = 1
    var cacheKiB = 2000
    var threads = 3
    var serialized = true
    /// PRAGMA page_size of the database (SQLite's default: 4096).
    var pageSize = 4096
}

/// Runs the workload in directory `dir`; its lines, in order.
func runWorkload(dir: String, _ o: WorkloadOptions, emit: (String) -> Void) throws {
    let path = dir + "/speed.db"
    unlink(path); unlink(path + "-wal"); unlink(path + "-shm")
    var rng = Random(state: o.seed)
    let n = o.rows
    let db = try Database(path: path, serialized: o.serialized)
    try db.exec("PRAGMA page_size = \(o.pageSize); PRAGMA cache_size = -\(o.cacheKiB); PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF")
    func q(_ name: String, _ sql: String, _ args: [SQLValue] = []) throws {
        let r = try db.query(sql, args)
        emit("Q \(name) \(r.rows) \(String(r.digest, radix: 16))")
    }

    // 1. Bulk inserts, in transactions of 2000 rows.
    try db.exec("""
        CREATE TABLE t1(a INTEGER, b INTEGER, c TEXT);
        CREATE TABLE t2(a INTEGER, b INTEGER, c TEXT);
        CREATE INDEX t2b ON t2(b);
        CREATE TABLE t3(a INTEGER PRIMARY KEY, b INTEGER, c TEXT);
        CREATE INDEX t3c ON t3(c);
        """)
    for table in ["t1", "t2", "t3"] {
        for start in stride(from: 0, to: n, by: 2000) {
            try db.exec("BEGIN")
            for a in start..<min(n, start + 2000) {
                let b = rng.below(4 * n)
                try db.query("INSERT INTO \(table) VALUES(?, ?, ?)", [.int(Int64(a + 1)), .int(Int64(b)), .text(words(b))])
            }
            try db.exec("COMMIT")
        }
    }
    try q("count", "SELECT count(*), sum(b), sum(length(c)) FROM t1")

    // 2. Selects: unindexed scans, indexed ranges, point lookups, LIKE, ORDER BY.
    for i in 0..<15 {
        let lo = rng.below(4 * n)
        try q("scan\(i)", "SELECT count(*), avg(b), sum(length(c)) FROM t1 WHERE b >= ? AND b < ?",
              [.int(Int64(lo)), .int(Int64(lo + n / 2))])
    }
    var indexed = Digest()
    for _ in 0..<400 {
        let lo = rng.below(4 * n)
        let r = try db.query("SELECT count(*), sum(a), max(c) FROM t2 WHERE b BETWEEN ? AND ?",
                             [.int(Int64(lo)), .int(Int64(lo + 100))])
        indexed.add(r.digest)
    }
    emit("Q indexed \(String(indexed.value, radix: 16))")
    var points = Digest()
    for _ in 0..<3000 {
        points.add(try db.query("SELECT b, c FROM t3 WHERE a = ?", [.int(Int64(rng.below(n) + 1))]).digest)
    }
    emit("Q points \(String(points.value, radix: 16))")
    for i in 0..<5 { try q("like\(i)", "SELECT count(*), min(a) FROM t2 WHERE c LIKE ?", [.text("%\(words(i)) \(words(i + 3))%")]) }
    for i in 0..<5 { try q("order\(i)", "SELECT a, b, c FROM t3 ORDER BY c LIMIT 20 OFFSET ?", [.int(Int64(rng.below(n)))]) }

    // 3. Updates.
    try db.exec("BEGIN")
    for _ in 0..<300 {
        let lo = rng.below(n)
        try db.query("UPDATE t2 SET b = b + 7, c = ? WHERE a BETWEEN ? AND ?",
                     [.text(words(lo * 3)), .int(Int64(lo)), .int(Int64(lo + 20))])
    }
    try db.exec("COMMIT")
    try db.exec("UPDATE t3 SET c = c || ' and more' WHERE a % 13 = 5")
    try q("updated2", "SELECT count(*), sum(b), sum(length(c)) FROM t2")
    try q("updated3", "SELECT count(*), sum(b), sum(length(c)) FROM t3")

    // 4. Deletes.
    try db.exec("DELETE FROM t1 WHERE b % 7 = 3")
    try db.exec("BEGIN")
    for _ in 0..<100 {
        let lo = rng.below(n)
        try db.query("DELETE FROM t3 WHERE a BETWEEN ? AND ?", [.int(Int64(lo)), .int(Int64(lo + 10))])
    }
    try db.exec("COMMIT")
    try q("deleted", "SELECT (SELECT count(*) FROM t1), (SELECT count(*) FROM t3), (SELECT sum(b) FROM t3)")

    // 5. Joins.
    for i in 0..<10 {
        let lo = rng.below(4 * n)
        try q("join\(i)", "SELECT count(*), sum(t1.b), max(t3.c) FROM t1 JOIN t3 ON t1.a = t3.a WHERE t3.b BETWEEN ? AND ?",
              [.int(Int64(lo)), .int(Int64(lo + n))])
    }
    try q("join-order", "SELECT t2.a, t3.c FROM t2 JOIN t3 ON t2.a = t3.a WHERE t2.b < ? ORDER BY t2.a LIMIT 200",
          [.int(Int64(n))])

    // 6. VACUUM, then every table whole; then incremental auto-vacuum, which
    // moves pages (xRekey), and a shrink (xShrink).
    try db.exec("VACUUM")
    for t in ["t1", "t2", "t3"] { try q("all-\(t)", "SELECT * FROM \(t) ORDER BY a, b") }
    try db.exec("PRAGMA auto_vacuum = INCREMENTAL; VACUUM")
    try db.exec("DELETE FROM t2 WHERE a % 3 = 0")
    try db.exec("PRAGMA incremental_vacuum(400)")
    try db.exec("PRAGMA shrink_memory")
    try q("after-incremental-vacuum", "SELECT count(*), sum(b), sum(length(c)) FROM t2")
    try q("pages", "PRAGMA freelist_count")

    // 7. Threads: each writes and reads a table of its own through its own
    // connection and reads the shared tables; two more share one connection
    // (serialized mode; in multi-thread mode, where a connection must not be
    // shared, each has its own).
    var results = [[String]](repeating: [], count: o.threads + 2)
    let box = ResultBox(count: o.threads + 2)
    var workers: [Worker] = []
    for k in 0..<o.threads {
        workers.append(Worker {
            do {
                let c = try Database(path: path, serialized: o.serialized)
                try c.exec("PRAGMA cache_size = -\(o.cacheKiB)")
                var r = Random(state: o.seed &+ UInt64(k) &* 1000)
                try c.exec("CREATE TABLE IF NOT EXISTS w\(k)(a INTEGER PRIMARY KEY, b INTEGER, c TEXT); CREATE INDEX IF NOT EXISTS w\(k)b ON w\(k)(b)")
                for start in stride(from: 0, to: n / 2, by: 1000) {
                    try c.exec("BEGIN IMMEDIATE")
                    for a in start..<min(n / 2, start + 1000) {
                        let b = r.below(4 * n)
                        try c.query("INSERT INTO w\(k) VALUES(?, ?, ?)", [.int(Int64(a + 1)), .int(Int64(b)), .text(words(b))])
                    }
                    try c.exec("COMMIT")
                }
                var own = Digest(), shared = Digest()
                for _ in 0..<300 {
                    let lo = r.below(4 * n)
                    own.add(try c.query("SELECT count(*), sum(a) FROM w\(k) WHERE b BETWEEN ? AND ?",
                                        [.int(Int64(lo)), .int(Int64(lo + 200))]).digest)
                    shared.add(try c.query("SELECT b, c FROM t3 WHERE a = ?", [.int(Int64(r.below(n) + 1))]).digest)
                }
                let whole = try c.query("SELECT * FROM w\(k) ORDER BY a")
                box.set(k, ["Q thread\(k)-own \(String(own.value, radix: 16))",
                            "Q thread\(k)-shared \(String(shared.value, radix: 16))",
                            "Q thread\(k)-all \(whole.rows) \(String(whole.digest, radix: 16))"])
            } catch {
                box.set(k, ["E thread \(k): \(error)"])
            }
        })
    }
    let sharedConnection = o.serialized ? try Database(path: path, serialized: o.serialized) : nil
    for k in 0..<2 {
        workers.append(Worker {
            do {
                let c = try sharedConnection ?? Database(path: path, serialized: o.serialized)
                var r = Random(state: o.seed &+ 77 &+ UInt64(k))
                var d = Digest()
                for _ in 0..<300 {
                    let lo = r.below(4 * n)
                    // One statement per thread (a statement is not shared).
                    d.add(try c.query(k == 0 ? "SELECT count(*), max(c) FROM t2 WHERE b BETWEEN ? AND ?"
                                             : "SELECT count(*), min(c) FROM t2 WHERE b BETWEEN ? AND ?",
                                      [.int(Int64(lo)), .int(Int64(lo + 300))]).digest)
                }
                box.set(o.threads + k, ["Q shared-connection\(k) \(String(d.value, radix: 16))"])
            } catch {
                box.set(o.threads + k, ["E shared connection \(k): \(error)"])
            }
        })
    }
    for w in workers { w.join() }
    results = box.take()
    for lines in results { for line in lines { emit(line) } }
    if results.joined().contains(where: { $0.hasPrefix("E ") }) { throw SQLError(code: -1, message: "a thread failed") }

    // 8. SQLite's own check, through a fresh connection.
    let check = try Database(path: path, serialized: o.serialized)
    emit("I \(try check.text("PRAGMA integrity_check"))")
}

/// Results of the threads, by index.
final class ResultBox: Sendable {
    private let lines: Mutex<[[String]]>
    init(count: Int) { lines = Mutex(.init(repeating: [], count: count)) }
    func set(_ i: Int, _ l: [String]) { lines.withLock { $0[i] = l } }
    func take() -> [[String]] { lines.withLock { $0 } }
}

/// A started pthread; `join()` waits for it.
struct Worker {
    private let handle: pthread_t
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    init(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create: \(rc)")
        handle = t
    }

    func join() { pthread_join(handle, nil) }
}
