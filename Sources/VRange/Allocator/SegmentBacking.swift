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

/// The memory of one segment. An enum rather than a protocol so that the
/// lock/unlock path is statically dispatched; a shared-file case will join.
enum SegmentBacking: Sendable {
    case anonymous(VolatileRegion)

    /// Maps a segment of `byteCount` bytes (whole pages).
    init(source: SegmentSource, byteCount: Int) throws(VRangeError) {
        switch source {
        case .anonymous(let options):
            self = .anonymous(try VolatileRegion(byteCount: byteCount, options: options))
        }
    }

    var baseAddress: UnsafeMutableRawPointer {
        switch self { case .anonymous(let r): r.baseAddress }
    }

    var size: Int {
        switch self { case .anonymous(let r): r.size }
    }

    /// Marks whole pages volatile. The allocator only passes ranges it
    /// computed from its own segment, so an error here is a bug in VRange.
    @inline(__always)
    func markVolatile(_ bytes: Range<Int>) {
        switch self {
        case .anonymous(let r):
            do { try r.markVolatile(bytes) } catch { fatalError("VRange allocator: markVolatile(\(bytes)) of its own segment failed: \(error)") }
        }
    }

    /// Marks whole pages non-volatile; the region's result (purged pages come
    /// back zero-filled).
    @inline(__always)
    func markNonVolatile(_ bytes: Range<Int>) -> NonVolatileResult {
        switch self {
        case .anonymous(let r):
            do { return try r.markNonVolatile(bytes) } catch { fatalError("VRange allocator: markNonVolatile(\(bytes)) of its own segment failed: \(error)") }
        }
    }

    /// Discards the volatile pages of `bytes` now; returns the bytes released.
    func purge(_ bytes: Range<Int>) -> Int {
        switch self {
        case .anonymous(let r): (try? r.purge(bytes)) ?? 0
        }
    }

    /// Volatile bytes still resident in `bytes`, and purged bytes.
    func census(_ bytes: Range<Int>) -> (volatile: Int, purged: Int) {
        switch self {
        case .anonymous(let r):
            guard let s = try? r.status(bytes) else { return (0, 0) }
            return (s.volatileBytes, s.purgedBytes)
        }
    }

    /// Optimistic read of `bytes` while they stay volatile.
    func withVolatileAccess<Value>(
        _ bytes: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Value
    ) -> VolatileAccess<Value> {
        switch self {
        case .anonymous(let r):
            do { return try r.withVolatileAccess(bytes, body) } catch {
                preconditionFailure("VRange: optimistic access failed: \(error)")
            }
        }
    }

    /// Unmaps the segment (nothing may use it afterwards).
    func close() {
        switch self { case .anonymous(let r): r.close() }
    }
}
