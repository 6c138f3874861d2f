// SQLite checks the page cache: the speedtest1-like workload (the probe's
// `workload`) on an on-disk database several times the cache's resident
// budget, with purges going on all the time, must print exactly what the
// same workload prints on SQLite's built-in page cache, and
// PRAGMA integrity_check must say ok. The same run with the purged check
// switched off (the test-only mutation) must be caught.
import Foundation
import Testing

@Suite("SQLite checks the page cache", .serialized) struct WorkloadTests {
    /// 40 000 rows in each of three tables and 20 000 in each thread's: an
    /// 8-9 MiB database, against a cache_size of 2000 KiB and a purger
    /// budget of 1 MiB of unpinned pages (or none at all).
    static let rows = "40000"

    /// The built-in page cache's run: what every run must print.
    static let reference: Result<ProbeRun, any Error> = Result { try workload("builtin", ["--cache", "builtin"]) }

    /// The probe's workload in a temporary directory of its own, removed after.
    static func workload(_ label: String, _ arguments: [String]) throws -> ProbeRun {
        let dir = try temporaryDirectory(label)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rowsGiven = arguments.contains("--rows")
        return try runProbe(["workload", "--dir", dir] + (rowsGiven ? [] : ["--rows", rows]) + arguments)
    }

    func referenceResults() throws -> [String] {
        let run = try Self.reference.get()
        try #require(run.succeeded, "the built-in cache's run failed: \(run.summary)")
        #expect(run.results.last == "I ok")
        try #require(run.results.count > 50)
        return run.results
    }

    /// The number after `label` in a statistics line.
    func figure(_ run: ProbeRun, _ label: String) -> Int {
        guard let s = run.statistics, let r = s.range(of: label + " ") else { return 0 }
        return Int(s[r.upperBound...].prefix { $0.isNumber }) ?? 0
    }

    @Test func randomPurgesAndABudgetInSerializedMode() throws {
        let expected = try referenceResults()
        let run = try Self.workload("random", ["--cache", "vrange", "--purge", "random", "--budget", "\(1 << 20)"])
        print("VRange, serialized, random purges + 1 MiB budget: \(run.summary)")
        #expect(run.succeeded, "\(run.summary)")
        #expect(run.results == expected)
        #expect(run.results.last == "I ok")
        // The purges really took pages SQLite wanted again.
        #expect(figure(run, "purged and re-read") > 100)
    }

    @Test func everyUnpinnedPagePurgedEvery10msInMultiThreadMode() throws {
        let expected = try referenceResults()
        let run = try Self.workload("budget0", ["--cache", "vrange", "--threading", "multithread", "--budget", "0"])
        print("VRange, multi-thread, budget 0 (every unpinned page purged each 10 ms): \(run.summary)")
        #expect(run.succeeded, "\(run.summary)")
        #expect(run.results == expected)
        #expect(figure(run, "purged and re-read") > 100)
    }

    /// SQLite's smallest and largest page sizes (slab buffers sharing an OS
    /// page; 16-page spans), a smaller workload, random purges.
    @Test(arguments: [512, 65536]) func otherPageSizes(pageSize: Int) throws {
        let common = ["--page-size", "\(pageSize)", "--rows", "8000"]
        let reference = try Self.workload("builtin-\(pageSize)", ["--cache", "builtin"] + common)
        try #require(reference.succeeded && reference.results.last == "I ok", "\(reference.summary)")
        let run = try Self.workload("random-\(pageSize)", ["--cache", "vrange", "--purge", "random"] + common)
        print("VRange, page size \(pageSize), random purges: \(run.summary)")
        #expect(run.succeeded, "\(run.summary)")
        #expect(run.results == reference.results)
        #expect(figure(run, "purged and re-read") > 10)
    }

    /// The mutation: purged pages served as intact (zeros where SQLite's
    /// extra says the page is loaded). The checks must catch it: an SQLite
    /// error (corruption detected), a different result, a failed
    /// integrity_check, or a crash.
    @Test func servingPurgedPagesIsCaught() throws {
        let expected = try referenceResults()
        let run = try Self.workload("mutant", ["--cache", "vrange", "--purge", "random", "--budget", "\(1 << 20)", "--mutate"])
        let caught: String
        if !run.succeeded {
            caught = "the run failed: \(run.summary)"
        } else if run.results.last != "I ok" {
            caught = "integrity_check: \(run.results.last ?? "none")"
        } else if run.results != expected {
            caught = "\(zip(run.results, expected).filter { $0 != $1 }.count) results differ"
        } else {
            caught = ""
        }
        print("mutation (purged check off) caught by: \(caught)")
        #expect(!caught.isEmpty, "serving purged pages as intact went unnoticed: \(run.summary)")
    }
}
