// VRangeBench: every VRange figure beside its baseline, measured in the same
// run, printed as one table with ratios and goals (issue 3, BENCHMARKS.md).
//
//   swift run -c release VRangeBench [--short] [--only SECTION,...]
//
// --short (or VRANGE_BENCH_SHORT=1): 64 MiB instead of 1 GiB and few rounds,
// for CI; its figures only show that the benchmark still runs. --only runs
// some sections (marks, purge, access, alloc, threads, metadata, files).
// VRANGE_BENCH_SAMPLES=1 prints every round's figure on standard error.
import CBench
import VRange
#if canImport(Glibc)
import Glibc
#endif

/// Sections that can be run alone with `--only NAME[,NAME...]`.
let sectionNames = ["marks", "purge", "access", "alloc", "threads", "pressure", "metadata", "files", "purger"]
var short = (getenv("VRANGE_BENCH_SHORT").map { String(cString: $0) } ?? "") == "1"
var only = Set(sectionNames)
var args = CommandLine.arguments.dropFirst()
// The child of row 22 (PressureChild.swift): VRangeBench --pressure-child DIR v1|v2.
if args.first == "--pressure-child", args.count == 3 {
    pressureChildMain(dir: args[args.startIndex + 1], version: args[args.startIndex + 2])
}
while let a = args.popFirst() {
    if a == "--short" {
        short = true
    } else if a == "--only", let list = args.popFirst(),
              Set(list.split(separator: ",").map(String.init)).isSubset(of: sectionNames) {
        only = Set(list.split(separator: ",").map(String.init))
    } else {
        eprint("usage: VRangeBench [--short] [--only \(sectionNames.joined(separator: ","))]")
        exit(2)
    }
}
let config = Config(short: short)

/// A line on standard error (progress and failures; the table goes to stdout).
func eprint(_ s: String) {
    let line = s + "\n"
    _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
}

func step(_ name: String) { eprint("· \(name)") }

do {
    let machine = Machine.current()
    let started = now()
    let cpuAtStart = CPUClock.now()
    // Before any region exists (so before VRange installs its handler): the
    // baseline's mapping and userfaultfd. It installs its own handler only
    // around its reads in any case.
    let sigbusReady = cb_sigbus_setup(config.faultPages)

    var rows: [Row] = []
    var mechanism = "not created"
    if only.contains("marks") || only.contains("purge") {
        let big = try VolatileRegion(byteCount: config.bigBytes)
        mechanism = big.faultMechanism.description
        if only.contains("marks") {
            step("marks")
            var marks = try markRows(config)
            step("mark + unmark \(config.bigLabel)")
            // After the 64 KiB row, before the kernel-driven one.
            marks.insert(try largeMarkRow(config, big), at: min(3, marks.count))
            rows += marks
        }
        if only.contains("purge") {
            step("purge and repopulate \(config.bigLabel)")
            rows += try purgeRows(config, big)
        }
        big.close()
    }
    if only.contains("access") {
        step("optimistic access")
        rows += try accessRows(config, sigbusReady: sigbusReady)
    }
    if only.contains("alloc") {
        step("allocator and cache baselines")
        rows += try allocatorRows(config) + [try cacheRow(config)]
    }
    if only.contains("alloc") {
        step("buffer lock + unlock")
        rows += try bufferRows(config)
    }
    if only.contains("threads") {
        step("two threads")
        rows += try threadRows(config)
        step("buffer lock + unlock from \(benchThreadCounts().map(String.init).joined(separator: ", ")) threads")
        rows += try bufferThreadRows(config)
    }
    if only.contains("pressure") {
        step("pressure onset → release (real cgroup pressure, in children)")
        rows.append(pressureRow(config))
    }
    if only.contains("metadata") {
        step("metadata")
        rows += try metadataRows(config)
    }
    if only.contains("files") {
        step("shared files")
        rows += try fileMarkRows(config) + [try fileContentionRow(config)] + fileMetadataRows(config)
    }
    if only.contains("purger") {
        step("purger")
        rows += try purgerRows(config)
    }
    let seconds = Double(now() - started) / 1e9
    let otherLoad = CPUClock.otherLoad(since: cpuAtStart, seconds: seconds)
    print("")
    let sections = only.count == sectionNames.count ? "" : " (sections: \(sectionNames.filter(only.contains).joined(separator: ", ")))"
    print("VRange benchmarks, \(config.short ? "short mode (CI smoke run: figures are indicative only)" : "full mode")\(sections)")
    print("machine: \(machine.cpu), \(machine.cores) cores, \(machine.memory), \(machine.kernel)")
    print("other work on the machine during the run: \(String(format2: otherLoad * 100, digits: 0)) % of one CPU "
          + "(from /proc/stat less this process; it skews every figure, the thread rows most)")
    print("THP: \(machine.thp) (regions and raw baselines use MADV_NOHUGEPAGE); fault mechanism: \(mechanism)")
    print("large size: \(config.bigLabel); medians of \(config.smallRounds) rounds × \(config.batch) ops (small rows), "
          + "\(config.bigRounds) rounds (large rows); VRange and baselines interleaved in each round")
    print("")
    printTable(rows)
    print("")
    let missed = rows.filter { $0.result.contains("missed") }.count
    let met = rows.filter { $0.result == "met" }.count
    let notYet = rows.filter { $0.result == "not yet" }.count
    print("goals: \(met) met, \(missed) missed, \(notYet) not yet (\(String(format2: seconds, digits: 1)) s)")
} catch {
    eprint("VRangeBench failed: \(error)")
    exit(1)
}
