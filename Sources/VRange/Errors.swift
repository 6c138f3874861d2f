// The library's public error type. Every failure is one of these cases;
// bad input never changes state.

/// A failed system call: its name and the `errno` it set.
public struct SystemError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The C function or ioctl that failed, e.g. `"madvise(MADV_DONTNEED)"`.
    public let call: String
    /// The `errno` value it returned.
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Everything a VRange operation can throw.
public enum VRangeError: Error, Equatable, Hashable, Sendable {
    /// The range holds no bytes.
    case emptyRange(offset: Int)
    /// The length is negative: the range ends before it starts. A `Range`
    /// too wide for `Int` to count (e.g. `Int.min..<Int.max`) is reported
    /// this way too, with its count wrapped (negative) as `length`.
    case reversedRange(offset: Int, length: Int)
    /// `offset + length` does not fit in an `Int`.
    case overflowingRange(offset: Int, length: Int)
    /// The offset or length is not a multiple of the region's page size.
    case misalignedRange(offset: Int, length: Int, pageSize: Int)
    /// The range starts before 0 or ends past the region's size.
    case outOfBounds(offset: Int, length: Int, size: Int)
    /// A size that cannot make a region (zero, negative or too large).
    case invalidSize(Int)
    /// The region was closed; nothing can be done with it any more.
    case closed
    /// The host lacks what the operation needs; the string says what.
    case unsupported(String)
    /// Optimistic accesses nested deeper than the library supports (8).
    case accessNestingTooDeep
    /// `limit` regions exist already in this process (the fault handler's
    /// table is static, so that the handler never allocates). Nothing is
    /// missing from the host: close a region first.
    case tooManyRegions(limit: Int)
    /// A system call failed.
    case system(SystemError)
    /// A data/sidecar pair offered to `VolatileFile` for adoption is not a
    /// valid shared volatile file; nothing was mapped or changed.
    case invalidSharedFile(SharedFileProblem)
    /// Every mapper slot of the shared file is taken by a live mapping (the
    /// file was created with `maxMappers: limit`).
    case tooManyMappers(limit: Int)
    /// The host cannot back the file with huge pages (none reserved, or the
    /// pool is too small); the string says what was found.
    case hugePagesUnavailable(String)
    /// The object was inherited across `fork()`: it belongs to the parent
    /// (a mapping's votes and pins are the parent's). Make a new mapping in
    /// the child.
    case inheritedAcrossFork
    /// A kernel or configuration file (or value) did not have the format it
    /// should: `path` names it (a file, or an environment variable), `reason`
    /// says what was wrong. Nothing was changed.
    case malformedFile(path: String, reason: String)
    /// A configuration value is out of range; the string says which and why.
    /// Nothing was changed.
    case invalidConfiguration(String)
    /// Another process that shares the file holds what this call needs (the
    /// purge lock, or a page its purge locked) and has made no progress for
    /// `VolatileFile.peerPatience`: it is alive (a dead one's locks are
    /// recovered at once) but stopped or stuck. `pid` is the process the
    /// file's purge record names (a hint written by that process, 0 when it
    /// named none). What the call had done is kept (a pin stays published);
    /// call again later.
    case peerNotResponding(pid: Int32)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
