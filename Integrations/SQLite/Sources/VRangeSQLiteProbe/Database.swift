// A small SQLite connection wrapper for the probe: statements prepared once
// and kept, every result reduced to a row count and a digest (FNV-1a over
// each value's type and bytes), any error thrown with SQLite's message.
import CSQLite
#if canImport(Glibc)
import Glibc
#endif

struct SQLError: Error, CustomStringConvertible {
    let code: Int32
    let message: String
    var description: String { "SQLite error \(code): \(message)" }
}

enum SQLValue {
    case int(Int64)
    case text(String)
}

/// FNV-1a, 64 bits.
struct Digest {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
    }
    mutating func add(_ v: UInt64) { withUnsafeBytes(of: v) { add($0) } }
}

final class Database {
    let handle: OpaquePointer
    /// Prepared statements by SQL. Under `mutex`: in serialized mode two
    /// threads share a connection (each with statements of its own), and
    /// this table is Swift's, not SQLite's.
    private var statements: [String: OpaquePointer] = [:]
    private let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// Opens `path`; `serialized` false opens the connection without its
    /// mutex (SQLITE_OPEN_NOMUTEX: SQLite's multi-thread mode, one thread at
    /// a time per connection).
    init(path: String, serialized: Bool = true) throws {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | (serialized ? SQLITE_OPEN_FULLMUTEX : SQLITE_OPEN_NOMUTEX)
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw SQLError(code: rc, message: "open \(path): \(message)")
        }
        handle = db
        sqlite3_busy_timeout(db, 60_000)
    }

    deinit {
        for (_, s) in statements { sqlite3_finalize(s) }
        sqlite3_close_v2(handle)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func error(_ rc: Int32, _ what: String) -> SQLError {
        SQLError(code: rc, message: "\(what): \(String(cString: sqlite3_errmsg(handle)))")
    }

    /// Runs statements that return nothing of interest.
    func exec(_ sql: String) throws {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        if rc != SQLITE_OK { throw error(rc, sql) }
    }

    private func statement(_ sql: String) throws -> OpaquePointer {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if let s = statements[sql] { return s }
        var s: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &s, nil)
        guard rc == SQLITE_OK, let s else { throw error(rc, "prepare \(sql)") }
        statements[sql] = s
        return s
    }

    /// Runs `sql` with `args`; the rows it returned and their digest.
    @discardableResult
    func query(_ sql: String, _ args: [SQLValue] = []) throws -> (rows: Int, digest: UInt64) {
        let s = try statement(sql)
        defer { sqlite3_reset(s) }
        for (i, a) in args.enumerated() {
            let rc: Int32
            switch a {
            case .int(let v): rc = sqlite3_bind_int64(s, Int32(i + 1), v)
            case .text(let t): rc = vrsqlite_bind_text(s, Int32(i + 1), t, -1)
            }
            if rc != SQLITE_OK { throw error(rc, "bind \(sql)") }
        }
        var digest = Digest(), rows = 0
        while true {
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            rows += 1
            for c in 0..<sqlite3_column_count(s) {
                let type = sqlite3_column_type(s, c)
                digest.add(UInt64(type))
                switch type {
                case SQLITE_INTEGER: digest.add(UInt64(bitPattern: sqlite3_column_int64(s, c)))
                case SQLITE_FLOAT: digest.add(sqlite3_column_double(s, c).bitPattern)
                case SQLITE_NULL: break
                default:
                    let n = Int(sqlite3_column_bytes(s, c))
                    if let p = sqlite3_column_blob(s, c) { digest.add(UnsafeRawBufferPointer(start: p, count: n)) }
                }
            }
        }
        return (rows, digest.value)
    }

    /// The first column of the first row as text (PRAGMA answers).
    func text(_ sql: String) throws -> String {
        let s = try statement(sql)
        defer { sqlite3_reset(s) }
        var lines: [String] = []
        while true {
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            lines.append(sqlite3_column_text(s, 0).map { String(cString: $0) } ?? "NULL")
        }
        return lines.joined(separator: "; ")
    }
}
