// systemd's memory-pressure convention ($MEMORY_PRESSURE_WATCH and
// $MEMORY_PRESSURE_WRITE, as sd-event and GLib honour it): a PSI file (write
// the trigger, poll POLLPRI), a FIFO or an AF_UNIX socket (poll POLLIN, any
// data is an event). The convention has one level: events are moderate.

final class SystemdWatchSource: PressureSource {
    let spec: PressureSourceSpec
    private var fd: Int32
    private let streaming: Bool

    /// - Throws: `.system` when the path cannot be opened or connected, or
    ///   the write is refused.
    init(_ spec: PressureSourceSpec) throws(VRangeError) {
        guard case .systemdWatch(let path, let write) = spec else {
            preconditionFailure("SystemdWatchSource needs a .systemdWatch spec")
        }
        self.spec = spec
        do {
            switch try Kernel.fileKind(path) {
            case .fifo:
                // O_RDWR: a FIFO opened for reading only reports POLLHUP for
                // as long as no writer has it open.
                fd = try Kernel.open(path, Kernel.OpenMode.readWrite.nonBlocking)
                streaming = true
            case .socket:
                fd = try Kernel.connectUnixStream(path)
                streaming = true
            default:
                fd = try Kernel.open(path, (write.isEmpty ? Kernel.OpenMode.readOnly : .readWrite).nonBlocking)
                streaming = false
            }
        } catch {
            throw .system(error)
        }
        if !write.isEmpty {
            do { try Kernel.writeOnce(fd: fd, write, what: "\(path) ($MEMORY_PRESSURE_WRITE)") } catch {
                Kernel.close(fd: fd)
                throw .system(error)
            }
        }
    }

    var pollRequests: [Kernel.PollRequest] {
        [Kernel.PollRequest(fd: fd, events: streaming ? [.input] : [.priority])]
    }

    func handle(_ returned: [Kernel.PollEvents]) -> SourceReport {
        guard let events = returned.first else { return .quiet }
        if streaming {
            if events.contains(.input) {
                guard let drained = try? Kernel.drain(fd: fd, what: spec.path) else {
                    return .gone("\(spec.path): read failed")
                }
                if drained.ended { return .gone("\(spec.path): the writer closed it") }
                if drained.bytes > 0 { return .pressure(.moderate) }
            }
            if !events.isDisjoint(with: [.error, .hangUp, .invalid]) { return .gone("\(spec.path): POLLERR/POLLHUP") }
            return .quiet
        }
        if !events.isDisjoint(with: [.error, .invalid]) { return .gone("\(spec.path): POLLERR (the file is gone)") }
        if events.contains(.priority) { return .pressure(.moderate) }
        return .quiet
    }

    func close() {
        if fd >= 0 { Kernel.close(fd: fd); fd = -1 }
    }

    deinit { close() }
}
