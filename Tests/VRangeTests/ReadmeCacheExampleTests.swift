// The cache-layer example of README.md, compiled and run. Keep the two in
// step: the block between the markers is the README's "Caching" block.
import Foundation
import Testing
import VRange

@Suite("README cache example") struct ReadmeCacheExampleTests {
    @Test func cacheExample() throws {
        // README-CACHE-EXAMPLE-BEGIN
        @Sendable func decodeTile(_ id: Int) throws -> [UInt8] {   // your expensive work
            [UInt8](repeating: UInt8(id % 256), count: 64 << 10)
        }

        // Values live in purgeable memory: memory pressure may discard them
        // while nobody reads them, instead of swapping or OOM-killing you.
        let tiles = PurgeableCache<Int>(costLimit: 256 << 20, rebuild: decodeTile)

        let tile = try tiles.fetchBytes(forKey: 7)    // decoded once; concurrent callers share it
        let first = tiles.withBytes(forKey: 7) { bytes in bytes[0] }  // no copy; nil if purged

        // What a purger does under pressure (register tiles.allocator with one):
        tiles.allocator.forEachPurgeUnit { unit in _ = tiles.allocator.purge(unit: unit.id) }

        print(tiles.bytes(forKey: 7) == nil)          // true: a purged entry is dropped...
        _ = try tiles.fetchBytes(forKey: 7)           // ...and rebuilt on demand
        print(tiles.statistics.purgedMisses, tiles.statistics.rebuilds)  // 1 2

        // The allocator underneath, for buffers you manage yourself:
        var buffer = try tiles.allocator.allocate(byteCount: 1 << 20)  // starts locked
        buffer.withUnsafeMutableBytes { $0[0] = 1 }
        buffer.unlock()                               // may be purged from now on
        let result = buffer.lock()                    // needed again
        if result.wasPurged { print("lost", result.purgedRanges) }     // exactly which bytes
        // README-CACHE-EXAMPLE-END
        #expect(tile.count == 64 << 10 && first == 7)
        #expect(tiles.statistics.purgedMisses == 1 && tiles.statistics.rebuilds == 2)
        #expect(!result.wasPurged && buffer.isLocked)
    }

    /// The example above and the README's cache block are the same code.
    @Test func readmeShowsThisExample() throws {
        func lines(_ text: String) -> [String] {
            text.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.trimmingPrefix(while: { $0 == " " }) }.map(String.init)
                .filter { !$0.isEmpty }
        }
        let testFile = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        let begin = "// README-CACHE-EXAMPLE" + "-BEGIN", end = "// README-CACHE-EXAMPLE" + "-END"
        let example = try #require(testFile.firstRange(of: begin).flatMap { b in
            testFile.firstRange(of: end).map { testFile[b.upperBound..<$0.lowerBound] }
        })
        let opening = "```swift\nimport VRange\n\n@Sendable func decodeTile"
        let block = try #require(readme.firstRange(of: opening).flatMap { b in
            readme[b.lowerBound...].dropFirst("```swift\nimport VRange\n".count).firstRange(of: "```").map {
                readme[readme.index(b.lowerBound, offsetBy: "```swift\nimport VRange\n".count)..<$0.lowerBound]
            }
        }, "README.md has no block starting with \(opening)")
        #expect(lines(String(example)) == lines(String(block)))
    }
}
