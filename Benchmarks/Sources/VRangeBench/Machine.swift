// What the run was on: printed above the table, so that a figure is never
// read without its machine.
#if canImport(Glibc)
import Glibc
#endif

/// The whole of a small text file (procfs, sysfs), or nil.
func readTextFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var out = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n <= 0 { break }
        out.append(contentsOf: buffer[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

struct Machine {
    let cpu: String
    let cores: Int
    let kernel: String
    let memory: String
    let thp: String

    static func current() -> Machine {
        let cpuinfo = readTextFile("/proc/cpuinfo") ?? ""
        let model = cpuinfo.split(separator: "\n")
            .first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingSpaces() } ?? "unknown CPU"
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let memKiB = (readTextFile("/proc/meminfo") ?? "").split(separator: "\n")
            .first { $0.hasPrefix("MemTotal:") }
            .flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        let thp = (readTextFile("/sys/kernel/mm/transparent_hugepage/enabled") ?? "?").trimmingSpaces()
        return Machine(
            cpu: model, cores: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            kernel: "Linux \(release) \(machine)",
            memory: "\(String(format2: Double(memKiB) / Double(1 << 20), digits: 1)) GiB",
            thp: thp)
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        let chars = Array(self)
        var lo = 0, hi = chars.count
        while lo < hi, chars[lo].isWhitespace { lo += 1 }
        while hi > lo, chars[hi - 1].isWhitespace { hi -= 1 }
        return String(chars[lo..<hi])
    }
}

/// CPU time, in seconds, that the whole machine spent busy (all CPUs, from
/// /proc/stat) and that this process spent (getrusage): their difference
/// over a run is the other work that competed with it.
struct CPUClock {
    let machineBusy: Double
    let own: Double

    static func now() -> CPUClock {
        var busy = 0.0
        if let first = (readTextFile("/proc/stat") ?? "").split(separator: "\n").first, first.hasPrefix("cpu ") {
            // user nice system idle iowait irq softirq steal ...
            let f = first.split(separator: " ").dropFirst().compactMap { Double($0) }
            if f.count >= 8 { busy = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / Double(sysconf(Int32(_SC_CLK_TCK))) }
        }
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        let own = Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6
            + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
        return CPUClock(machineBusy: busy, own: own)
    }

    /// Other work between `start` and now, as a share of one CPU over `seconds`.
    static func otherLoad(since start: CPUClock, seconds: Double) -> Double {
        let end = now()
        let other = (end.machineBusy - start.machineBusy) - (end.own - start.own)
        return max(0, other) / seconds
    }
}
