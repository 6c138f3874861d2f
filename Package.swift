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
        .target(
            name: "CVRange",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        .target(
            name: "VRange",
            dependencies: ["CVRange"]
        ),
        .executableTarget(
            name: "VRangeDemo",
            dependencies: ["VRange"]
        ),
        // A separate process for the shared-file tests: they spawn it and
        // drive it over a socket (real processes, not threads).
        .executableTarget(
            name: "VRangeTestPeer",
            dependencies: ["VRange", "CVRange"]
        ),
        .testTarget(
            name: "VRangeTests",
            dependencies: ["VRange", "CVRange"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
