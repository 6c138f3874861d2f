// Adoption checks: everything about a data/sidecar pair is verified before
// anything is mapped — descriptors, seals, the header (magic, version,
// checksum), the huge-page flag against the data file's filesystem, the geometry, every offset (recomputed from the validated page
// count, never read), and both files' sizes and identity.
import CVRange

/// What a validated pair is.
struct ValidatedPair: Sendable {
    let layout: SidecarLayout
    let header: SidecarHeader
    var hugePages: Bool { header.flags & SidecarLayout.hugePagesFlag != 0 }
}

enum SidecarValidation {
    /// Checks the pair; throws the first problem found.
    static func validate(data: Int32, sidecar: Int32) throws(VRangeError) -> ValidatedPair {
        func info(_ fd: Int32, _ which: SharedFileDescriptor) throws(VRangeError) -> Kernel.FileInfo {
            do { return try Kernel.fileInfo(fd: fd) } catch {
                throw .invalidSharedFile(.badDescriptor(which, errno: error.errno))
            }
        }
        let dataInfo = try info(data, .data)
        let sideInfo = try info(sidecar, .sidecar)
        guard dataInfo.isRegular else { throw .invalidSharedFile(.notRegularFile(.data)) }
        guard sideInfo.isRegular else { throw .invalidSharedFile(.notRegularFile(.sidecar)) }
        if dataInfo.inode == sideInfo.inode && dataInfo.device == sideInfo.device {
            throw .invalidSharedFile(.sameFile)
        }
        for (fd, which) in [(data, SharedFileDescriptor.data), (sidecar, .sidecar)] {
            let seals: Kernel.Seals
            do { seals = try Kernel.seals(fd: fd) } catch { throw .invalidSharedFile(.notSealable(which)) }
            guard seals.isSuperset(of: .fixedSize) else {
                throw .invalidSharedFile(.notSealed(which, seals: seals.rawValue))
            }
        }
        guard sideInfo.size >= SidecarLayout.headerBytes else {
            throw .invalidSharedFile(.sidecarTooSmall(size: sideInfo.size, needed: SidecarLayout.headerBytes))
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SidecarLayout.headerBytes, alignment: 8)
        defer { buffer.deallocate() }
        do { try Kernel.read(fd: sidecar, into: buffer, at: 0) } catch { throw .system(error) }
        let bytes = Array(buffer)
        let header = SidecarHeader(decoding: bytes)
        let layout = try check(header, checksum: SidecarHeader.checksum(of: bytes), dataInfo: dataInfo)
        guard sideInfo.size == layout.totalSize else {
            throw .invalidSharedFile(.sidecarSizeMismatch(expected: layout.totalSize, actual: sideInfo.size))
        }
        guard dataInfo.size == layout.dataSize else {
            throw .invalidSharedFile(.dataSizeMismatch(expected: layout.dataSize, actual: dataInfo.size))
        }
        guard header.dataInode == dataInfo.inode, header.dataDevice == dataInfo.device else {
            throw .invalidSharedFile(.wrongDataFile)
        }
        return ValidatedPair(layout: layout, header: header)
    }

    /// The header's own checks, in order; returns the layout it describes.
    static func check(_ h: SidecarHeader, checksum: UInt64, dataInfo: Kernel.FileInfo) throws(VRangeError) -> SidecarLayout {
        guard h.magic == SidecarLayout.magic else { throw .invalidSharedFile(.badMagic(h.magic)) }
        guard h.version == SidecarLayout.version else { throw .invalidSharedFile(.unsupportedVersion(h.version)) }
        guard h.headerBytes == UInt32(SidecarLayout.headerBytes) else {
            throw .invalidSharedFile(.badHeaderSize(h.headerBytes))
        }
        guard h.checksum == checksum else { throw .invalidSharedFile(.checksumMismatch) }
        let pageSize = Int(truncatingIfNeeded: h.pageSize)
        guard h.pageSize >= 4096, h.pageSize <= 1 << 30, h.pageSize & (h.pageSize - 1) == 0 else {
            throw .invalidSharedFile(.invalidPageSize(pageSize))
        }
        // The data file's real page size and filesystem, not what the header
        // says: a hugetlbfs file is used in huge pages (no zero page, no
        // partial page), any other in the system's pages (tmpfs may report a
        // transparent-huge-page st_blksize that is not its unit).
        let hugeHeader = h.flags & SidecarLayout.hugePagesFlag != 0
        guard hugeHeader == dataInfo.isHugetlbfs else {
            throw .invalidSharedFile(.hugePagesMismatch(header: hugeHeader, file: dataInfo.isHugetlbfs))
        }
        let realPageSize = dataInfo.isHugetlbfs ? dataInfo.blockSize : Kernel.pageSize
        guard pageSize == realPageSize else {
            throw .invalidSharedFile(.pageSizeMismatch(header: pageSize, file: realPageSize))
        }
        let pageCount = Int(truncatingIfNeeded: h.pageCount)
        let (product, overflow) = pageSize.multipliedReportingOverflow(by: pageCount)
        guard h.pageCount > 0, h.pageCount <= UInt64(SidecarLayout.maxPageCount), !overflow,
              h.dataSize == UInt64(product) else {
            throw .invalidSharedFile(.invalidPageCount(pageCount))
        }
        let slotCount = Int(h.slotCount)
        guard let layout = SidecarLayout(pageSize: pageSize, pageCount: pageCount, slotCount: slotCount) else {
            throw .invalidSharedFile(.invalidSlotCount(slotCount))
        }
        let expected = SidecarHeader(layout: layout, dataInode: h.dataInode, dataDevice: h.dataDevice,
                                     hugePages: h.flags & SidecarLayout.hugePagesFlag != 0)
        let fields: [(String, UInt64, UInt64)] = [
            ("control offset", h.controlOffset, expected.controlOffset),
            ("slot table offset", h.slotTableOffset, expected.slotTableOffset),
            ("content map offset", h.contentMapOffset, expected.contentMapOffset),
            ("file map offset", h.fileMapOffset, expected.fileMapOffset),
            ("slot maps offset", h.slotMapsOffset, expected.slotMapsOffset),
            ("slot map stride", h.slotMapStride, expected.slotMapStride),
            ("total size", h.totalSize, expected.totalSize),
            ("flags", UInt64(h.flags), UInt64(h.flags & SidecarLayout.hugePagesFlag)),
        ]
        for (name, stored, derived) in fields where stored != derived {
            throw .invalidSharedFile(.layoutMismatch(field: name))
        }
        return layout
    }
}
