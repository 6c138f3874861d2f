// Where the pressure comes from: a memory-limited cgroup per run (root and a
// memory controller, v2 preferred, else v1), or, when none can be made, the
// best the machine offers, named.
import VRange
#if canImport(Glibc)
import Glibc
#endif

enum PressureMode {
    /// Each run in its own cgroup with memory limit --limit.
    case cgroup(MemoryCgroup.Version)
    /// No cgroup can be made (why): the VRange run keeps a byte budget and
    /// its purger watches what it finds; the plain run is judged by its RSS.
    case noCgroup(String)
    /// --no-pressure: nothing limits either run.
    case none

    static func choose(_ o: Options) -> PressureMode {
        if o.noPressure { return .none }
        let v2 = MemoryCgroup.unavailable(.v2)
        if v2 == nil { return .cgroup(.v2) }
        let v1 = MemoryCgroup.unavailable(.v1)
        if v1 == nil { return .cgroup(.v1) }
        return .noCgroup("cgroup v2: \(v2!); cgroup v1: \(v1!)")
    }

    var name: String {
        switch self {
        case .cgroup(let v): v.rawValue
        case .noCgroup: "no cgroup"
        case .none: "no pressure"
        }
    }

    /// The byte budget of the VRange run without a cgroup: the limit less
    /// the competitor's peak and 32 MiB for the rest of the process.
    static func budget(_ o: Options) -> Int { max(16 << 20, (o.limitMiB - o.competitorMiB - 32) << 20) }

    /// What the person watching is told before the runs.
    func describe(_ o: Options) -> [String] {
        switch self {
        case .cgroup(let v):
            return ["real memory pressure: each run in its own \(v.rawValue) memory cgroup limited to \(o.limitMiB) MiB (no swap),",
                    "next to a competing allocation of up to \(o.competitorMiB) MiB (\(o.scenario.rawValue))"]
        case .noCgroup(let why):
            let sourceText = Purger.detectPressureSources().sources.first?.description ?? "no pressure source"
            return ["NO CGROUP: cannot make a memory-limited cgroup here (\(why)).",
                    "Pressure source instead: a byte budget of \(mib(PressureMode.budget(o))) on the VRange run (the \(o.limitMiB) MiB",
                    "limit less the competitor's \(o.competitorMiB) MiB and 32 MiB), with its purger also watching \(sourceText);",
                    "nothing kills the plain run: it is judged by whether its peak RSS went over \(o.limitMiB) MiB."]
        case .none:
            return ["--no-pressure: no cgroup, no competitor, no budget (a baseline)"]
        }
    }
}
