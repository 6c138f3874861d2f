// The usage example of README.md, compiled and run. Keep the two in step:
// the block between the markers is copied verbatim from the README.
import Foundation
import Testing
import VRange

@Suite("README") struct ReadmeExampleTests {
    @Test func usageExample() throws {
        // README-EXAMPLE-BEGIN
        let region = try VolatileRegion(byteCount: 1 << 20)  // 1 MiB, all non-volatile
        let tile = 0..<(16 * region.pageSize)                // page-aligned byte range

        region.bytes[tile.lowerBound] = 42                   // fill it while it is needed
        try region.markVolatile(tile)                        // not needed for now: may be purged

        // Peek without un-marking: .purged instead of a SIGBUS if it was discarded.
        if case .intact(let first) = try region.withVolatileAccess(tile, { $0[0] }) {
            print("still cached:", first)
        }

        _ = try region.purge(tile)                           // what a purger does under pressure

        let result = try region.markNonVolatile(tile)        // needed again
        switch result.outcome {
        case .intact: print("contents survived")
        case .purged: print("rebuild", result.purgedRanges)  // exactly the pages lost, now zero-filled
        }
        // README-EXAMPLE-END
        #expect(result.purgedRanges == [tile])
        #expect(region.bytes[tile.lowerBound] == 0)
    }

    /// The example above and the README's Usage block are the same code.
    @Test func readmeShowsThisExample() throws {
        func lines(_ text: String) -> [String] {
            text.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.trimmingPrefix(while: { $0 == " " }) }.map(String.init)
                .filter { !$0.isEmpty }
        }
        let testFile = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        let begin = "// README-EXAMPLE" + "-BEGIN", end = "// README-EXAMPLE" + "-END"
        let example = try #require(testFile.firstRange(of: begin).flatMap { b in
            testFile.firstRange(of: end).map { testFile[b.upperBound..<$0.lowerBound] }
        })
        let usage = try #require(readme.firstRange(of: "```swift\nimport VRange\n").flatMap { b in
            readme[b.upperBound...].firstRange(of: "```").map { readme[b.upperBound..<$0.lowerBound] }
        })
        #expect(lines(String(example)) == lines(String(usage)))
    }
}

/// The package's root folder, from this file's path.
func packageRoot(_ file: String = #filePath) -> String {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/VRangeTests/<file>
    return parts.joined(separator: "/")
}
