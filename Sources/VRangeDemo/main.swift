// VRangeDemo: the same tile-cache workload with a plain cache and with
// VRange, each in a child process under the same memory limit, side by
// side; live progress, a summary table, an SVG chart, a JSON report.
// Children run this executable with --child (see Child.swift).
#if canImport(Glibc)
import Glibc
#endif

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
if let kind = options.child { runChild(options, kind: kind) }

Cleanup.shared.install()
Cleanup.removeStale()
let mode = PressureMode.choose(options)
let shape = mapShape(tileCount: options.tileCount)
say("VRangeDemo: \(shape.columns)×\(shape.rows) map tiles of \(options.tileSide)×\(options.tileSide) px (\(options.tileBytes >> 10) KiB each, \(mib(shape.columns * shape.rows * options.tileBytes)) in all),")
say("\(options.threads) viewers panning over it for \(fmt1(options.duration)) s per run; both caches may hold \(options.cacheMiB) MiB.")
for line in mode.describe(options) { say(line) }

let live = Live()
var runs: [RunResult] = []
for kind in [CacheKind.plain, .vrange] where options.only == nil || options.only == kind {
    runs.append(run(kind, options, mode, live))
}
Cleanup.shared.runAll()

say("\nSummary (\(mode.name)\(options.noPressure ? "" : ", limit \(options.limitMiB) MiB, competitor up to \(options.competitorMiB) MiB, \(options.scenario.rawValue)")):")
say(summaryTable(runs))
let subtitle = "\(mode.name)\(options.noPressure ? "" : " · limit \(options.limitMiB) MiB · competitor up to \(options.competitorMiB) MiB (\(options.scenario.rawValue))") · cache limit \(options.cacheMiB) MiB · \(options.tileSide) px tiles, \(options.octaves) octaves · \(options.threads) viewers"
let chart = svgChart(runs, limit: options.noPressure ? nil : options.limitMiB << 20, duration: options.duration, subtitle: subtitle)
if writeFile(options.chartPath, chart) {
    say("\nchart: \(options.chartPath)")
} else {
    say("\ncould not write the chart to \(options.chartPath) (errno \(errno))")
}
if let path = options.jsonPath {
    if writeFile(path, jsonReport(runs, mode: mode, options: options, chart: options.chartPath)) {
        say("report: \(path)")
    } else {
        say("could not write the report to \(path) (errno \(errno))")
    }
}
// A wrong value is a failure of the demo, whatever else happened.
exit(runs.contains { $0.last.wrong > 0 } ? 1 : 0)
