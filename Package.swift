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
            dependencies: ["CVRange"],
            // PurgeableBuffer.bytes/mutableBytes return spans tied to the
            // buffer's lifetime (@_lifetime), which needs this feature.
            swiftSettings: [.enableExperimentalFeature("Lifetimes")]
        ),
        .executableTarget(
            name: "VRangeDemo",
            dependencies: ["VRange"]
        ),
        .testTarget(
            name: "VRangeTests",
            dependencies: ["VRange", "CVRange"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
