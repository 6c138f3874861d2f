// The demo, run short (the debug VRangeDemo built beside this test binary,
// small tiles, a small limit) with a --json report, which is checked: the
// VRange run survived, the plain run was killed or went over its limit,
// purges happened, no value served was wrong. As root with a cgroup memory
// controller both runs are in memory-limited cgroups; elsewhere the demo
// says why and uses a byte budget, and the test prints which source it used
// and checks what still holds.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Demo", .serialized) struct DemoTests {
    /// VRangeDemo beside the test binary (or in a directory above it, when
    /// the tests are a bundle directory).
    static var executable: String {
        var dir = siblingOfTestBinary("")
        while dir.hasSuffix("/") { dir.removeLast() }
        while !dir.isEmpty && access(dir + "/VRangeDemo", X_OK) != 0 {
            while let last = dir.last, last != "/" { dir.removeLast() }
            if dir.hasSuffix("/") { dir.removeLast() }
        }
        return dir + "/VRangeDemo"
    }

    @Test func shortRunReport() throws {
        let path = Self.executable
        try #require(access(path, X_OK) == 0, "VRangeDemo is not built beside the tests (\(path))")
        let report = "/tmp/vrange-demo-test-\(getpid()).json", chart = "/tmp/vrange-demo-test-\(getpid()).svg"
        defer { unlink(report); unlink(chart) }
        // Debug build: 64 KiB tiles of one octave render fast enough to
        // fill the caches in seconds. The competitor grows once and stays
        // (steady): the plain run goes over 96 MiB as soon as its cache
        // passes about 47 MiB, whenever that is. --until-filled: each run
        // goes on past its 8 s until its cache was handed 64 MiB of tiles
        // and the competitor is at its peak (at most 32 s), so the outcome
        // does not depend on how fast tiles render (under a loaded machine a
        // fixed 16 s run once ended with the plain run at 90 of 96 MiB).
        let arguments = ["--duration", "8", "--until-filled", "--limit", "96", "--cache", "64", "--competitor", "48",
                         "--scenario", "steady",
                         "--working-set", "160", "--tile", "128", "--octaves", "1", "--threads", "2",
                         "--json", report, "--chart", chart]
        let (status, output) = try runProcess(path, arguments, timeoutSeconds: 120)
        for line in output.split(separator: "\n") { print("  demo: \(line)") }
        #expect(status == 0, "VRangeDemo exited with status \(status)")

        let json = try #require(readText(report), "no report at \(report)")
        let mode = try #require(jsonString(json, "mode"))
        let plain = try #require(json.split(separator: "\n").first { $0.contains("\"kind\": \"plain\"") }.map(String.init))
        let vrange = try #require(json.split(separator: "\n").first { $0.contains("\"kind\": \"vrange\"") }.map(String.init))
        print("mode: \(mode); VRange's pressure source: \(jsonString(vrange, "source") ?? "?")")
        if mode == "no cgroup" {
            print("NO CGROUP here: \(jsonString(json, "noCgroupReason") ?? "?"); the VRange run kept a byte budget, the plain run is judged by its peak RSS")
            #expect(TestCgroup.unavailable(.v1) != nil && TestCgroup.unavailable(.v2) != nil,
                    "the demo found no cgroup, but this process could make one")
            #expect(jsonString(vrange, "source")?.contains("byte budget") == true, "the VRange run had no byte budget")
            #expect(jsonBool(vrange, "overLimit") == false, "the VRange run went over its limit")
        } else {
            #expect(mode.hasPrefix("cgroup v"), "unexpected mode \(mode)")
            #expect(jsonString(vrange, "source")?.contains("cgroup") == true, "VRange's purger did not watch its cgroup")
            #expect(jsonNumber(plain, "oomKills") ?? 0 > 0 || jsonBool(plain, "overLimit") == true)
        }
        #expect(jsonBool(vrange, "survived") == true, "the VRange run did not survive")
        #expect(jsonBool(plain, "killed") == true || jsonBool(plain, "overLimit") == true,
                "the plain run was neither killed nor over its limit")
        #expect(jsonNumber(vrange, "purgedBytes") ?? 0 > 0, "nothing was purged")
        #expect(jsonNumber(plain, "wrongValues") == 0, "the plain cache served wrong values")
        #expect(jsonNumber(vrange, "wrongValues") == 0, "VRange served wrong values")
        #expect(jsonNumber(vrange, "served") ?? 0 > 0 && jsonNumber(plain, "served") ?? 0 > 0, "nothing was served")
        #expect(readText(chart)?.hasPrefix("<svg") == true, "no chart at \(chart)")
    }
}

/// Runs `path` with `arguments`, stdout and stderr captured; kills it after
/// `timeoutSeconds`. Returns its wait status and its output.
private func runProcess(_ path: String, _ arguments: [String], timeoutSeconds: Double) throws -> (Int32, String) {
    let out = "/tmp/vrange-demo-test-\(getpid()).out"
    defer { unlink(out) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    try #require(rc == 0, "posix_spawn \(path): \(rc)")
    var status: Int32 = 0
    let finished = waitUntil(seconds: timeoutSeconds) { waitpid(pid, &status, WNOHANG) == pid }
    if !finished {
        kill(pid, SIGTERM)  // the demo cleans up its children and cgroups
        _ = waitUntil(seconds: 10) { waitpid(pid, &status, WNOHANG) == pid }
        Issue.record("VRangeDemo did not finish in \(timeoutSeconds) s")
    }
    return (status, readText(out) ?? "")
}

/// A `"key": "text"` value of a one-line JSON object.
private func jsonString(_ json: String, _ key: String) -> String? {
    guard let r = json.firstRange(of: "\"\(key)\": \"") else { return nil }
    return String(json[r.upperBound...].prefix { $0 != "\"" })
}

private func jsonNumber(_ json: String, _ key: String) -> Double? {
    guard let r = json.firstRange(of: "\"\(key)\": ") else { return nil }
    return Double(json[r.upperBound...].prefix { $0 != "," && $0 != "}" })
}

private func jsonBool(_ json: String, _ key: String) -> Bool? {
    guard let r = json.firstRange(of: "\"\(key)\": ") else { return nil }
    let v = json[r.upperBound...].prefix { $0 != "," && $0 != "}" }
    return v == "true" ? true : v == "false" ? false : nil
}
