// Adoption validates everything: hostile or truncated sidecars and wrong
// descriptors, table-driven, each rejected with its own typed error and
// nothing mapped; plus the metadata budget of the sidecar layout.
import CVRange
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// A sealed memfd holding `bytes`, `size` long (default: bytes.count).
func sealedMemfd(_ bytes: [UInt8], size: Int? = nil, seals: Kernel.Seals = .fixedSize) throws -> Int32 {
    let (fd, _) = try Kernel.sealableMemfd(name: "vrange-hostile", hugePages: false)
    try Kernel.truncate(fd: fd, length: size ?? bytes.count)
    if !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, min($0.count, size ?? $0.count), 0) }
        precondition(n >= 0)
    }
    if !seals.isEmpty { try Kernel.addSeals(fd: fd, seals) }
    return fd
}

@Suite("Shared files, adoption") struct FileAdoptionTests {
    /// One way to break a pair: what to do, and the error it must give.
    struct Hostile: CustomStringConvertible, Sendable {
        let name: String
        let expected: SharedFileProblem
        /// Gets a valid data descriptor, header and layout; returns the pair to adopt.
        let make: @Sendable (_ data: Int32, _ header: SidecarHeader, _ layout: SidecarLayout) throws -> SharedFileDescriptors
        var description: String { name }
    }

    static func resum(_ h: SidecarHeader) -> [UInt8] {
        var h = h
        h.checksum = SidecarHeader.checksum(of: h.encoded())
        return h.encoded()
    }

    static func sidecar(_ header: [UInt8], _ layout: SidecarLayout, size: Int? = nil) throws -> Int32 {
        try sealedMemfd(header, size: size ?? layout.totalSize)
    }

    /// The seals a new memfd has (F_SEAL_EXEC where MFD_NOEXEC_SEAL was accepted).
    static let baseSeals: Int32 = {
        let (fd, _) = try! Kernel.sealableMemfd(name: "probe", hugePages: false)
        defer { Kernel.close(fd: fd) }
        return try! Kernel.seals(fd: fd).rawValue
    }()

    static let cases: [Hostile] = [
        Hostile(name: "empty sidecar", expected: .sidecarTooSmall(size: 0, needed: 128)) { d, _, _ in
            .init(data: d, sidecar: try sealedMemfd([], size: 0))
        },
        Hostile(name: "truncated header", expected: .sidecarTooSmall(size: 100, needed: 128)) { d, h, _ in
            .init(data: d, sidecar: try sealedMemfd(Array(h.encoded().prefix(100))))
        },
        Hostile(name: "wrong magic", expected: .badMagic(0x4141_4141_4141_4141)) { d, h, l in
            var x = h; x.magic = 0x4141_4141_4141_4141
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "other version", expected: .unsupportedVersion(2)) { d, h, l in
            var x = h; x.version = 2
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "header size", expected: .badHeaderSize(64)) { d, h, l in
            var x = h; x.headerBytes = 64
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "flipped byte, checksum not fixed", expected: .checksumMismatch) { d, h, l in
            var x = h; x.pageCount += 1
            return .init(data: d, sidecar: try sidecar(x.encoded(), l))
        },
        Hostile(name: "page size not a power of two", expected: .invalidPageSize(5000)) { d, h, l in
            var x = h; x.pageSize = 5000
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "page size of another file", expected: .pageSizeMismatch(header: 8192, file: Kernel.pageSize)) { d, h, l in
            var x = h; x.pageSize = 8192; x.dataSize = 8192 * x.pageCount
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "zero pages", expected: .invalidPageCount(0)) { d, h, l in
            var x = h; x.pageCount = 0; x.dataSize = 0
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "page count beyond the limit", expected: .invalidPageCount((1 << 40) + 1)) { d, h, l in
            var x = h; x.pageCount = (1 << 40) + 1; x.dataSize = x.pageSize &* x.pageCount
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "data size disagreeing with the pages", expected: .invalidPageCount(8)) { d, h, l in
            var x = h; x.dataSize += 1
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "no mapper slots", expected: .invalidSlotCount(0)) { d, h, l in
            var x = h; x.slotCount = 0
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "a million slots", expected: .invalidSlotCount(1_000_000)) { d, h, l in
            var x = h; x.slotCount = 1_000_000
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "slot maps pointing elsewhere", expected: .layoutMismatch(field: "slot maps offset")) { d, h, l in
            var x = h; x.slotMapsOffset = 1 << 40
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "content map overlapping the header", expected: .layoutMismatch(field: "content map offset")) { d, h, l in
            var x = h; x.contentMapOffset = 64
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "unknown flag", expected: .layoutMismatch(field: "flags")) { d, h, l in
            var x = h; x.flags = 0x80
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "sidecar shorter than its layout", expected: .sidecarSizeMismatch(expected: 8192 * 0 + 0, actual: 0)) { d, h, l in
            .init(data: d, sidecar: try sidecar(h.encoded(), l, size: l.totalSize - 4096))
        },
        Hostile(name: "sidecar of another data file", expected: .wrongDataFile) { d, h, l in
            var x = h; x.dataInode &+= 1
            return .init(data: d, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "data file of another size", expected: .dataSizeMismatch(expected: 8 * Kernel.pageSize, actual: 16 * Kernel.pageSize)) { _, h, l in
            let other = try sealedMemfd([], size: 16 * Kernel.pageSize)
            let info = try Kernel.fileInfo(fd: other)
            var x = h; x.dataInode = info.inode
            return .init(data: other, sidecar: try sidecar(resum(x), l))
        },
        Hostile(name: "unsealed sidecar", expected: .notSealed(.sidecar, seals: baseSeals)) { d, h, l in
            .init(data: d, sidecar: try sealedMemfd(h.encoded(), size: l.totalSize, seals: []))
        },
        Hostile(name: "sidecar sealed without F_SEAL_GROW", expected: .notSealed(.sidecar, seals: baseSeals | vr_F_SEAL_SHRINK | vr_F_SEAL_SEAL)) { d, h, l in
            .init(data: d, sidecar: try sealedMemfd(h.encoded(), size: l.totalSize, seals: [.shrink, .seal]))
        },
        Hostile(name: "unsealed data", expected: .notSealed(.data, seals: baseSeals)) { _, h, l in
            let other = try sealedMemfd([], size: 8 * Kernel.pageSize, seals: [])
            return .init(data: other, sidecar: try sidecar(h.encoded(), l))
        },
        Hostile(name: "data is not a memfd", expected: .notSealable(.data)) { _, h, l in
            let path = "/tmp/vrange-not-memfd-\(getpid())"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            unlink(path)
            return .init(data: fd, sidecar: try sidecar(h.encoded(), l))
        },
        Hostile(name: "data is a socket", expected: .notRegularFile(.data)) { _, h, l in
            let (a, _) = try Kernel.socketPair()
            return .init(data: a, sidecar: try sidecar(h.encoded(), l))
        },
        Hostile(name: "closed descriptor", expected: .badDescriptor(.sidecar, errno: EBADF)) { d, _, _ in
            .init(data: d, sidecar: 999_999)
        },
        Hostile(name: "the same file twice", expected: .sameFile) { d, _, _ in
            .init(data: d, sidecar: d)
        },
    ]

    @Test(arguments: cases)
    func hostilePairIsRejected(_ c: Hostile) throws {
        let valid = try VolatileFile(byteCount: 8 * page)
        let layout = valid.layout
        var header = SidecarHeader(decoding: {
            var b = [UInt8](repeating: 0, count: 128)
            _ = b.withUnsafeMutableBytes { pread(valid.descriptors.sidecar, $0.baseAddress, 128, 0) }
            return b
        }())
        header.checksum = SidecarHeader.checksum(of: header.encoded())
        let pair = try c.make(valid.descriptors.data, header, layout)
        var expected = c.expected
        if case .sidecarSizeMismatch = expected {
            expected = .sidecarSizeMismatch(expected: layout.totalSize, actual: layout.totalSize - 4096)
        }
        #expect(throws: VRangeError.invalidSharedFile(expected), "\(c.name)") {
            _ = try VolatileFile(adopting: pair)
        }
        // Nothing was taken: the caller's descriptors are still open.
        if pair.sidecar != 999_999 && pair.sidecar != valid.descriptors.data {
            #expect(fcntl(pair.sidecar, F_GETFD) >= 0)
            Kernel.close(fd: pair.sidecar)
        }
        if pair.data != valid.descriptors.data { Kernel.close(fd: pair.data) }
    }

    @Test func distinctProblemsInTheTable() {
        #expect(Self.cases.count >= 10)
        #expect(Set(Self.cases.map { String(describing: $0.expected).prefix(14) }).count >= 10)
    }

    @Test func aValidPairIsAdopted() throws {
        let f = try VolatileFile(byteCount: 8 * page)
        try f.markVolatile(bytes(0..<2))
        let d = SharedFileDescriptors(data: try Kernel.duplicate(fd: f.descriptors.data),
                                      sidecar: try Kernel.duplicate(fd: f.descriptors.sidecar))
        let g = try VolatileFile(adopting: d)
        #expect(try g.status().fileVolatileBytes == 2 * page)
    }

    @Test func socketMessagesWithoutThePairAreRejected() throws {
        let (a, b) = try Kernel.socketPair()
        defer { Kernel.close(fd: a); Kernel.close(fd: b) }
        try Kernel.send(socket: a, payload: Array("VRF1".utf8), descriptors: [a])
        #expect(throws: VRangeError.invalidSharedFile(.missingDescriptors(received: 1))) { try VolatileFile(receivingFrom: b) }
        try Kernel.send(socket: a, payload: Array("HELO".utf8), descriptors: [])
        #expect(throws: VRangeError.invalidSharedFile(.badMessage)) { try VolatileFile(receivingFrom: b) }
    }

    /// Metadata at 1, 8 and 32 mappers for 1 GiB and 64 MiB files (the
    /// budget of issue 7: at most 0.2 % of the file at 8 mappers).
    @Test func metadataBudget() throws {
        for size in [1 << 30, 64 << 20] {
            let layout = try #require(SidecarLayout(pageSize: 4096, pageCount: size / 4096, slotCount: 32))
            for mappers in [1, 8, 32] {
                let pct = 100 * Double(layout.residentBytes(mappers: mappers)) / Double(size)
                print("[metadata] \(size >> 20) MiB file, \(mappers) mappers: \(layout.residentBytes(mappers: mappers)) B = \(pct) %")
                if mappers <= 8 { #expect(pct <= 0.2) }
            }
        }
    }
}
