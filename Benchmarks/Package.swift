// swift-tools-version: 6.1
// VRange benchmarks: their own package, so that the library stays free of
// dependencies. Run `bash Benchmarks/run.sh` from the repository root.
import PackageDescription

let package = Package(
    name: "VRangeBenchmarks",
    dependencies: [
        .package(name: "VRange", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The raw baselines: syscalls, a bare SIGBUS round trip, CAS.
        .target(
            name: "CBench",
            cSettings: [.define("_GNU_SOURCE"), .unsafeFlags(["-O2"])]
        ),
        // The ratio table: each VRange figure beside its baseline, one run.
        .executableTarget(
            name: "VRangeBench",
            dependencies: [.product(name: "VRange", package: "VRange"), "CBench"]
        ),
        // The same operations under package-benchmark (`swift package benchmark`).
        .executableTarget(
            name: "VRangeBenchmarks",
            dependencies: [
                .product(name: "VRange", package: "VRange"),
                .product(name: "Benchmark", package: "benchmark"),
                "CBench",
            ],
            path: "Benchmarks/VRangeBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
