// The typed layer over PurgeableCache: values that turn into bytes and back
// (strings, arrays of plain values, your own types), cached by key.

/// A value that a `PurgeableValueCache` stores as bytes.
public protocol PurgeableValue: Sendable {
    /// Calls `body` with the value's bytes.
    func withPurgeableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
    /// Makes the value back from bytes that `withPurgeableBytes` produced.
    init(purgeableBytes: UnsafeRawBufferPointer)
}

extension String: PurgeableValue {
    public func withPurgeableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var s = self
        return try s.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }

    public init(purgeableBytes: UnsafeRawBufferPointer) {
        self.init(decoding: purgeableBytes, as: UTF8.self)
    }
}

/// A plain element type (no references, any bit pattern valid) whose arrays
/// are stored by their bytes. Conform your own plain structs to it.
public protocol PurgeablePlainElement: BitwiseCopyable, Sendable {}

extension UInt8: PurgeablePlainElement {}
extension Int8: PurgeablePlainElement {}
extension UInt16: PurgeablePlainElement {}
extension Int16: PurgeablePlainElement {}
extension UInt32: PurgeablePlainElement {}
extension Int32: PurgeablePlainElement {}
extension UInt64: PurgeablePlainElement {}
extension Int64: PurgeablePlainElement {}
extension Int: PurgeablePlainElement {}
extension UInt: PurgeablePlainElement {}
extension Float: PurgeablePlainElement {}
extension Double: PurgeablePlainElement {}

extension Array: PurgeableValue where Element: PurgeablePlainElement {
    public func withPurgeableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(body)
    }

    public init(purgeableBytes: UnsafeRawBufferPointer) {
        let n = purgeableBytes.count / MemoryLayout<Element>.stride
        self.init(unsafeUninitializedCapacity: n) { out, count in
            UnsafeMutableRawBufferPointer(out).copyMemory(from: UnsafeRawBufferPointer(rebasing: purgeableBytes[0..<(n * MemoryLayout<Element>.stride)]))
            count = n
        }
    }
}

/// A `PurgeableCache` of typed values: each is stored as its bytes in a
/// purgeable buffer and made back on every hit.
public final class PurgeableValueCache<Key: Hashable & Sendable, Value: PurgeableValue>: Sendable {
    /// Regenerates the value of `key`.
    public typealias Rebuild = @Sendable (Key) throws -> Value

    /// The byte cache underneath (statistics, allocator, removal).
    public let bytes: PurgeableCache<Key>
    private let rebuild: Rebuild?

    /// Makes a cache. See `PurgeableCache.init`.
    public init(costLimit: Int = .max, allocator: VolatileAllocator? = nil, shards: Int = 16, rebuild: Rebuild? = nil) {
        self.bytes = PurgeableCache(costLimit: costLimit, allocator: allocator, shards: shards)
        self.rebuild = rebuild
    }

    /// Stores `value` under `key` (cost: its byte count unless given). An
    /// empty value (e.g. "") is stored and read back as empty.
    /// - Throws: what the allocator throws.
    public func setValue(_ value: Value, forKey key: Key, cost: Int? = nil) throws(VRangeError) {
        let r = value.withPurgeableBytes { raw in
            Result { () throws(VRangeError) in try bytes.setBytes(raw, forKey: key, cost: cost) }
        }
        try r.get()
    }

    /// The value of `key`, or nil when absent or purged (dropped then).
    public func value(forKey key: Key) -> Value? {
        bytes.withBytes(forKey: key) { Value(purgeableBytes: $0) }
    }

    /// The value of `key`, rebuilt (once, for all concurrent requests) when
    /// missing or purged. See `PurgeableCache.fetchBytes(forKey:rebuild:)`.
    /// One call is one lookup in the statistics (a hit, a miss or a purged
    /// miss), as for `fetchBytes`.
    public func fetchValue(forKey key: Key, rebuild: Rebuild? = nil) throws -> Value {
        try bytes.fetch(key, rebuild: byteRebuild(rebuild)) { Value(purgeableBytes: $0) }
    }

    /// `fetchValue` for Swift concurrency (waiters suspend, never block).
    public func fetchValue(forKey key: Key, rebuild: Rebuild? = nil) async throws -> Value {
        try await bytes.fetch(key, rebuild: byteRebuild(rebuild)) { Value(purgeableBytes: $0) }
    }

    /// Removes the value of `key`; whether there was one.
    @discardableResult
    public func removeValue(forKey key: Key) -> Bool { bytes.removeValue(forKey: key) }

    /// Counters and contents of the byte cache.
    public var statistics: CacheStatistics { bytes.statistics }

    private func byteRebuild(_ call: Rebuild?) -> PurgeableCache<Key>.Rebuild? {
        guard let make = call ?? rebuild else { return nil }
        return { key in try make(key).withPurgeableBytes { [UInt8]($0) } }
    }
}
