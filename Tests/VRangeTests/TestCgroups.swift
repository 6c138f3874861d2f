// Child cgroups for the purger's tests, v1 and v2 (MemoryCgroup, shared
// with the demo): created under the test process's own cgroup (v1 memory)
// or where the memory controller can be delegated (v2), named
// vrange-test-<pid>-<label> so that leftovers of a crashed run (whose pid is
// gone) are found and removed, and removed again after each test, also when
// it fails; and why a test cannot make one here.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The tests' cgroups: the library's (package-only) MemoryCgroup, which the
/// demo uses too, with the tests' prefix.
typealias TestCgroup = MemoryCgroup

extension MemoryCgroup {
    static let testPrefix = "vrange-test-"

    /// Makes a memory-limited cgroup (`limit` bytes, no swap).
    static func make(_ version: Version, label: String, limit: Int) throws -> TestCgroup {
        try make(version, prefix: testPrefix, label: label, limit: limit)
    }

    /// Makes an empty cgroup under `parent` (no limit).
    static func plain(under parent: String, version: Version, label: String) throws -> TestCgroup {
        try plain(under: parent, version: version, prefix: testPrefix, label: label)
    }

    /// Removes cgroups left by earlier runs whose process is gone.
    static func removeStale() {
        for dir in removeStale(prefix: testPrefix) { print("removed a stale test cgroup: \(dir)") }
    }
}

/// Prints why a test cannot run here and checks, from data other than what
/// decided it, that the reason really holds (so that a broken check cannot
/// turn into a silent pass). Returns true when the test must stop.
func cannotRun(_ what: String, _ version: TestCgroup.Version) -> Bool {
    guard let reason = TestCgroup.unavailable(version) else { return false }
    print("NOT RUN: \(what): \(reason)")
    let status = readText("/proc/self/status") ?? ""
    let effectiveUID = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }
        .map { $0.split(whereSeparator: { $0 == "\t" || $0 == " " }) }.flatMap { $0.count > 2 ? Int($0[2]) : nil }
    if reason.hasPrefix("not root") {
        #expect(effectiveUID != 0, "reason 'not root' but /proc/self/status says uid 0")
    } else if version == .v2 {
        let controllers = TestCgroup.own.unifiedMount.flatMap { readText($0 + "/cgroup.controllers") } ?? ""
        #expect(!controllers.contains("memory") || effectiveUID != 0, "cgroup v2 has a memory controller: \(controllers)")
    } else {
        #expect(!(readText("/proc/self/cgroup") ?? "").contains(":memory:") || effectiveUID != 0,
                "a v1 memory cgroup exists and we are root")
    }
    return true
}
