// The output of an exit-test child, kept whatever the child's end.
// `#expect(processExitsWith:observing:)` returns nil when the child ends
// other than expected, and the stdout it observed goes with it: exactly when
// the child's lines (a FAIL line with its reason, the figures before an OOM
// kill or the watchdog's SIGALRM) are worth reading. A child that calls
// `ChildLog.redirect(label)` has its standard output in a file the parent
// names after its own pid and the label, and says its lines with
// `ChildLog.say` (one write(2) each, no stdio buffer to lose in a kill);
// `ChildLog.capture` prints and returns that file after the exit test,
// passed or failed.
#if canImport(Glibc)
import Glibc
#endif

enum ChildLog {
    static func path(label: String, parent: pid_t) -> String { "/tmp/vrange-child-\(parent)-\(label).log" }

    /// In the child: standard output (file descriptor 1) becomes the log.
    static func redirect(_ label: String) {
        // No O_CREAT: the parent made the file (a child that dropped its
        // privileges may not create files in /tmp, fs.protected_regular).
        let fd = open(path(label: label, parent: getppid()), O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { say("ChildLog: cannot open the log (errno \(errno)); lines stay on stdout"); return }
        if dup2(fd, STDOUT_FILENO) < 0 { say("ChildLog: dup2 failed (errno \(errno))") }
        close(fd)
    }

    /// One line to standard output, written at once.
    static func say(_ line: String) {
        let text = line + "\n"
        _ = text.utf8CString.withUnsafeBufferPointer { write(STDOUT_FILENO, $0.baseAddress, $0.count - 1) }
    }

    /// In the parent: runs the exit test in `body`, then prints each line
    /// the child logged (prefixed) and returns them all. The log file is
    /// made world-writable first, for a child that drops its privileges.
    static func capture(_ label: String, prefix: String, _ body: () async -> Void) async -> String {
        let file = path(label: label, parent: getpid())
        unlink(file)
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
        if fd >= 0 { fchmod(fd, 0o666); close(fd) }
        defer { unlink(file) }
        await body()
        let text = readText(file) ?? ""
        if text.isEmpty { print("\(prefix): the child logged nothing") }
        for line in text.split(separator: "\n") { print("\(prefix): \(line)") }
        return text
    }
}
