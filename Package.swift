// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "VRange",
    products: [
        .library(name: "VRange", targets: ["VRange"]),
        .executable(name: "VRangeDemo", targets: ["VRangeDemo"]),
    ],
    targets: [
        // What Swift cannot import or must not run: syscall shims, the fault
        // handler and its region table.
        // VR_TEST_HOOKS / VRANGE_TEST_HOOKS compile the test-only interleaving
        // hooks into debug builds (what `swift test` builds); release builds
        // have none.
        .target(
            name: "CVRange",
            cSettings: [.define("_GNU_SOURCE"), .define("VR_TEST_HOOKS", .when(configuration: .debug))]
        ),
        .target(
            name: "VRange",
            dependencies: ["CVRange"],
            // The Promela model of the shared-file page protocol, kept beside
            // the code it describes; checked by .ci/model, not compiled.
            exclude: ["File/PageProtocol.pml"],
            // VRANGE_TEST_HOOKS: see CVRange. Lifetimes: PurgeableBuffer's
            // bytes/mutableBytes return spans tied to the buffer (@_lifetime).
            swiftSettings: [
                .define("VRANGE_TEST_HOOKS", .when(configuration: .debug)),
                .enableExperimentalFeature("Lifetimes"),
            ]
        ),
        .executableTarget(
            name: "VRangeDemo",
            dependencies: ["VRange"]
        ),
        // Spawned by the SIGBUS tests: a process of its own with the Swift
        // runtime's crash handler installed.
        .executableTarget(
            name: "VRangeCrashProbe",
            dependencies: ["VRange"]
        ),
        // A separate process for the shared-file tests: they spawn it and
        // drive it over a socket (real processes, not threads).
        .executableTarget(
            name: "VRangeTestPeer",
            dependencies: ["VRange", "CVRange", "VRangeChaosLedger"]
        ),
        // The chaos run's shared ledger, canary pattern and random numbers:
        // one definition for the participants (VRangeTestPeer) and the tests.
        .target(name: "VRangeChaosLedger"),
        .testTarget(
            name: "VRangeTests",
            dependencies: ["VRange", "CVRange", "VRangeChaosLedger"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
