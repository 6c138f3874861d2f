// The sidecar's layout, version 1: where everything is, derived from the
// page count and slot count alone (an adopter recomputes it and compares,
// never trusts a stored offset), and the header that records it.
//
//   offset 0      header, 128 B (immutable after creation; checksummed)
//   offset 128    purge control, 128 B (the intent record of the purge in flight)
//   offset 256    slot table: slotCount × 64 B (state, kind, page range, pid)
//   page-aligned  content map: VolatilityMap.byteCount(pages:) (2 bits a page:
//                 00 present, 10 locked by a purge, 11 purged) — the words the
//                 fault handler reads
//   64-aligned    file marks: 2 bits a page (fvrange: 00 non-volatile,
//                 01 volatile, 11 volatile and purged since)
//   64-aligned    slot marks: slotCount maps of 2 bits a page (00 neutral,
//                 01 voted, 11 voted and purged since, 10 pinned), each
//                 `slotMapStride` bytes
//   total         rounded up to 4 KiB

/// Offsets and sizes of a sidecar, computed from its geometry.
struct SidecarLayout: Equatable, Sendable {
    static let magic: UInt64 = 0x4353_4547_4E41_5256  // "VRANGESC", little-endian
    static let version: UInt32 = 1
    static let headerBytes = 128
    static let controlOffset = 128
    static let slotTableOffset = 256
    static let slotBytes = 64
    /// Flag bit: the data file is backed by huge pages.
    static let hugePagesFlag: UInt32 = 1
    static let maxSlots = 1024
    static let maxPageCount = 1 << 40
    static let alignment = 4096

    let pageSize: Int
    let pageCount: Int
    let slotCount: Int
    let contentMapOffset: Int
    let fileMapOffset: Int
    let slotMapsOffset: Int
    let slotMapStride: Int
    let totalSize: Int

    /// Bytes of one 2-bit-per-page map.
    var partyMapBytes: Int { VolatilityMap.wordCount(pages: pageCount) * 8 }
    var contentMapBytes: Int { VolatilityMap.byteCount(pages: pageCount) }
    var dataSize: Int { pageSize * pageCount }
    var wordCount: Int { VolatilityMap.wordCount(pages: pageCount) }
    /// The OFD lock byte that serializes purges (slot i's is byte i).
    var purgeLockByte: Int { slotCount }

    /// nil when the geometry is out of range (the caller says which check failed).
    init?(pageSize: Int, pageCount: Int, slotCount: Int) {
        guard pageSize >= 4096, pageSize <= 1 << 30, pageSize & (pageSize - 1) == 0,
              pageCount > 0, pageCount <= Self.maxPageCount,
              slotCount > 0, slotCount <= Self.maxSlots,
              !pageSize.multipliedReportingOverflow(by: pageCount).overflow else { return nil }
        func align(_ x: Int, _ a: Int) -> Int { (x + a - 1) & ~(a - 1) }
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.slotCount = slotCount
        let words = VolatilityMap.wordCount(pages: pageCount)
        contentMapOffset = align(Self.slotTableOffset + slotCount * Self.slotBytes, Self.alignment)
        fileMapOffset = align(contentMapOffset + VolatilityMap.byteCount(pages: pageCount), 64)
        slotMapsOffset = align(fileMapOffset + words * 8, 64)
        slotMapStride = align(words * 8, 64)
        totalSize = align(slotMapsOffset + slotCount * slotMapStride, Self.alignment)
    }

    /// Bytes of metadata in memory when `mappers` mappers are live: every
    /// page of the sidecar up to the last live slot's map (tmpfs allocates a
    /// page when it is first touched; slots are claimed lowest first and a
    /// freed slot's map is punched out).
    func residentBytes(mappers: Int) -> Int {
        let end = slotMapsOffset + min(max(mappers, 0), slotCount) * slotMapStride  // clamped to 0...slotCount
        return min(totalSize, (end + Self.alignment - 1) & ~(Self.alignment - 1))
    }
}

/// The header's fields, as stored (little-endian, 128 bytes).
struct SidecarHeader: Equatable, Sendable {
    var magic = SidecarLayout.magic
    var version = SidecarLayout.version
    var headerBytes = UInt32(SidecarLayout.headerBytes)
    var pageSize: UInt64 = 0
    var pageCount: UInt64 = 0
    var dataSize: UInt64 = 0
    var slotCount: UInt32 = 0
    var flags: UInt32 = 0
    var dataInode: UInt64 = 0
    var dataDevice: UInt64 = 0
    var controlOffset = UInt64(SidecarLayout.controlOffset)
    var slotTableOffset = UInt64(SidecarLayout.slotTableOffset)
    var contentMapOffset: UInt64 = 0
    var fileMapOffset: UInt64 = 0
    var slotMapsOffset: UInt64 = 0
    var slotMapStride: UInt64 = 0
    var totalSize: UInt64 = 0
    var checksum: UInt64 = 0

    /// The offset of `checksum`: everything before it is checksummed.
    static let checksumOffset = 120

    /// The header of a new sidecar for `layout` and the data file `data`.
    init(layout: SidecarLayout, dataInode: UInt64, dataDevice: UInt64, hugePages: Bool) {
        pageSize = UInt64(layout.pageSize)
        pageCount = UInt64(layout.pageCount)
        dataSize = UInt64(layout.dataSize)
        slotCount = UInt32(layout.slotCount)
        flags = hugePages ? SidecarLayout.hugePagesFlag : 0
        self.dataInode = dataInode
        self.dataDevice = dataDevice
        contentMapOffset = UInt64(layout.contentMapOffset)
        fileMapOffset = UInt64(layout.fileMapOffset)
        slotMapsOffset = UInt64(layout.slotMapsOffset)
        slotMapStride = UInt64(layout.slotMapStride)
        totalSize = UInt64(layout.totalSize)
        checksum = Self.checksum(of: encoded())
    }

    /// Decodes 128 bytes.
    init(decoding bytes: [UInt8]) {
        precondition(bytes.count >= SidecarLayout.headerBytes)
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
        magic = u64(0); version = u32(8); headerBytes = u32(12)
        pageSize = u64(16); pageCount = u64(24); dataSize = u64(32)
        slotCount = u32(40); flags = u32(44)
        dataInode = u64(48); dataDevice = u64(56)
        controlOffset = u64(64); slotTableOffset = u64(72); contentMapOffset = u64(80)
        fileMapOffset = u64(88); slotMapsOffset = u64(96); slotMapStride = u64(104)
        totalSize = u64(112); checksum = u64(120)
    }

    /// The 128 stored bytes.
    func encoded() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: SidecarLayout.headerBytes)
        func put(_ v: UInt64, _ at: Int, _ n: Int) { for i in 0..<n { out[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(magic, 0, 8); put(UInt64(version), 8, 4); put(UInt64(headerBytes), 12, 4)
        put(pageSize, 16, 8); put(pageCount, 24, 8); put(dataSize, 32, 8)
        put(UInt64(slotCount), 40, 4); put(UInt64(flags), 44, 4)
        put(dataInode, 48, 8); put(dataDevice, 56, 8)
        put(controlOffset, 64, 8); put(slotTableOffset, 72, 8); put(contentMapOffset, 80, 8)
        put(fileMapOffset, 88, 8); put(slotMapsOffset, 96, 8); put(slotMapStride, 104, 8)
        put(totalSize, 112, 8); put(checksum, 120, 8)
        return out
    }

    /// FNV-1a (64-bit) of the bytes before the checksum field.
    static func checksum(of bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes.prefix(checksumOffset) { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }
}
