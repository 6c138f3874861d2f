// PSI triggers (/proc/pressure/memory or a cgroup v2 memory.pressure): one
// descriptor per trigger, the moderate one and a second for critical, each
// written in one write() and polled for POLLPRI; POLLERR means the file is
// gone (its cgroup was removed).

final class PSISource: PressureSource {
    let spec: PressureSourceSpec
    private var moderateFD: Int32
    private var criticalFD: Int32?
    private(set) var notes: [String] = []

    /// Opens `path`, checks that it reads as a PSI file (EOPNOTSUPP: PSI is
    /// compiled in but disabled), and installs `moderate` and, on a second
    /// descriptor, `critical`. A refused critical trigger is noted and the
    /// source runs with the moderate one alone.
    ///
    /// - Throws: `.system` when the file cannot be opened, read or written
    ///   (the trigger refused); `.malformedFile` when it is not a PSI file.
    init(_ spec: PressureSourceSpec) throws(VRangeError) {
        guard case .psi(let path, _, let moderate, let critical) = spec else {
            preconditionFailure("PSISource needs a .psi spec")
        }
        self.spec = spec
        moderateFD = try Self.installTrigger(moderate, path: path)
        if let critical {
            do { criticalFD = try Self.installTrigger(critical, path: path) } catch {
                notes.append("critical trigger \"\(critical)\" on \(path) refused: \(describeOpenFailure(error)); moderate trigger only")
            }
        }
    }

    /// Opens one descriptor on `path` holding `trigger`.
    static func installTrigger(_ trigger: PSITrigger, path: String) throws(VRangeError) -> Int32 {
        let fd: Int32
        do { fd = try Kernel.open(path, Kernel.OpenMode.readWrite.nonBlocking) } catch { throw .system(error) }
        do throws(VRangeError) {
            _ = try PSIReading.parse(readSourceFile(fd: fd, path: path), path: path)
            do { try Kernel.writeOnce(fd: fd, trigger.bytes, what: "\(path) \"\(trigger)\"") } catch { throw VRangeError.system(error) }
        } catch {
            Kernel.close(fd: fd)
            throw error
        }
        return fd
    }

    var pollRequests: [Kernel.PollRequest] {
        var out = [Kernel.PollRequest(fd: moderateFD, events: [.priority])]
        if let criticalFD { out.append(Kernel.PollRequest(fd: criticalFD, events: [.priority])) }
        return out
    }

    func handle(_ returned: [Kernel.PollEvents]) -> SourceReport {
        if returned.contains(where: { !$0.isDisjoint(with: [.error, .invalid, .hangUp]) }) {
            return .gone("\(spec.path): POLLERR (the PSI file is gone: its cgroup was removed)")
        }
        if returned.count > 1, returned[1].contains(.priority) { return .pressure(.critical) }
        if returned.first?.contains(.priority) == true { return .pressure(.moderate) }
        return .quiet
    }

    func close() {
        if moderateFD >= 0 { Kernel.close(fd: moderateFD); moderateFD = -1 }
        if let fd = criticalFD { Kernel.close(fd: fd); criticalFD = nil }
    }

    deinit { close() }
}
