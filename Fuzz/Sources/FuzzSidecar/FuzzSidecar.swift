// Fuzz target: arbitrary sidecars (and data files) adopted through
// `VolatileFile(adopting:)`. The input picks a real file's geometry and
// state, then mutates the sidecar's header (fields, bytes, the checksum
// fixed up or not, the data file's identity fixed up or not), scribbles
// over its body (slot table, purge intent record, page states, marks), and
// varies the data file (size, seals) and the descriptors themselves.
//
// Adoption must give a typed error (descriptors left open) or a file; a
// file adopted this way must then survive mapping, pins, votes, purges,
// optimistic accesses, status and close without a crash, a hang (libFuzzer's
// -timeout) or an out-of-bounds access (AddressSanitizer; the sidecar's
// mapping ends at its size), and a page this process pins is never lost,
// whatever the scribbled slot table says.
import FuzzSupport
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSidecar(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    SidecarFuzz.run(&input)
    return 0
}

enum SidecarFuzz {
    static let interesting64: [UInt64] = [
        0, 1, 2, 31, 32, 33, 63, 64, 127, 128, 255, 256, 4095, 4096, 4097, 8192, 1 << 20, 1 << 30, 1 << 31,
        1 << 32, 1 << 40, (1 << 40) + 1, 1 << 62, 1 << 63, UInt64(Int.max), UInt64.max, UInt64.max - 1,
        UInt64(UInt32.max), 0x4353_4547_4E41_5256,
    ]

    static func run(_ input: inout FuzzInput) {
        let flags = input.u16()
        let pageSize = Kernel.pageSize
        let pages = 1 + input.below(100)
        let mappers = 1 + input.below(40)
        // A real file, with some state in its sidecar.
        guard let base = try? VolatileFile(byteCount: pages * pageSize, options: .init(maxMappers: mappers)) else {
            fuzzFail("a valid file could not be created")
        }
        if flags & 0x100 != 0 { prepare(base, &input) }
        var side = readAll(base.descriptors.sidecar, base.sidecarBytes)
        guard let dup = try? base.inheritableDescriptors() else { fuzzFail("dup failed (errno \(errno))") }
        close(dup.sidecar)  // only the data descriptor is offered again
        base.close()  // its slots are dead now: adoption sees them as a crashed process's

        // The header: raw bytes from the input, or the real one mutated.
        if flags & 1 != 0 {
            let raw = input.take(128)
            for (i, b) in raw.enumerated() { side[i] = b }
        }
        for _ in 0..<(input.u8() % 8) { mutateHeader(&side, &input) }

        // The data file: the real one, or another memfd of some size and seals.
        var data = dup.data
        var extra: [Int32] = []
        if flags & 2 != 0 {
            let len = flags & 4 != 0 ? Int(input.u32() % (1 << 22)) : pages * pageSize + (Int(input.u8()) - 128) * pageSize / 16
            data = memfd(size: max(len, 0), bytes: [], seals: seals(input.u8()))
            extra.append(dup.data)
        }
        if flags & 8 != 0 {  // the header names whichever data file is offered
            var st = stat()
            if fstat(data, &st) == 0 {
                put(&side, 48, UInt64(st.st_ino), 8)
                put(&side, 56, UInt64(st.st_dev), 8)
            }
        }
        if flags & 0x10 == 0 {  // fix the checksum (the usual case: reach the deeper checks)
            let h = SidecarHeader.checksum(of: Array(side.prefix(128)))
            put(&side, 120, h, 8)
        }
        // Scribbles over the body: the slot table, the intent record, the maps.
        let bodyEdits = Int(input.u8() % 32)
        for _ in 0..<bodyEdits where side.count > 128 {
            let at = 128 + Int(input.u32()) % (side.count - 128)
            let chunk = input.take(1 + Int(input.u8() % 64))
            for (i, b) in chunk.enumerated() where at + i < side.count { side[at + i] = b }
        }
        if flags & 0x20 != 0 {  // every page state and mark at once
            let b = input.u8()
            let from = Int(input.u16()) % max(side.count, 1)
            for i in from..<side.count where i >= 128 { side[i] = b &+ UInt8(truncatingIfNeeded: i) }
        }
        var sideSize = side.count
        if flags & 0x40 != 0 { sideSize = max(0, side.count + Int(Int16(bitPattern: input.u16()))) }
        let sideFD = memfd(size: sideSize, bytes: side, seals: flags & 0x80 != 0 ? seals(input.u8()) : .fixedSize)

        var pair = SharedFileDescriptors(data: data, sidecar: sideFD)
        var devNull: Int32 = -1
        switch flags >> 9 & 7 {
        case 1: pair = SharedFileDescriptors(data: sideFD, sidecar: data)
        case 2: pair = SharedFileDescriptors(data: data, sidecar: data)
        case 3: pair.sidecar = -1
        case 4: pair.data = 1_000_000
        case 5:
            devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
            if flags & 0x1000 != 0 { pair.data = devNull } else { pair.sidecar = devNull }
        default: break
        }

        switch thrown({ () throws(VRangeError) in try VolatileFile(adopting: pair) }) {
        case (let file?, nil):
            exercise(file, &input)
            file.close()
            for fd in [data, sideFD] + extra where fd != pair.data && fd != pair.sidecar { close(fd) }
        case (_, let error?):
            switch error {
            case .invalidSharedFile, .system: break
            default: fuzzFail("adoption threw \(error), not a typed adoption error")
            }
            // Left open and untouched.
            for fd in [data, sideFD] { check(fcntl(fd, F_GETFD) >= 0, "descriptor \(fd) closed by a failed adoption") }
            for fd in [data, sideFD] + extra { close(fd) }
        default: fuzzFail("no file and no error")
        }
        if devNull >= 0 { close(devNull) }
    }

    /// Gives the real file some state: a mapping's slot, votes, pins, file
    /// marks and a purge, so that the copied sidecar holds them.
    static func prepare(_ file: VolatileFile, _ input: inout FuzzInput) {
        let ps = file.pageSize, n = file.size / ps
        guard let m = try? file.map() else { return }
        let a = input.below(n), b = a + 1 + input.below(n - a)
        try? m.markVolatile((a * ps)..<(b * ps))
        let c = input.below(n), d = c + 1 + input.below(n - c)
        try? file.markVolatile((c * ps)..<(d * ps))
        _ = try? m.markNonVolatile((c * ps)..<(c * ps + ps))
        _ = try? file.purgeAll()
        if input.bool() { m.close() }  // else the slot stays (closed with the file: freed)
    }

    static func mutateHeader(_ side: inout [UInt8], _ input: inout FuzzInput) {
        switch input.u8() % 4 {
        case 0: side[Int(input.u8()) % 128] = input.u8()
        case 1: put(&side, Int(input.u8() % 16) * 8, interesting64[Int(input.u8()) % interesting64.count], 8)
        case 2: put(&side, Int(input.u8() % 32) * 4, interesting64[Int(input.u8()) % interesting64.count], 4)
        default:
            let at = Int(input.u8() % 16) * 8
            let v = get(side, at) &+ UInt64(bitPattern: Int64(Int8(bitPattern: input.u8())))
            put(&side, at, v, 8)
        }
    }

    /// Uses an adopted file: status, a mapping that pins part of the file
    /// and writes a pattern there, votes and file marks on the rest, a
    /// purge, optimistic accesses; the pinned pages must keep the pattern.
    static func exercise(_ file: VolatileFile, _ input: inout FuzzInput) {
        let ps = file.pageSize, n = file.size / ps
        switch thrown({ () throws(VRangeError) in try file.status() }) {
        case (let s?, nil):
            check(s.bytes == file.size && s.purgedBytes <= s.bytes && s.presentBytes <= s.bytes
                  && s.purgeableBytes <= s.presentBytes && s.fileVolatileBytes <= s.presentBytes,
                  "status out of range: \(s)")
        default: fuzzFail("status threw on an adopted file")
        }
        let m: FileMapping
        switch thrown({ () throws(VRangeError) in try file.map() }) {
        case (let mapping?, nil): m = mapping
        case (_, let error?):
            switch error {
            case .tooManyMappers, .system: return
            default: fuzzFail("map threw \(error)")
            }
        default: return
        }
        // Pin everything (repopulates whatever the scribbles say is purged,
        // waits out whatever they say is locked), then write the pattern.
        guard (try? m.markNonVolatile(0..<m.size)) != nil else { fuzzFail("pin of the whole mapping threw") }
        for p in 0..<n { fillPage(m.baseAddress + p * ps, pageSize: ps, tag: UInt64(p + 1)) }
        // Vote some pages, mark some through the file, purge.
        let a = input.below(n), b = a + 1 + input.below(n - a)
        try? m.markVolatile((a * ps)..<(b * ps))
        try? file.markVolatile(0..<file.size)
        let purged = (try? file.purgeAll()) ?? -1
        check(purged >= 0 && purged <= (b - a) * ps, "purged \(purged) bytes, at most \((b - a) * ps) were voted")
        // Pages never voted were pinned throughout: every byte is there.
        for p in 0..<n where p < a || p >= b {
            check(classify(m.baseAddress + p * ps, pageSize: ps, tag: UInt64(p + 1)) == UInt64(p + 1),
                  "pinned page \(p) lost its contents")
        }
        // An optimistic access over the voted pages, then the pin again.
        _ = try? m.withVolatileAccess((a * ps)..<(b * ps)) { buf in buf.reduce(0) { $0 &+ UInt64($1) } }
        guard let r = try? m.markNonVolatile((a * ps)..<(b * ps)) else { fuzzFail("pin threw") }
        var lost = Set<Int>()
        for run in r.purgedRanges { for p in (run.lowerBound / ps)..<(run.upperBound / ps) { lost.insert(p) } }
        check(lost.count * ps == purged, "purged \(purged) bytes, the pin reported \(lost.count) pages lost")
        for p in a..<b {
            let seen = classify(m.baseAddress + p * ps, pageSize: ps, tag: UInt64(p + 1))
            check(seen == (lost.contains(p) ? 0 : UInt64(p + 1)), "page \(p): reported \(lost.contains(p) ? "purged" : "intact"), holds \(String(describing: seen))")
        }
        _ = try? m.status()
        _ = try? file.markNonVolatile(0..<file.size)
        m.close()
        check((try? m.markVolatile(0..<ps)) == nil, "a closed mapping accepted a mark")
    }

    // MARK: - Files and bytes

    static func seals(_ bits: UInt8) -> Kernel.Seals {
        var s: Kernel.Seals = []
        if bits & 1 != 0 { s.insert(.shrink) }
        if bits & 2 != 0 { s.insert(.grow) }
        if bits & 4 != 0 { s.insert(.seal) }
        if bits & 8 != 0 { s.insert(.write) }
        if bits & 16 != 0 { s.insert(.futureWrite) }
        if bits & 0xE0 == 0xE0 { return .fixedSize }
        return s
    }

    static func memfd(size: Int, bytes: [UInt8], seals: Kernel.Seals) -> Int32 {
        guard let (fd, _) = try? Kernel.sealableMemfd(name: "fuzz", hugePages: false) else { fuzzFail("memfd_create failed") }
        if size > 0 { try? Kernel.truncate(fd: fd, length: size) }
        let n = min(size, bytes.count)
        if n > 0 { _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, n, 0) } }
        // F_SEAL_WRITE after a write; a seal the memfd refuses is left out.
        for one in [Kernel.Seals.shrink, .grow, .write, .futureWrite, .seal] where seals.contains(one) {
            try? Kernel.addSeals(fd: fd, one)
        }
        return fd
    }

    static func readAll(_ fd: Int32, _ size: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
        check(n == size, "could not read the sidecar back")
        return out
    }

    static func put(_ b: inout [UInt8], _ at: Int, _ v: UInt64, _ n: Int) {
        for i in 0..<n where at + i < b.count { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    static func get(_ b: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }
}
