// The chaos run's ledger: a plain shared memfd (not a VolatileFile) that
// every chaos participant maps, so that what it knows survives its SIGKILL.
// Per page a seqlock word: the owner makes it odd before writing the page's
// canary and even after (value v even: the page holds canary v / 2, or
// zeros after a purge; v odd: a write is, or was when its writer died, in
// flight). Per participant index, counters the test sums at the end; one
// count of violations and the first violation's text. One definition for
// both sides: VRangeTestPeer (the participants) and VRangeTests (which makes
// the ledger and reads it at the end). Layout (8-byte words):
//   0 magic   1 pages   2 participants   3 violations   4 message claimed
//   8..<72    the first violation's text (512 bytes, NUL-terminated)
//   128..     one seqlock word per page
//   then      participants × 16 counters (see `ChaosCounter`)
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What each participant counts (word offsets in its 16).
package enum ChaosCounter: Int, CaseIterable {
    case operations = 0, pins, strongChecks, weakChecks, bytesVerified, pagesLost, purges, pagesPurged,
         accesses, accessesIntact, maps, unmaps, fileMarks, typedErrors, starts, finishes
}

package struct ChaosLedger: @unchecked Sendable {
    package static let magic: UInt64 = 0x5247_4C53_4F41_4843  // "CHAOSLGR"
    package let words: UnsafeMutablePointer<Atomic<UInt64>>
    package let pages: Int
    package let participants: Int

    package static func byteCount(pages: Int, participants: Int) -> Int {
        ((128 + pages + participants * 16) * 8 + 4095) & ~4095
    }

    /// Initializes a new ledger at `memory` (zeroed, at least
    /// `byteCount(pages:participants:)` bytes, shared with the participants).
    package init(initializing memory: UnsafeMutableRawPointer, pages: Int, participants: Int) {
        words = memory.assumingMemoryBound(to: Atomic<UInt64>.self)
        self.pages = pages
        self.participants = participants
        words[1].store(UInt64(pages), ordering: .relaxed)
        words[2].store(UInt64(participants), ordering: .relaxed)
        words[0].store(Self.magic, ordering: .sequentiallyConsistent)
    }

    /// Maps the ledger the test made (and initialized) on descriptor `fd`.
    package init?(fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size >= 4096,
              let p = mmap(nil, Int(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else { return nil }
        words = p.assumingMemoryBound(to: Atomic<UInt64>.self)
        guard words[0].load(ordering: .acquiring) == Self.magic else { return nil }
        pages = Int(words[1].load(ordering: .relaxed))
        participants = Int(words[2].load(ordering: .relaxed))
        guard Self.byteCount(pages: pages, participants: participants) <= Int(st.st_size) else { return nil }
    }

    package func sequence(_ page: Int) -> UInt64 { words[128 + page].load(ordering: .acquiring) }

    /// Starts a write of `page`'s canary; returns the canary's number.
    package func beginWrite(_ page: Int) -> UInt64 {
        let v = sequence(page)
        let writing = v & 1 == 0 ? v + 1 : v + 2  // odd: its writer died mid-write
        words[128 + page].store(writing, ordering: .sequentiallyConsistent)
        return (writing + 1) / 2
    }

    package func endWrite(_ page: Int, _ canary: UInt64) {
        words[128 + page].store(canary * 2, ordering: .sequentiallyConsistent)
    }

    package func count(_ c: ChaosCounter, _ participant: Int, _ n: Int = 1) {
        words[128 + pages + participant * 16 + c.rawValue].wrappingAdd(UInt64(n), ordering: .relaxed)
    }

    /// Records a violation of an invariant (the first one's text is kept).
    package func violation(_ text: String) {
        words[3].wrappingAdd(1, ordering: .sequentiallyConsistent)
        guard words[4].compareExchange(expected: 0, desired: 1, ordering: .sequentiallyConsistent).exchanged else { return }
        let bytes = Array(text.utf8.prefix(511)) + [0]
        let raw = UnsafeMutableRawPointer(words + 8)
        for (i, b) in bytes.enumerated() { raw.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
    }

    /// A counter summed over every participant (and every replacement).
    package func total(_ c: ChaosCounter) -> Int {
        (0..<participants).reduce(0) { $0 + Int(words[128 + pages + $1 * 16 + c.rawValue].load(ordering: .relaxed)) }
    }

    /// Violations recorded so far.
    package var violations: Int { Int(words[3].load(ordering: .sequentiallyConsistent)) }

    /// The first violation's text ("" when none).
    package var firstViolation: String {
        let raw = UnsafeRawPointer(words + 8)
        var bytes: [UInt8] = []
        for i in 0..<512 {
            let b = raw.load(fromByteOffset: i, as: UInt8.self)
            if b == 0 { break }
            bytes.append(b)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The canary of `page` number `canary`: a pattern no other page or number
/// shares, checked word by word.
@inline(__always)
package func chaosWord(page: Int, canary: UInt64, _ i: Int) -> UInt64 {
    var z = (UInt64(page) << 40 | canary) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(i)
    z = (z ^ (z >> 29)) &* 0xBF58_476D_1CE4_E5B9
    return z ^ (z >> 32) | 1  // never zero
}

/// What a page holds: .zero, .canary (exactly `canary`), or .other.
package enum PageContent: Equatable { case zero, canary, other }

package func chaosLook(_ base: UnsafeRawPointer, pageSize: Int, page: Int, canary: UInt64) -> PageContent {
    var isCanary = true, isZero = true
    for i in stride(from: 0, to: pageSize, by: 8) {
        let v = base.load(fromByteOffset: i, as: UInt64.self)
        if v != chaosWord(page: page, canary: canary, i) { isCanary = false }
        if v != 0 { isZero = false }
        if !isCanary && !isZero { return .other }
    }
    return isCanary ? .canary : .zero
}

package func chaosFill(_ base: UnsafeMutableRawPointer, pageSize: Int, page: Int, canary: UInt64) {
    for i in stride(from: 0, to: pageSize, by: 8) {
        base.storeBytes(of: chaosWord(page: page, canary: canary, i), toByteOffset: i, as: UInt64.self)
    }
}

/// SplitMix64: small, fast, seedable, and the same everywhere (the tests'
/// SeededGenerator and the participants' random choices).
package struct SplitMix64: RandomNumberGenerator {
    package var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
