// The vocabulary of pressure sources: levels, the kinds of source a purger
// can watch, and how to name one in a configuration.

/// How tight memory is, as a pressure source reports it.
public enum MemoryPressureLevel: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    /// Memory is getting tight: a purger purges down to half its budget (or a
    /// fraction of its purgeable memory), least recently used first.
    case moderate = 1
    /// Memory is about to run out: a purger purges everything purgeable.
    case critical = 2

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .moderate: "moderate"
        case .critical: "critical"
        }
    }
}

/// The kinds of memory-pressure source (the order an automatic purger tries
/// them in is `Purger.detectPressureSources()`'s).
public enum PressureSourceKind: String, Sendable, CaseIterable, CustomStringConvertible {
    /// `$MEMORY_PRESSURE_WATCH` / `$MEMORY_PRESSURE_WRITE` (systemd's
    /// convention, also honoured by sd-event and GLib).
    case systemdWatch = "$MEMORY_PRESSURE_WATCH"
    /// A PSI trigger on the process's own cgroup v2 `memory.pressure`.
    case psiCgroup = "PSI cgroup memory.pressure"
    /// cgroup v1 `memory.pressure_level` of a memory cgroup with a limit.
    case cgroupV1PressureLevel = "cgroup v1 memory.pressure_level"
    /// A PSI trigger on `/proc/pressure/memory` (the whole system).
    case psiSystem = "PSI /proc/pressure/memory"
    /// cgroup v2 `memory.events` (`high`, `max`) and the headroom of
    /// `memory.current` below `memory.high`/`memory.max`.
    case cgroupV2Events = "cgroup v2 memory.events"
    /// `MemAvailable` of `/proc/meminfo`, polled.
    case memAvailable = "MemAvailable polling"
    /// Reported by the program through `Purger.reportPressure(_:)`.
    case program = "reported by the program"

    public var description: String { rawValue }
}

/// A PSI trigger: `some` or `full` stall of `stallMicroseconds` within each
/// window of `windowMicroseconds` (`/proc/pressure/memory`, cgroup v2
/// `memory.pressure`). The kernel sends at most one event per window.
public struct PSITrigger: Sendable, Equatable, CustomStringConvertible {
    /// `some`: at least one task stalled; `full`: all non-idle tasks stalled.
    public enum Kind: String, Sendable { case some, full }

    public let kind: Kind
    public let stallMicroseconds: Int
    public let windowMicroseconds: Int

    /// sd-event's default, the finest that unprivileged callers may use:
    /// 200 ms of `some` stall per 2 s window.
    public static let defaultModerate = PSITrigger(unchecked: .some, stall: 200_000, window: 2_000_000)
    /// VRange's default for critical: 500 ms of `full` stall (every task
    /// stalled) per 2 s window.
    public static let defaultCritical = PSITrigger(unchecked: .full, stall: 500_000, window: 2_000_000)

    /// - Throws: `.invalidConfiguration` unless 500 ms ≤ window ≤ 10 s and
    ///   0 < stall ≤ window (the kernel's rules). Without CAP_SYS_RESOURCE
    ///   the kernel also wants the window to be a multiple of 2 s; that is
    ///   left to it (the trigger is then refused with EINVAL and the purger
    ///   falls through to its next source, saying why).
    public init(_ kind: Kind, stallMicroseconds: Int, windowMicroseconds: Int) throws(VRangeError) {
        guard (500_000...10_000_000).contains(windowMicroseconds) else {
            throw .invalidConfiguration("PSI window \(windowMicroseconds) µs: must be 500000...10000000")
        }
        guard stallMicroseconds > 0, stallMicroseconds <= windowMicroseconds else {
            throw .invalidConfiguration("PSI stall \(stallMicroseconds) µs: must be 1...window (\(windowMicroseconds))")
        }
        self.init(unchecked: kind, stall: stallMicroseconds, window: windowMicroseconds)
    }

    init(unchecked kind: Kind, stall: Int, window: Int) {
        self.kind = kind
        self.stallMicroseconds = stall
        self.windowMicroseconds = window
    }

    /// "some 200000 2000000", as written to the file.
    public var description: String { "\(kind.rawValue) \(stallMicroseconds) \(windowMicroseconds)" }

    /// What one write() hands the kernel: the text and its terminating NUL
    /// (the kernel replaces the last byte written with NUL: without it the
    /// window would lose its last digit).
    var bytes: [UInt8] { Array(description.utf8) + [0] }
}

/// One pressure source a purger may watch, with where it lives. A purger
/// tries a list of these in order and watches the first that opens.
public enum PressureSourceSpec: Sendable, Equatable, CustomStringConvertible {
    /// systemd's convention: watch `path` (a PSI file, a FIFO or a socket),
    /// after writing `write` to it (already decoded from base64).
    case systemdWatch(path: String, write: [UInt8])
    /// PSI triggers on `path` (`memory.pressure` of a cgroup v2, or
    /// `/proc/pressure/memory` when `systemWide`): `moderate` and, when given,
    /// a second descriptor with `critical`.
    case psi(path: String, systemWide: Bool, moderate: PSITrigger, critical: PSITrigger?)
    /// cgroup v1 `memory.pressure_level` of the memory cgroup at `directory`.
    case cgroupV1(directory: String)
    /// cgroup v2 `memory.events` and headroom of the cgroup at `directory`.
    case cgroupV2(directory: String)
    /// `MemAvailable` of `meminfoPath`, read every `intervalMilliseconds`.
    case memAvailable(meminfoPath: String, intervalMilliseconds: Int)

    /// The kind of source.
    public var kind: PressureSourceKind {
        switch self {
        case .systemdWatch: .systemdWatch
        case .psi(_, let systemWide, _, _): systemWide ? .psiSystem : .psiCgroup
        case .cgroupV1: .cgroupV1PressureLevel
        case .cgroupV2: .cgroupV2Events
        case .memAvailable: .memAvailable
        }
    }

    /// The file or directory it watches.
    public var path: String {
        switch self {
        case .systemdWatch(let path, _), .psi(let path, _, _, _): path
        case .cgroupV1(let directory), .cgroupV2(let directory): directory
        case .memAvailable(let path, _): path
        }
    }

    /// "cgroup v1 memory.pressure_level at /sys/fs/cgroup/memory/…".
    public var description: String { "\(kind) at \(path)" }
}
