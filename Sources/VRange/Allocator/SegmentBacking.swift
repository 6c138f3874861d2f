// What a segment's pages live in, and every call the allocator makes into
// them: a private anonymous VolatileRegion, or a shared VolatileFile (a memfd
// with its sidecar) mapped once by the allocator (DESIGN.md §1b, §8). Every
// region or mapping call the allocator makes is here, so that the allocator
// above has one code path for both kinds.

/// Where a `VolatileAllocator` takes its segments from.
public enum SegmentSource: Sendable, Equatable {
    /// Private anonymous `VolatileRegion`s, one per segment, made with these
    /// options (fault mechanism, kernel-driven purging). Process-private.
    case anonymous(VolatileRegion.Options = VolatileRegion.Options())
    /// Shared memfd-backed `VolatileFile`s, one per segment, each mapped
    /// once, shared, by the allocator (`FileMapping`). A buffer's bytes are
    /// then a range of a file that other processes can map
    /// (`PurgeableBuffer.fileLocation`); the allocator's mapping is one
    /// mapper of it, so a page is purged only when every live mapper voted
    /// it volatile and none pins it (DESIGN.md §1c): a process that maps a
    /// buffer and has not voted keeps its pages. Purging punches holes
    /// (`fallocate`), which drops the pages for every process at once.
    ///
    /// Huge pages (`hugePages`) and private mappings are refused by
    /// `VolatileAllocator.init` (`.unsupported`): the allocator carves spans
    /// of single pages, and a private mapping neither votes nor pins.
    case sharedFile(VolatileFile.Options = VolatileFile.Options(), mapping: FileMapping.Options = FileMapping.Options())

    /// Why this source cannot back an allocator, or nil.
    var unsupportedReason: String? {
        guard case .sharedFile(let file, let mapping) = self else { return nil }
        if file.hugePages { return "a shared-file allocator cannot use huge pages (its spans are single pages)" }
        if mapping.privateMapping { return "a shared-file allocator needs a shared mapping (a private one neither votes nor pins)" }
        return nil
    }
}

/// The memory of one segment: exactly one of `region` (anonymous) and
/// `mapping` (shared file) is set. The hot paths reach them through
/// `Unmanaged` references and a nil test, so that lock/unlock is statically
/// dispatched and retains nothing (an enum with class payloads is copied,
/// and retained, by every switch: that cost 10–20 ns a lock/unlock pair);
/// `owners` keeps them alive.
struct SegmentBacking: Sendable {
    private let region: Unmanaged<VolatileRegion>?
    private let mapping: Unmanaged<FileMapping>?
    /// The strong references: the region, or the file and its mapping.
    private let owners: [AnyObject & Sendable]
    /// The segment's file (shared-file segments only).
    let file: VolatileFile?

    var baseAddress: UnsafeMutableRawPointer {
        if let region { return region.takeUnretainedValue().baseAddress }
        return mapping.unsafelyUnwrapped.takeUnretainedValue().baseAddress
    }

    var size: Int {
        if let region { return region.takeUnretainedValue().size }
        return mapping.unsafelyUnwrapped.takeUnretainedValue().size
    }

    /// Maps a segment of `byteCount` bytes (whole pages).
    init(source: SegmentSource, byteCount: Int) throws(VRangeError) {
        switch source {
        case .anonymous(let options):
            let r = try VolatileRegion(byteCount: byteCount, options: options)
            (region, mapping, file, owners) = (.passUnretained(r), nil, nil, [r])
        case .sharedFile(let fileOptions, let mappingOptions):
            let f = try VolatileFile(byteCount: byteCount, options: fileOptions)
            let m: FileMapping
            do { m = try f.map(options: mappingOptions) } catch {
                f.close()
                throw error
            }
            (region, mapping, file, owners) = (nil, .passUnretained(m), f, [m, f])
        }
    }

    /// Marks whole pages volatile (a vote, for a file). The allocator only
    /// passes ranges it computed from its own segment, so an error here is a
    /// bug in VRange.
    @inline(__always)
    func markVolatile(_ bytes: Range<Int>) {
        do {
            if let region {
                try region._withUnsafeGuaranteedRef { try $0.markVolatile(bytes) }
            } else {
                try mapping.unsafelyUnwrapped._withUnsafeGuaranteedRef { try $0.markVolatile(bytes) }
            }
        } catch {
            fatalError("VRange allocator: markVolatile(\(bytes)) of its own segment failed: \(error)")
        }
    }

    /// Marks whole pages non-volatile (a pin, for a file); the result (purged
    /// pages come back zero-filled).
    @inline(__always)
    func markNonVolatile(_ bytes: Range<Int>) -> NonVolatileResult {
        do {
            if let region {
                return try region._withUnsafeGuaranteedRef { try $0.markNonVolatile(bytes) }
            }
            return try mapping.unsafelyUnwrapped._withUnsafeGuaranteedRef { try $0.markNonVolatile(bytes) }
        } catch {
            fatalError("VRange allocator: markNonVolatile(\(bytes)) of its own segment failed: \(error)")
        }
    }

    /// Discards the volatile pages of `bytes` now (`MADV_DONTNEED`, or a
    /// punch-hole of the pages every mapper of the file voted); returns the
    /// bytes released.
    func purge(_ bytes: Range<Int>) -> Int {
        if let region { return (try? region.takeUnretainedValue().purge(bytes)) ?? 0 }
        return (try? file?.purge(bytes)) ?? 0
    }

    /// Volatile bytes still resident in `bytes` (voted and not lost, for a
    /// file), and purged bytes (lost, for a file).
    func census(_ bytes: Range<Int>) -> (volatile: Int, purged: Int) {
        if let region {
            guard let s = try? region.takeUnretainedValue().status(bytes) else { return (0, 0) }
            return (s.volatileBytes, s.purgedBytes)
        }
        guard let s = try? mapping.unsafelyUnwrapped.takeUnretainedValue().status(bytes) else { return (0, 0) }
        return (s.votedBytes, s.lostBytes)
    }

    /// Optimistic read of `bytes` while they stay volatile.
    func withVolatileAccess<Value>(
        _ bytes: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Value
    ) -> VolatileAccess<Value> {
        do {
            if let region { return try region.takeUnretainedValue().withVolatileAccess(bytes, body) }
            return try mapping.unsafelyUnwrapped.takeUnretainedValue().withVolatileAccess(bytes, body)
        } catch {
            preconditionFailure("VRange: optimistic access failed: \(error)")
        }
    }

    /// Unmaps the segment (nothing may use it afterwards); a file segment's
    /// memfds close too (other processes' descriptors keep the file).
    func close() {
        if let region { region.takeUnretainedValue().close() }
        if let mapping { mapping.takeUnretainedValue().close() }
        file?.close()
    }
}
