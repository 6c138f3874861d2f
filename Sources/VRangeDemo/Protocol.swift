// The line protocol from a child to the parent, over a pipe: one line per
// message, written whole with one write(2) (shorter than PIPE_BUF, so never
// interleaved), so that everything a child said before it was killed is
// kept.
//   N <text>                    a note for the person watching
//   S key=value ...             a sample (Sample's fields)
//   E key=value ... source=<…>  a pressure event and the purger's reaction
//   D key=value ...             the run ended normally (Final's fields)
#if canImport(Glibc)
import Glibc
#endif

/// One sample of a run, taken every --sample-ms.
struct Sample {
    var t = 0.0            // seconds since the run started
    var rss = 0            // VmRSS of the child
    var hwm = 0            // VmHWM of the child
    var cgroup = 0         // bytes charged to its cgroup (0 without one)
    var cache = 0          // bytes of values the cache holds in memory
    var volatile = 0       // VRange: volatile bytes the purger sees
    var purged = 0         // VRange: bytes purged so far
    var competitor = 0     // bytes the competing allocation holds
    var served = 0, hits = 0, frames = 0, renders = 0, rebuilds = 0, wrong = 0

    static let keys = ["t", "rss", "hwm", "cg", "cache", "vol", "purged", "comp",
                       "served", "hits", "frames", "renders", "rebuilds", "wrong"]

    var line: String {
        let v: [String] = [String(Int(t * 1000)), "\(rss)", "\(hwm)", "\(cgroup)", "\(cache)", "\(volatile)",
                           "\(purged)", "\(competitor)", "\(served)", "\(hits)", "\(frames)", "\(renders)",
                           "\(rebuilds)", "\(wrong)"]
        return "S " + zip(Self.keys, v).map { "\($0)=\($1)" }.joined(separator: " ")
    }

    init() {}

    init(_ f: [String: String]) {
        func i(_ k: String) -> Int { Int(f[k] ?? "") ?? 0 }
        t = Double(i("t")) / 1000
        rss = i("rss"); hwm = i("hwm"); cgroup = i("cg"); cache = i("cache"); volatile = i("vol")
        purged = i("purged"); competitor = i("comp"); served = i("served"); hits = i("hits")
        frames = i("frames"); renders = i("renders"); rebuilds = i("rebuilds"); wrong = i("wrong")
    }

    /// The memory to watch: the cgroup's charge where there is one, else RSS.
    var memory: Int { cgroup > 0 ? cgroup : rss }
}

/// A pressure event the purger handled.
struct Event {
    var t = 0.0
    var level = ""
    var reactionMicroseconds: Int?
    var purged = 0
    var source = ""

    var line: String {
        "E t=\(Int(t * 1000)) level=\(level) reaction_us=\(reactionMicroseconds.map(String.init) ?? "-") purged=\(purged) source=\(source)"
    }

    init(t: Double, level: String, reactionMicroseconds: Int?, purged: Int, source: String) {
        self.t = t; self.level = level; self.reactionMicroseconds = reactionMicroseconds
        self.purged = purged; self.source = source
    }

    init(_ f: [String: String]) {
        t = Double(Int(f["t"] ?? "") ?? 0) / 1000
        level = f["level"] ?? "?"
        reactionMicroseconds = Int(f["reaction_us"] ?? "")
        purged = Int(f["purged"] ?? "") ?? 0
        source = f["source"] ?? ""
    }
}

/// What a child says when it ends normally.
struct Final {
    var events = 0, debounced = 0
    var source = ""

    var line: String { "D events=\(events) debounced=\(debounced) source=\(source)" }

    init(events: Int, debounced: Int, source: String) {
        self.events = events; self.debounced = debounced; self.source = source
    }

    init(_ f: [String: String]) {
        events = Int(f["events"] ?? "") ?? 0
        debounced = Int(f["debounced"] ?? "") ?? 0
        source = f["source"] ?? ""
    }
}

/// The key=value fields of a message; a `source=` field takes the rest of
/// the line (it may contain spaces).
func fields(_ body: Substring) -> [String: String] {
    var f: [String: String] = [:]
    var rest = body[...]
    while !rest.isEmpty {
        rest = rest.drop { $0 == " " }
        if rest.hasPrefix("source=") {
            f["source"] = String(rest.dropFirst(7))
            break
        }
        let token = rest.prefix { $0 != " " }
        rest = rest.dropFirst(token.count)
        if let eq = token.firstIndex(of: "=") { f[String(token[..<eq])] = String(token[token.index(after: eq)...]) }
    }
    return f
}

/// Writes one line to stdout with a single write(2).
func emit(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
    bytes.removeAll()
}
