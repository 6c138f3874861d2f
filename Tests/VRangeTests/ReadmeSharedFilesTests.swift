// The "Shared files" example of README.md, compiled and run. The block
// between the markers is the README's second Swift block, verbatim.
import Foundation
import Testing
import VRange

@Suite("README shared files") struct ReadmeSharedFilesTests {
    @Test func sharedFilesExample() throws {
        // README-SHARED-BEGIN
        let file = try VolatileFile(byteCount: 4 << 20)       // memfd + sidecar, sealed
        let cache = try file.map()                             // this process's mapping
        let block = 0..<(4 * file.pageSize)

        cache.bytes[block.lowerBound] = 7                      // fill it while pinned
        try cache.markVolatile(block)                          // this mapper's vote: may go

        // Share with another process: it adopts the pair (validated) and maps it.
        var fds: [Int32] = [0, 0]
        _ = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds)
        try file.send(over: fds[0])
        let other = try VolatileFile(receivingFrom: fds[1])   // in the other process
        let theirs = try other.map()
        try theirs.markVolatile(block)                         // every mapper voted: purgeable

        _ = try other.purgeAll()                               // punch-hole, for every process

        let result = try cache.markNonVolatile(block)          // pin: needed again
        if result.wasPurged { print("rebuild", result.purgedRanges) }  // each party learns
        // README-SHARED-END
        #expect(result.purgedRanges == [block])
        #expect(cache.bytes[block.lowerBound] == 0)
        #expect(try theirs.markNonVolatile(block).purgedRanges == [block])
        close(fds[0]); close(fds[1])
    }

    @Test func readmeShowsThisExample() throws {
        func lines(_ text: Substring) -> [String] {
            text.split(separator: "\n").map { $0.trimmingPrefix(while: { $0 == " " }) }.map(String.init)
                .filter { !$0.isEmpty }
        }
        let testFile = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        let begin = "// README-SHARED" + "-BEGIN", end = "// README-SHARED" + "-END"
        let example = try #require(testFile.firstRange(of: begin).flatMap { b in
            testFile.firstRange(of: end).map { testFile[b.upperBound..<$0.lowerBound] }
        })
        let opening = "```swift\nimport VRange\nimport Glibc\n"
        let block = try #require(readme.firstRange(of: opening).flatMap { b in
            readme[b.upperBound...].firstRange(of: "```").map { readme[b.upperBound..<$0.lowerBound] }
        })
        #expect(lines(example) == lines(block))
    }
}
