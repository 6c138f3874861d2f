// Why a pair of descriptors is not a VolatileFile: the detail of
// VRangeError.invalidSharedFile, one case per check adoption makes.

/// Which of a shared file's two descriptors a problem concerns.
public enum SharedFileDescriptor: String, Sendable, Hashable {
    /// The memfd holding the data.
    case data
    /// The memfd holding the sidecar (header, mapper slots, page states).
    case sidecar
}

/// What is wrong with a data/sidecar pair offered for adoption. Every check
/// runs before anything is mapped: a hostile or truncated pair is rejected
/// with one of these, never a crash or an out-of-bounds access.
public enum SharedFileProblem: Sendable, Hashable, CustomStringConvertible {
    /// fstat refused the descriptor (closed, or not a descriptor): its errno.
    case badDescriptor(SharedFileDescriptor, errno: Int32)
    /// The descriptor is not a regular file (a pipe, socket, directory...).
    case notRegularFile(SharedFileDescriptor)
    /// Both descriptors refer to the same file.
    case sameFile
    /// The file cannot carry seals (`F_GET_SEALS` refused): not a memfd.
    case notSealable(SharedFileDescriptor)
    /// The file lacks `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, so a peer
    /// could resize it under the others. `seals` is what it has.
    case notSealed(SharedFileDescriptor, seals: Int32)
    /// The sidecar is shorter than what the check needs.
    case sidecarTooSmall(size: Int, needed: Int)
    /// The sidecar does not start with VRange's magic number.
    case badMagic(UInt64)
    /// The sidecar was written by another layout version.
    case unsupportedVersion(UInt32)
    /// The header claims a size other than this version's.
    case badHeaderSize(UInt32)
    /// The header's checksum does not match its contents.
    case checksumMismatch
    /// The page size is not a power of two between 4 KiB and 1 GiB.
    case invalidPageSize(Int)
    /// The header's page size differs from the data file's (its st_blksize).
    case pageSizeMismatch(header: Int, file: Int)
    /// The header's huge-page flag disagrees with the data file: `header`
    /// is the flag, `file` whether the data file is on hugetlbfs.
    case hugePagesMismatch(header: Bool, file: Bool)
    /// The page count is zero, too large, or disagrees with the data size.
    case invalidPageCount(Int)
    /// The mapper-slot count is outside 1...1024.
    case invalidSlotCount(Int)
    /// A stored offset differs from the one derived from the page count.
    case layoutMismatch(field: String)
    /// The sidecar's size differs from the layout's.
    case sidecarSizeMismatch(expected: Int, actual: Int)
    /// The data file's size differs from the header's.
    case dataSizeMismatch(expected: Int, actual: Int)
    /// The sidecar describes another data file (inode or device differ).
    case wrongDataFile
    /// A message on the socket carried other than exactly two descriptors.
    case missingDescriptors(received: Int)
    /// A message on the socket was not a VRange shared-file message.
    case badMessage

    public var description: String {
        switch self {
        case .badDescriptor(let d, let e): "the \(d) descriptor is invalid (fstat errno \(e))"
        case .notRegularFile(let d): "the \(d) descriptor is not a regular file"
        case .sameFile: "the data and sidecar descriptors are the same file"
        case .notSealable(let d): "the \(d) file cannot be sealed (not a memfd)"
        case .notSealed(let d, let s): "the \(d) file lacks F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL (has \(s))"
        case .sidecarTooSmall(let s, let n): "the sidecar has \(s) bytes, at least \(n) are needed"
        case .badMagic(let m): "the sidecar's magic number is wrong (\(m))"
        case .unsupportedVersion(let v): "sidecar layout version \(v) is not supported"
        case .badHeaderSize(let b): "the sidecar header claims \(b) bytes"
        case .checksumMismatch: "the sidecar header's checksum does not match"
        case .invalidPageSize(let p): "invalid page size \(p)"
        case .pageSizeMismatch(let h, let f): "the header's page size \(h) differs from the data file's \(f)"
        case .hugePagesMismatch(let h, let f):
            "the header \(h ? "claims" : "lacks") the huge-page flag, the data file is \(f ? "" : "not ")on hugetlbfs"
        case .invalidPageCount(let n): "invalid page count \(n)"
        case .invalidSlotCount(let n): "invalid mapper-slot count \(n)"
        case .layoutMismatch(let f): "the sidecar's \(f) differs from the layout derived from its page count"
        case .sidecarSizeMismatch(let e, let a): "the sidecar has \(a) bytes, its layout needs \(e)"
        case .dataSizeMismatch(let e, let a): "the data file has \(a) bytes, the header says \(e)"
        case .wrongDataFile: "the sidecar belongs to another data file"
        case .missingDescriptors(let n): "the message carried \(n) descriptors, not 2"
        case .badMessage: "the message is not a VRange shared-file message"
        }
    }
}
