// Running the probe (a process of its own: the page cache is process-global
// and must be installed before SQLite initialises), and where things are.
import Foundation

/// The package's directory (Integrations/SQLite).
func packageDirectory(_ file: String = #filePath) -> String {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/VRangeSQLiteTests/<file>
    return parts.joined(separator: "/")
}

/// The probe, built beside the test binary.
func probePath() -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("VRangeSQLiteProbe").path
}

/// What a probe run printed and how it ended.
struct ProbeRun: Sendable {
    var lines: [String]
    /// Exit status, nil when a signal ended it.
    var status: Int32?
    var signal: Int32?
    var seconds: Double

    /// The lines every run must print alike (results and integrity check),
    /// without timings and statistics.
    var results: [String] { lines.filter { $0.hasPrefix("Q ") || $0.hasPrefix("I ") } }
    var statistics: String? { lines.last { $0.hasPrefix("S ") } }
    var errors: [String] { lines.filter { $0.hasPrefix("E ") } }
    var succeeded: Bool { status == 0 }
    var summary: String {
        let end = status.map { "exit \($0)" } ?? "signal \(signal ?? 0)"
        return "\(end) after \(String(format: "%.1f", seconds)) s; \(errors.first ?? "no error"); \(statistics ?? "")"
    }
}

/// Runs the probe with `arguments`, stdout captured, within `timeout` s.
func runProbe(_ arguments: [String], timeout: Double = 120) throws -> ProbeRun {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: probePath())
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    let start = Date()
    try process.run()
    let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    killer.cancel()
    let text = String(decoding: data, as: UTF8.self)
    let exited = process.terminationReason == .exit
    return ProbeRun(lines: text.split(separator: "\n").map(String.init),
                    status: exited ? process.terminationStatus : nil,
                    signal: exited ? nil : process.terminationStatus,
                    seconds: Date().timeIntervalSince(start))
}

/// A fresh temporary directory.
func temporaryDirectory(_ label: String) throws -> String {
    let dir = NSTemporaryDirectory() + "vrange-sqlite-\(getpid())-\(label)-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
