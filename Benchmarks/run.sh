#!/usr/bin/env bash
# Builds the VRange benchmark package in release mode and prints the ratio
# table: every VRange figure beside its raw-syscall or glibc baseline,
# measured in the same run (see README.md beside this file).
#
#   bash Benchmarks/run.sh          full run: 1 GiB sizes, many rounds (about
#                                   3.5 minutes), then package-benchmark's suite
#   bash Benchmarks/run.sh --short  CI smoke run: 64 MiB sizes, few rounds;
#                                   builds everything and runs both once
#
# Environment: VRANGE_BENCH_SHORT=1 is the same as --short;
# VRANGE_BENCH_NO_SUITE=1 skips the package-benchmark suite in a full run.
# Nothing here asserts a performance number: the exit status is non-zero
# only if something fails to build or run.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

short="${VRANGE_BENCH_SHORT:-0}"
for arg in "$@"; do
    case "$arg" in
        --short) short=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null 2>&1 || { echo "run.sh: swift not found on PATH" >&2; exit 1; }

# package-benchmark 1.38 needs no jemalloc (its malloc statistics come from
# the MallocInterposer trait), and BENCHMARK_DISABLE_JEMALLOC would switch
# that trait off: make sure it is not inherited.
unset BENCHMARK_DISABLE_JEMALLOC BENCHMARK_DISABLE_MALLOC_INTERPOSER

echo "== building the benchmark package (release)" >&2
swift build -c release >&2
bin="$(swift build -c release --show-bin-path)"

if [ "$short" = 1 ]; then
    "$bin/VRangeBench" --short
    # The package-benchmark suite, cut to a few iterations, run directly so
    # that it cannot rot; its histograms go to a log.
    log="$here/.build/VRangeBenchmarks-short.log"
    if VRANGE_BENCH_SHORT=1 timeout 300 "$bin/VRangeBenchmarks" --quiet true >"$log" 2>&1; then
        echo "package-benchmark suite VRangeBenchmarks (short): $(grep -c '^Debug results for' "$log") benchmarks ran (histograms in $log)"
    else
        status=$?
        tail -n 40 "$log" >&2
        echo "run.sh: VRangeBenchmarks failed (exit $status)" >&2
        exit "$status"
    fi
else
    "$bin/VRangeBench"
    if [ "${VRANGE_BENCH_NO_SUITE:-0}" != 1 ]; then
        echo ""
        echo "== package-benchmark suite (swift package benchmark)"
        timeout 1200 swift package benchmark --no-progress
    fi
fi
