// VRangeDemo (foundation version): a small cache of "decoded tiles" in one
// volatile region. Tiles not in use are volatile; memory pressure is applied
// for real (a library purge of the cold half, and, where userfaultfd works,
// a kernel reclaim of lazily freed pages with MADV_PAGEOUT); then every tile
// is asked for again, and only the lost ones are rebuilt. The full demo under
// real cgroup pressure has its own issue.
import VRange
#if canImport(Glibc)
import Glibc
#endif

let tileCount = 256
let tileBytes = 64 * 1024  // 16 pages

func decode(_ tile: Int, into buffer: UnsafeMutableRawBufferPointer) {
    // Stands in for expensive work (image decode, decompression...).
    for i in stride(from: 0, to: buffer.count, by: 8) {
        buffer.storeBytes(of: UInt64(tile) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(i), toByteOffset: i, as: UInt64.self)
    }
}

func verify(_ tile: Int, _ buffer: UnsafeMutableRawBufferPointer) -> Bool {
    stride(from: 0, to: buffer.count, by: 8).allSatisfy {
        buffer.load(fromByteOffset: $0, as: UInt64.self) == UInt64(tile) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64($0)
    }
}

func run(kernelDriven: Bool) throws {
    let region = try VolatileRegion(
        byteCount: tileCount * tileBytes, options: .init(kernelDriven: kernelDriven))
    defer { region.close() }
    func range(_ t: Int) -> Range<Int> { (t * tileBytes)..<((t + 1) * tileBytes) }
    func buffer(_ t: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: region.bytes[range(t)])
    }

    print("\n== \(kernelDriven ? "kernel-driven (MADV_FREE)" : "library-driven (MADV_DONTNEED)") purging, mechanism: \(region.faultMechanism)")
    for t in 0..<tileCount { decode(t, into: buffer(t)) }
    for t in 0..<tileCount { try region.markVolatile(range(t)) }
    print("decoded \(tileCount) tiles (\((tileCount * tileBytes) >> 20) MiB), all volatile while unused")

    // A peek at a volatile tile, without un-marking it.
    let peek = try region.withVolatileAccess(range(7)) { verify(7, UnsafeMutableRawBufferPointer(mutating: $0)) }
    print("optimistic peek at tile 7: \(peek)")

    // Pressure.
    if kernelDriven {
        // What the kernel does under memory pressure, forced now.
        try region.pageOut(0..<(tileCount / 2 * tileBytes))
        print("kernel reclaimed the lazily freed pages of the cold half (MADV_PAGEOUT)")
    } else {
        let released = try region.purge(0..<(tileCount / 2 * tileBytes))
        print("purger released \(released >> 20) MiB (the cold half)")
    }
    let status = try region.status()
    print("status: \(status.volatileBytes >> 10) KiB volatile intact, \(status.purgedBytes >> 10) KiB purged")

    // Every tile is needed again: reuse survivors, rebuild only what was lost.
    var reused = 0, rebuilt = 0, corrupt = 0
    for t in 0..<tileCount {
        let result = try region.markNonVolatile(range(t))
        if result.wasPurged {
            decode(t, into: buffer(t))
            rebuilt += 1
        } else {
            reused += 1
        }
        if !verify(t, buffer(t)) { corrupt += 1 }
    }
    print("tiles reused: \(reused), rebuilt: \(rebuilt), wrong contents: \(corrupt)")
    if corrupt != 0 { fatalError("a tile reported intact had lost its contents") }
}

do {
    try run(kernelDriven: false)
    do {
        try run(kernelDriven: true)
    } catch VRangeError.unsupported(let why) {
        print("\nkernel-driven mode unavailable here (\(why)); library-driven mode ran above")
    }
} catch {
    print("VRangeDemo failed: \(error)")
    exit(1)
}
