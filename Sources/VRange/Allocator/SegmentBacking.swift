// What a segment's pages live in, and every call the allocator makes into a
// region. Anonymous regions today; a shared VolatileFile mapping is the
// second case once files land (DESIGN.md §1b, §8). Keeping every region call
// here is deliberate: the region API is being reworked (inlinable marks,
// markNonVolatile without @discardableResult), and the allocator's use of it
// should change in one place.

/// Where a `VolatileAllocator` takes its segments from.
public enum SegmentSource: Sendable, Equatable {
    /// Private anonymous `VolatileRegion`s, one per segment, made with these
    /// options (fault mechanism, kernel-driven purging). Process-private.
    case anonymous(VolatileRegion.Options = VolatileRegion.Options())
}

/// The memory of one segment. A struct over the concrete region rather than
/// a protocol or an enum with payloads, so that the lock/unlock path is
/// statically dispatched and retains nothing (an enum payload is copied, and
/// retained, by every switch: that cost 10–20 ns a lock/unlock pair). A
/// shared-file mapping becomes a second stored kind here, chosen by `source`.
struct SegmentBacking: Sendable {
    let region: VolatileRegion

    /// Maps a segment of `byteCount` bytes (whole pages).
    init(source: SegmentSource, byteCount: Int) throws(VRangeError) {
        switch source {
        case .anonymous(let options):
            region = try VolatileRegion(byteCount: byteCount, options: options)
        }
    }

    var baseAddress: UnsafeMutableRawPointer {
        region.baseAddress
    }

    var size: Int {
        region.size
    }

    /// Marks whole pages volatile. The allocator only passes ranges it
    /// computed from its own segment, so an error here is a bug in VRange.
    @inline(__always)
    func markVolatile(_ bytes: Range<Int>) {
        do { try region.markVolatile(bytes) } catch { fatalError("VRange allocator: markVolatile(\(bytes)) of its own segment failed: \(error)") }
    }

    /// Marks whole pages non-volatile; the region's result (purged pages come
    /// back zero-filled).
    @inline(__always)
    func markNonVolatile(_ bytes: Range<Int>) -> NonVolatileResult {
        do { return try region.markNonVolatile(bytes) } catch { fatalError("VRange allocator: markNonVolatile(\(bytes)) of its own segment failed: \(error)") }
    }

    /// Discards the volatile pages of `bytes` now; returns the bytes released.
    func purge(_ bytes: Range<Int>) -> Int {
        (try? region.purge(bytes)) ?? 0
    }

    /// Volatile bytes still resident in `bytes`, and purged bytes.
    func census(_ bytes: Range<Int>) -> (volatile: Int, purged: Int) {
        guard let s = try? region.status(bytes) else { return (0, 0) }
        return (s.volatileBytes, s.purgedBytes)
    }

    /// Optimistic read of `bytes` while they stay volatile.
    func withVolatileAccess<Value>(
        _ bytes: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Value
    ) -> VolatileAccess<Value> {
        do { return try region.withVolatileAccess(bytes, body) } catch {
            preconditionFailure("VRange: optimistic access failed: \(error)")
        }
    }

    /// Unmaps the segment (nothing may use it afterwards).
    func close() {
        region.close()
    }
}
