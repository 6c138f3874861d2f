// What the purger's thread needs from an open pressure source: descriptors
// to poll, an optional timer, and a verdict on what they reported.

/// What a source made of its descriptors' events or its timer.
enum SourceReport: Sendable, Equatable {
    /// Nothing that calls for a reaction.
    case quiet
    /// Memory pressure at this level.
    case pressure(MemoryPressureLevel)
    /// The source vanished (its cgroup was removed, its file went away); the
    /// string says how. The purger closes it and opens the next one.
    case gone(String)
}

/// An open pressure source, owned by the purger's thread (never used by two
/// threads at once).
protocol PressureSource: AnyObject {
    /// What was opened.
    var spec: PressureSourceSpec { get }
    /// Descriptors to poll and the events that matter on each.
    var pollRequests: [Kernel.PollRequest] { get }
    /// The period of the source's own timer, nil when it has none.
    var timerMilliseconds: Int? { get }
    /// Things worth knowing that did not stop it from opening (e.g. a
    /// refused critical trigger).
    var notes: [String] { get }
    /// Interprets the events returned for `pollRequests`, in their order.
    func handle(_ returned: [Kernel.PollEvents]) -> SourceReport
    /// Called when the timer is due.
    func timerFired() -> SourceReport
    /// Releases its descriptors (and kernel registrations). Idempotent.
    func close()
}

extension PressureSource {
    var timerMilliseconds: Int? { nil }
    var notes: [String] { [] }
    func timerFired() -> SourceReport { .quiet }
}

/// The whole of an open kernel file, read from its start, as a VRangeError.
func readSourceFile(fd: Int32, path: String) throws(VRangeError) -> [UInt8] {
    do { return try Kernel.readAll(fd: fd, what: path, limit: 1 << 16) } catch { throw .system(error) }
}

/// The whole of the kernel file at `path`, as a VRangeError.
func readSourceFile(_ path: String) throws(VRangeError) -> [UInt8] {
    do { return try Kernel.readFile(path, limit: 1 << 16) } catch { throw .system(error) }
}

/// Why a source could not be opened, in words for the statistics.
func describeOpenFailure(_ error: VRangeError) -> String {
    switch error {
    case .system(let e): describe(e)
    case .malformedFile(let path, let reason): "\(path) is malformed: \(reason)"
    case .unsupported(let why): why
    default: "\(error)"
    }
}

/// A system error as the statistics say it, with the usual meaning of its
/// errno for these files.
func describe(_ e: SystemError) -> String {
    #if canImport(Glibc)
    let meaning: String? = switch e.errno {
    case EOPNOTSUPP: "PSI is compiled in but disabled (psi=0 on the kernel command line?)"
    case EACCES, EPERM: "not permitted for this user"
    case ENOENT: "absent"
    case ENODEV: "gone (its cgroup was removed)"
    case EINVAL: "refused as invalid (a PSI window must be a multiple of 2 s without CAP_SYS_RESOURCE)"
    case EBUSY: "busy"
    default: nil
    }
    #else
    let meaning: String? = nil
    #endif
    return meaning.map { "\(e) — \($0)" } ?? "\(e)"
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
