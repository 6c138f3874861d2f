// The Purger example of README.md, compiled and run. Keep the two in step:
// the block between the markers is copied verbatim from the README's
// "Purger" section.
import Foundation
import Testing
import VRange

@Suite("README purger") struct ReadmePurgerExampleTests {
    @Test func purgerExample() throws {
        // README-PURGER-BEGIN
        let purger = try Purger(.init(budget: 64 << 20))    // keep at most 64 MiB volatile resident
        print("watching:", purger.activeSource?.description ?? "no pressure source")

        let tiles = try VolatileRegion(byteCount: 16 << 20, options: .init(purgePriority: .low))
        purger.register(tiles)                               // held weakly: dropping it is enough
        try tiles.markVolatile(0..<tiles.size)               // purgeable from now on

        purger.reportPressure(.critical)                     // as the host's own signal would
        let stats = purger.statistics()
        print("purged \(stats.purgedBytes) bytes; last event:", stats.lastPressureEvent?.level as Any)
        // README-PURGER-END
        #expect(stats.purgedBytes == tiles.size)
        #expect(stats.purges[.criticalPressure]?.bytes == tiles.size)
        #expect(try tiles.markNonVolatile(0..<tiles.size).purgedRanges == [0..<tiles.size])
    }

    /// The example above and the README's Purger block are the same code.
    @Test func readmeShowsThisExample() throws {
        func lines(_ text: Substring) -> [String] {
            text.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.trimmingPrefix(while: { $0 == " " }) }.map(String.init)
                .filter { !$0.isEmpty }
        }
        let testFile = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        let begin = "// README-PURGER" + "-BEGIN", end = "// README-PURGER" + "-END"
        let example = try #require(testFile.firstRange(of: begin).flatMap { b in
            testFile.firstRange(of: end).map { testFile[b.upperBound..<$0.lowerBound] }
        })
        let section = try #require(readme.firstRange(of: "\n## Purger\n").map { readme[$0.upperBound...] })
        let block = try #require(section.firstRange(of: "```swift\nimport VRange\n").flatMap { b in
            section[b.upperBound...].firstRange(of: "```").map { section[b.upperBound..<$0.lowerBound] }
        })
        #expect(lines(example) == lines(block))
    }
}
