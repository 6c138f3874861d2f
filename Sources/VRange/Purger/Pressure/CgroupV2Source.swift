// cgroup v2 memory.events (`high`, `max`, `oom`) polled for POLLPRI — kernfs
// reports a change as POLLPRI|POLLERR and a pread from 0 re-arms it — plus a
// timer on the headroom of memory.current below the lower of memory.high and
// memory.max (inactive file cache counted as available).

final class CgroupV2Source: PressureSource {
    let spec: PressureSourceSpec
    let timerMilliseconds: Int?
    private let directory: String
    private let thresholds: HeadroomThresholds
    private var eventsFD: Int32 = -1
    private var last: CgroupV2Events

    /// - Throws: `.system` when memory.events cannot be opened or read
    ///   (ENOENT: no memory controller for this cgroup); `.malformedFile`
    ///   for malformed contents.
    init(_ spec: PressureSourceSpec, thresholds: HeadroomThresholds, headroomIntervalMilliseconds: Int) throws(VRangeError) {
        guard case .cgroupV2(let directory) = spec else { preconditionFailure("CgroupV2Source needs a .cgroupV2 spec") }
        self.spec = spec
        self.directory = directory
        self.thresholds = thresholds
        do { eventsFD = try Kernel.open(directory + "/memory.events", .readOnly) } catch { throw .system(error) }
        do throws(VRangeError) {
            last = try CgroupV2Events.parse(readSourceFile(fd: eventsFD, path: directory + "/memory.events"),
                                            path: directory + "/memory.events")
            _ = try CgroupV2Source.readUsage(directory)
        } catch {
            Kernel.close(fd: eventsFD)
            throw error
        }
        timerMilliseconds = headroomIntervalMilliseconds
    }

    static func readUsage(_ d: String) throws(VRangeError) -> CgroupUsage {
        try CgroupUsage.parseV2(
            current: readSourceFile(d + "/memory.current"), high: readSourceFile(d + "/memory.high"),
            max: readSourceFile(d + "/memory.max"), stat: readSourceFile(d + "/memory.stat"), dir: d)
    }

    var pollRequests: [Kernel.PollRequest] { [Kernel.PollRequest(fd: eventsFD, events: [.priority])] }

    func handle(_ returned: [Kernel.PollEvents]) -> SourceReport {
        guard let events = returned.first, !events.isDisjoint(with: [.priority, .error, .invalid]) else { return .quiet }
        let now: CgroupV2Events
        do {
            now = try CgroupV2Events.parse(readSourceFile(fd: eventsFD, path: directory + "/memory.events"),
                                           path: directory + "/memory.events")
        } catch {
            return .gone("\(directory)/memory.events: \(describeOpenFailure(error))")
        }
        defer { last = now }
        if let level = now.level(since: last) { return .pressure(level) }
        return headroom()
    }

    func timerFired() -> SourceReport {
        if !Kernel.exists(directory + "/memory.events") { return .gone("\(directory) was removed") }
        return headroom()
    }

    private func headroom() -> SourceReport {
        guard let usage = try? CgroupV2Source.readUsage(directory) else { return .quiet }
        return usage.level(thresholds).map(SourceReport.pressure) ?? .quiet
    }

    func close() {
        if eventsFD >= 0 { Kernel.close(fd: eventsFD); eventsFD = -1 }
    }

    deinit { close() }
}
