// cgroup v1 memory.pressure_level (vmpressure) through cgroup.event_control
// and eventfds: one eventfd per level (low, medium, critical). The kernel
// signals thousands of times a second under reclaim; an eventfd is a
// counter, so one read per wake-up coalesces them. medium → moderate,
// critical → critical. With no swap the kernel reports medium only at the
// edge of OOM, and with no page cache to reclaim not even that before the
// OOM kill, so a cgroup with a limit is also watched through its headroom —
// limit − usage + inactive file cache — checked on a "low" event (reclaim
// running), when usage crosses one of two thresholds (memory.usage_in_bytes
// notifications at the moderate and critical headroom, registered the same
// way) and on a timer.

final class CgroupV1Source: PressureSource {
    let spec: PressureSourceSpec
    let timerMilliseconds: Int?
    private let directory: String
    private let thresholds: HeadroomThresholds
    private let physicalMemory: UInt64
    private var levelFD: Int32 = -1
    private var usageFD: Int32 = -1
    private var eventFDs: [Int32] = []  // low, medium, critical, then the usage thresholds
    /// Whether the cgroup has a limit (then its headroom is watched).
    let isLimited: Bool

    /// Registers the level eventfds, and for a cgroup with a limit the two
    /// usage-threshold eventfds, with the cgroup at `directory`.
    ///
    /// - Throws: `.system` when a file cannot be opened or the registration
    ///   is refused (cgroup.event_control is root's); `.malformedFile` for a
    ///   malformed memory.stat.
    init(_ spec: PressureSourceSpec, thresholds: HeadroomThresholds, headroomIntervalMilliseconds: Int,
         physicalMemory: UInt64) throws(VRangeError) {
        guard case .cgroupV1(let directory) = spec else { preconditionFailure("CgroupV1Source needs a .cgroupV1 spec") }
        self.spec = spec
        self.directory = directory
        self.thresholds = thresholds
        self.physicalMemory = physicalMemory
        let usage = try CgroupV1Source.readUsage(directory, physicalMemory: physicalMemory)
        isLimited = usage.limit != nil
        timerMilliseconds = isLimited ? headroomIntervalMilliseconds : nil
        do throws(SystemError) {
            levelFD = try Kernel.open(directory + "/memory.pressure_level", .readOnly)
            let control = try Kernel.open(directory + "/cgroup.event_control", .writeOnly)
            defer { Kernel.close(fd: control) }
            for level in CgroupV1PressureLevel.allCases {
                let efd = try Kernel.eventFD()
                eventFDs.append(efd)
                try Kernel.writeOnce(fd: control, Array("\(efd) \(levelFD) \(level.rawValue)".utf8),
                                     what: directory + "/cgroup.event_control")
            }
            if let limit = usage.limit {
                usageFD = try Kernel.open(directory + "/memory.usage_in_bytes", .readOnly)
                for fraction in [thresholds.moderate, thresholds.critical] {
                    let efd = try Kernel.eventFD()
                    eventFDs.append(efd)
                    let threshold = UInt64(Double(limit) * (1 - fraction))
                    try Kernel.writeOnce(fd: control, Array("\(efd) \(usageFD) \(threshold)".utf8),
                                         what: directory + "/cgroup.event_control")
                }
            }
        } catch {
            close()
            throw .system(error)
        }
    }

    /// Reads memory.usage_in_bytes and memory.stat.
    static func readUsage(_ directory: String, physicalMemory: UInt64) throws(VRangeError) -> CgroupUsage {
        try CgroupUsage.parseV1(
            usage: readSourceFile(directory + "/memory.usage_in_bytes"),
            stat: readSourceFile(directory + "/memory.stat"),
            physicalMemory: physicalMemory, dir: directory)
    }

    var pollRequests: [Kernel.PollRequest] { eventFDs.map { Kernel.PollRequest(fd: $0, events: [.input]) } }

    func handle(_ returned: [Kernel.PollEvents]) -> SourceReport {
        // Read every counter, ready or not: one wake-up, one verdict.
        var counts: [UInt64] = []
        for fd in eventFDs { counts.append((try? Kernel.eventFDRead(fd)) ?? 0) }
        // The kernel also signals each eventfd when the cgroup is removed.
        if !Kernel.exists(directory + "/memory.pressure_level") {
            return .gone("\(directory) was removed (the kernel signalled its eventfds)")
        }
        if counts.count >= 3 {
            if counts[2] > 0 { return .pressure(.critical) }
            if counts[1] > 0 { return .pressure(.moderate) }
        }
        // Reclaim running, or usage crossed a threshold (either way).
        if counts.contains(where: { $0 > 0 }) { return headroom() }
        return .quiet
    }

    func timerFired() -> SourceReport {
        if !Kernel.exists(directory + "/memory.pressure_level") { return .gone("\(directory) was removed") }
        return headroom()
    }

    private func headroom() -> SourceReport {
        guard isLimited, let usage = try? CgroupV1Source.readUsage(directory, physicalMemory: physicalMemory) else {
            return .quiet
        }
        return usage.level(thresholds).map(SourceReport.pressure) ?? .quiet
    }

    func close() {
        for fd in eventFDs { Kernel.close(fd: fd) }
        eventFDs = []
        if levelFD >= 0 { Kernel.close(fd: levelFD); levelFD = -1 }
        if usageFD >= 0 { Kernel.close(fd: usageFD); usageFD = -1 }
    }

    deinit { close() }
}
