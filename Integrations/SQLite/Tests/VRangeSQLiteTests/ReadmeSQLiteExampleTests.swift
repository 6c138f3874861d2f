// The SQLite example of README.md, compiled and run (in a fresh process: the
// page cache must be installed before SQLite initialises). Keep the two in
// step: the block between the markers is the README's SQLite block.
import Foundation
import Testing
import VRange
import VRangeSQLite

@Suite("README SQLite example") struct ReadmeSQLiteExampleTests {
    @Test func sqliteExample() async {
        _ = await #expect(processExitsWith: .success) {
            do {
                try readmeExample()
            } catch {
                print("the README's SQLite example threw: \(error)")
                exit(1)
            }
            // The example's database went through the purgeable cache.
            let stats = PurgeablePageCache.statistics
            unlink("/tmp/vrange-example.db")
            exit(PurgeablePageCache.isInstalled && stats.pagesCreated > 0 && stats.unpins > 0 ? 0 : 2)
        }
    }

    /// The example above and the README's SQLite block are the same code.
    @Test func readmeShowsThisExample() throws {
        func lines(_ text: String) -> [String] {
            text.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.trimmingPrefix(while: { $0 == " " }) }.map(String.init)
                .filter { !$0.isEmpty }
        }
        let testFile = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(contentsOfFile: packageDirectory() + "/../../README.md", encoding: .utf8)
        let begin = "// README-SQLITE-EXAMPLE" + "-BEGIN", end = "// README-SQLITE-EXAMPLE" + "-END"
        let example = try #require(testFile.firstRange(of: begin).flatMap { b in
            testFile.firstRange(of: end).map { testFile[b.upperBound..<$0.lowerBound] }
        })
        let opening = "```swift\nimport VRange\nimport VRangeSQLite"
        let header = "```swift\nimport VRange\nimport VRangeSQLite   // also SQLite's C API (sqlite3_open, sqlite3_exec, ...)\n"
        let block = try #require(readme.firstRange(of: opening).flatMap { b in
            readme[b.lowerBound...].dropFirst(header.count).firstRange(of: "```").map {
                readme[readme.index(b.lowerBound, offsetBy: header.count)..<$0.lowerBound]
            }
        }, "README.md has no block starting with \(opening)")
        #expect(lines(String(example)) == lines(String(block)))
    }
}

/// The README's block, as a function of its own.
private func readmeExample() throws {
    // README-SQLITE-EXAMPLE-BEGIN
    // Once, before SQLite initialises (before the first sqlite3_open):
    let purger = try Purger()                              // watches memory pressure
    try PurgeablePageCache.install(allocator: try VolatileAllocator(), purger: purger)

    var db: OpaquePointer?
    guard sqlite3_open("/tmp/vrange-example.db", &db) == SQLITE_OK else { fatalError("cannot open") }
    sqlite3_exec(db, "PRAGMA cache_size = -262144", nil, nil, nil)   // up to 256 MiB, purgeable
    sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS kv(k INTEGER PRIMARY KEY, v TEXT)", nil, nil, nil)
    sqlite3_exec(db, "INSERT OR REPLACE INTO kv VALUES(1, 'one')", nil, nil, nil)
    sqlite3_close(db)

    print(PurgeablePageCache.statistics)   // hits, pages re-read after a purge, hit rate
    // README-SQLITE-EXAMPLE-END
}
