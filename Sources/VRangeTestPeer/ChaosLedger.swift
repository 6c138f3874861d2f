// The chaos run's ledger: a plain shared memfd (not a VolatileFile) that
// every chaos participant maps, so that what it knows survives its SIGKILL.
// Per page a seqlock word: the owner makes it odd before writing the page's
// canary and even after (value v even: the page holds canary v / 2, or
// zeros after a purge; v odd: a write is, or was when its writer died, in
// flight). Per participant index, counters the test sums at the end; one
// count of violations and the first violation's text. Layout (8-byte
// words; Tests/VRangeTests/ChaosSupport.swift reads the same layout):
//   0 magic   1 pages   2 participants   3 violations   4 message claimed
//   8..<72    the first violation's text (512 bytes, NUL-terminated)
//   128..     one seqlock word per page
//   then      participants × 16 counters (see `ChaosCounter`)
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What each participant counts (word offsets in its 16).
enum ChaosCounter: Int, CaseIterable {
    case operations = 0, pins, strongChecks, weakChecks, bytesVerified, pagesLost, purges, pagesPurged,
         accesses, accessesIntact, maps, unmaps, fileMarks, typedErrors, starts, finishes
}

struct ChaosLedger: @unchecked Sendable {
    static let magic: UInt64 = 0x5247_4C53_4F41_4843  // "CHAOSLGR"
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    let pages: Int
    let participants: Int

    static func byteCount(pages: Int, participants: Int) -> Int {
        ((128 + pages + participants * 16) * 8 + 4095) & ~4095
    }

    /// Maps the ledger the test made (and initialized) on descriptor `fd`.
    init?(fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size >= 4096,
              let p = mmap(nil, Int(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else { return nil }
        words = p.assumingMemoryBound(to: Atomic<UInt64>.self)
        guard words[0].load(ordering: .acquiring) == Self.magic else { return nil }
        pages = Int(words[1].load(ordering: .relaxed))
        participants = Int(words[2].load(ordering: .relaxed))
        guard Self.byteCount(pages: pages, participants: participants) <= Int(st.st_size) else { return nil }
    }

    func sequence(_ page: Int) -> UInt64 { words[128 + page].load(ordering: .acquiring) }

    /// Starts a write of `page`'s canary; returns the canary's number.
    func beginWrite(_ page: Int) -> UInt64 {
        let v = sequence(page)
        let writing = v & 1 == 0 ? v + 1 : v + 2  // odd: its writer died mid-write
        words[128 + page].store(writing, ordering: .sequentiallyConsistent)
        return (writing + 1) / 2
    }

    func endWrite(_ page: Int, _ canary: UInt64) {
        words[128 + page].store(canary * 2, ordering: .sequentiallyConsistent)
    }

    func count(_ c: ChaosCounter, _ participant: Int, _ n: Int = 1) {
        words[128 + pages + participant * 16 + c.rawValue].wrappingAdd(UInt64(n), ordering: .relaxed)
    }

    /// Records a violation of an invariant (the first one's text is kept).
    func violation(_ text: String) {
        words[3].wrappingAdd(1, ordering: .sequentiallyConsistent)
        guard words[4].compareExchange(expected: 0, desired: 1, ordering: .sequentiallyConsistent).exchanged else { return }
        let bytes = Array(text.utf8.prefix(511)) + [0]
        let raw = UnsafeMutableRawPointer(words + 8)
        for (i, b) in bytes.enumerated() { raw.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
    }
}

/// The canary of `page` number `canary`: a pattern no other page or number
/// shares, checked word by word.
@inline(__always)
func chaosWord(page: Int, canary: UInt64, _ i: Int) -> UInt64 {
    var z = (UInt64(page) << 40 | canary) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(i)
    z = (z ^ (z >> 29)) &* 0xBF58_476D_1CE4_E5B9
    return z ^ (z >> 32) | 1  // never zero
}

/// What a page holds: .zero, .canary (exactly `canary`), or .other.
enum PageContent: Equatable { case zero, canary, other }

func chaosLook(_ base: UnsafeRawPointer, pageSize: Int, page: Int, canary: UInt64) -> PageContent {
    var isCanary = true, isZero = true
    for i in stride(from: 0, to: pageSize, by: 8) {
        let v = base.load(fromByteOffset: i, as: UInt64.self)
        if v != chaosWord(page: page, canary: canary, i) { isCanary = false }
        if v != 0 { isZero = false }
        if !isCanary && !isZero { return .other }
    }
    return isCanary ? .canary : .zero
}

func chaosFill(_ base: UnsafeMutableRawPointer, pageSize: Int, page: Int, canary: UInt64) {
    for i in stride(from: 0, to: pageSize, by: 8) {
        base.storeBytes(of: chaosWord(page: page, canary: canary, i), toByteOffset: i, as: UInt64.self)
    }
}

/// SplitMix64, as the tests' SeededGenerator.
struct ChaosRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
