// Regressions of the second hostile review of issue 18 (files, allocator,
// purger): each failed before its fix.
import Testing
import Synchronization
@testable import VRange

@Suite("Issue 18, second review: files and numbers") struct SecondReviewRegressionTests {
    /// Durations beyond Int64.max seconds (`Duration` has 128 bits): their
    /// `components` trapped (SIGILL) in the allocator's and the purger's
    /// conversions. Now they saturate.
    @Test func durationsBeyondInt64SecondsSaturate() throws {
        let huge = Duration.seconds(Int64.max) * 10
        #expect(huge.saturatingComponents == (Int64.max, 0))
        #expect((Duration.zero - huge).saturatingComponents == (Int64.min, 0))
        #expect(huge.milliseconds == .max)
        #expect(huge.nanoseconds == .max)
        #expect((Duration.zero - huge).milliseconds == .min)
        #expect(VolatileAllocator.clampedMilliseconds(huge) == UInt32(Int32.max))
        let a = try VolatileAllocator(options: .init(releaseDelay: huge))
        _ = a.releaseFreeMemory(olderThan: huge)
    }

    /// A pin that passed its check before close() wrote the mapping's pin
    /// record after close() had freed it (a use after free; 26 of 30 runs
    /// of the hostile probe saw the freed block change). The record is
    /// released at deinit now: the write lands in memory that is still the
    /// mapping's, and the mapping's later calls are `.closed`.
    @Test func pinHeldAcrossCloseWritesNoFreedMemory() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        let m = try f.map()
        let record = m.handlerMetadata
        try m.markNonVolatile(bytes(0..<1))
        m.close()
        // After close(), the record is still allocated and still the
        // mapping's: writing it (as a pin in flight would) is harmless, and
        // malloc has not handed it out (it would be reused at once by the
        // allocation below if it had been freed).
        // The same size as the record (2 words + 1 pin word for 8 pages):
        // glibc's tcache hands a freed block of that size out at once.
        let probe = UnsafeMutablePointer<UInt64>.allocate(capacity: 3)
        defer { probe.deallocate() }
        #expect(UnsafeMutableRawPointer(probe) != UnsafeMutableRawPointer(record))
        #expect(throws: VRangeError.closed) { try m.markNonVolatile(bytes(0..<1)) }
    }
}
