// install(allocator:purger:) in fresh processes (exit tests): the page cache
// is process-global, and SQLite can be initialised only once.
import CSQLite
import Testing
import VRange
import VRangeSQLite
#if canImport(Glibc)
import Glibc
#endif

@Suite("Installing the page cache") struct InstallTests {
    @Test func installingTwiceIsATypedError() async {
        _ = await #expect(processExitsWith: .success) {
            let allocator = try! VolatileAllocator()
            try! PurgeablePageCache.install(allocator: allocator)
            do throws(PurgeablePageCache.InstallError) {
                try PurgeablePageCache.install(allocator: allocator)
                exit(1)
            } catch {
                exit(error == .alreadyInstalled && PurgeablePageCache.isInstalled ? 0 : 2)
            }
        }
    }

    @Test func installingAfterSQLiteInitialisedIsATypedError() async {
        _ = await #expect(processExitsWith: .success) {
            guard sqlite3_initialize() == SQLITE_OK else { exit(3) }
            do throws(PurgeablePageCache.InstallError) {
                try PurgeablePageCache.install(allocator: try! VolatileAllocator())
                exit(1)
            } catch {
                exit(error == .sqliteAlreadyInitialized && !PurgeablePageCache.isInstalled ? 0 : 2)
            }
        }
    }

    /// An in-memory database's cache (bPurgeable false) is never purged: a
    /// purge of everything leaves its rows intact.
    @Test func inMemoryDatabasesSurvivePurgeAll() async {
        _ = await #expect(processExitsWith: .success) {
            let allocator = try! VolatileAllocator()
            let purger = try! Purger(.init(pressureSources: .none))
            try! PurgeablePageCache.install(allocator: allocator, purger: purger)
            var db: OpaquePointer?
            guard sqlite3_open(":memory:", &db) == SQLITE_OK else { exit(3) }
            let sql = """
                CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                INSERT INTO t SELECT i, printf('row %d %.*c', i, i % 50, 'x') FROM n;
                """
            guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { exit(4) }
            purger.purgeAll()
            var stmt: OpaquePointer?
            sqlite3_prepare_v2(db, "SELECT count(*), sum(length(b)) FROM t", -1, &stmt, nil)
            guard sqlite3_step(stmt) == SQLITE_ROW else { exit(5) }
            let count = sqlite3_column_int64(stmt, 0), bytes = sqlite3_column_int64(stmt, 1)
            sqlite3_finalize(stmt)
            let intact = count == 20000 && PurgeablePageCache.statistics.purgedRefetches == 0
            exit(intact && bytes > 0 ? 0 : 6)
        }
    }
}
