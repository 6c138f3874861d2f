// The last resort that works everywhere: MemAvailable of /proc/meminfo,
// read on a timer (Chromium on Linux: every 5 s, moderate at ≤ 25 % of
// MemTotal, critical at ≤ 15 %).

final class MemAvailableSource: PressureSource {
    let spec: PressureSourceSpec
    let timerMilliseconds: Int?
    private let thresholds: HeadroomThresholds
    private var fd: Int32

    /// - Throws: `.system` when the file cannot be opened or read,
    ///   `.malformedFile` when it lacks MemTotal or MemAvailable.
    init(_ spec: PressureSourceSpec, thresholds: HeadroomThresholds) throws(VRangeError) {
        guard case .memAvailable(let path, let interval) = spec else {
            preconditionFailure("MemAvailableSource needs a .memAvailable spec")
        }
        self.spec = spec
        self.timerMilliseconds = interval
        self.thresholds = thresholds
        do { fd = try Kernel.open(path, .readOnly) } catch { throw .system(error) }
        do throws(VRangeError) { _ = try read() } catch {
            Kernel.close(fd: fd)
            throw error
        }
    }

    private func read() throws(VRangeError) -> MemInfo {
        try MemInfo.parse(readSourceFile(fd: fd, path: spec.path), path: spec.path)
    }

    var pollRequests: [Kernel.PollRequest] { [] }

    func handle(_ returned: [Kernel.PollEvents]) -> SourceReport { .quiet }

    func timerFired() -> SourceReport {
        let info: MemInfo
        do { info = try read() } catch { return .gone(describeOpenFailure(error)) }
        return thresholds.level(available: info.available, total: info.total).map(SourceReport.pressure) ?? .quiet
    }

    func close() {
        if fd >= 0 { Kernel.close(fd: fd); fd = -1 }
    }

    deinit { close() }
}
