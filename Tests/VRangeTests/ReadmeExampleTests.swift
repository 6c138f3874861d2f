// The usage example of README.md, compiled and run. Keep the two in step:
// the block between the markers is copied verbatim from the README.
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
}
