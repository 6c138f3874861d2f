// swift-tools-version: 6.1
// VRange fuzz targets (libFuzzer): their own package, depending on the
// library by path, built with `swift build --sanitize=fuzzer` (plus
// `--sanitize=address`). Run them with `.ci/fuzz` from the repository root
// (see RELIABILITY.md).
//
// Each target is an executable whose `main` is libFuzzer's: the Swift code
// is compiled as a library (`-parse-as-library`) and exports
// `LLVMFuzzerTestOneInput`. Debug builds, so that the library's test hooks
// and its `@testable` internals are there.
import PackageDescription

let fuzzTarget: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

let package = Package(
    name: "VRangeFuzz",
    dependencies: [.package(name: "VRange", path: "..")],
    targets: [
        // Input decoding, hostile integers, page patterns, failure reports.
        .target(name: "FuzzSupport", dependencies: [.product(name: "VRange", package: "VRange")]),
        // Arbitrary sidecars (and data files) adopted through the public API.
        .executableTarget(name: "FuzzSidecar", dependencies: ["FuzzSupport", .product(name: "VRange", package: "VRange")],
                          swiftSettings: fuzzTarget),
        // Sequences of VolatileRegion calls checked against a model.
        .executableTarget(name: "FuzzRegionOps", dependencies: ["FuzzSupport", .product(name: "VRange", package: "VRange")],
                          swiftSettings: fuzzTarget),
        // Sequences of VolatileFile / FileMapping calls checked against a
        // model of DESIGN.md §1c.
        .executableTarget(name: "FuzzFileOps", dependencies: ["FuzzSupport", .product(name: "VRange", package: "VRange")],
                          swiftSettings: fuzzTarget),
    ],
    swiftLanguageModes: [.v6]
)
