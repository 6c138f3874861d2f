// swift-tools-version: 6.1
// VRangeSQLite: SQLite's page cache in purgeable memory. A companion package
// of its own (DESIGN.md §9: the library names no dependency): it needs
// SQLite's headers and library (`apt-get install libsqlite3-dev`), the
// library does not. Run `swift test --package-path Integrations/SQLite` from
// the repository root.
import PackageDescription

let package = Package(
    name: "VRangeSQLite",
    products: [
        .library(name: "VRangeSQLite", targets: ["VRangeSQLite"]),
    ],
    dependencies: [
        .package(name: "VRange", path: "../.."),
    ],
    targets: [
        // sqlite3 through pkg-config, plus the two things Swift cannot call
        // or see in sqlite3.h: the variadic sqlite3_config and the
        // SQLITE_TRANSIENT destructor (shim.h).
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(
            name: "VRangeSQLite",
            dependencies: ["CSQLite", .product(name: "VRange", package: "VRange")]
        ),
        // A process of its own for the tests and the measurements: the page
        // cache is process-global and must be installed before SQLite
        // initialises, so every workload (with either cache) runs in a fresh
        // one. See Sources/VRangeSQLiteProbe/main.swift for its commands.
        .executableTarget(
            name: "VRangeSQLiteProbe",
            dependencies: ["VRangeSQLite", "CSQLite", .product(name: "VRange", package: "VRange")]
        ),
        .testTarget(
            name: "VRangeSQLiteTests",
            dependencies: ["VRangeSQLite", "CSQLite", .product(name: "VRange", package: "VRange")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
