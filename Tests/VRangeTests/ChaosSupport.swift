// The test side of the chaos run: the ledger memfd the participants share
// (layout in Sources/VRangeTestPeer/ChaosLedger.swift: keep both in step),
// its counters, and the canary pattern the participants write.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

/// The counters each participant keeps in the ledger (ChaosCounter).
enum ChaosCount: Int, CaseIterable {
    case operations = 0, pins, strongChecks, weakChecks, bytesVerified, pagesLost, purges, pagesPurged,
         accesses, accessesIntact, maps, unmaps, fileMarks, typedErrors, starts, finishes
}

/// A ledger for `participants` participants over a file of `pages` pages.
final class ChaosLedgerFile {
    let fd: Int32
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    let pages: Int
    let participants: Int
    let length: Int

    init(pages: Int, participants: Int) throws {
        fd = try Kernel.memfdCreate(name: "vrange-chaos-ledger")
        length = ((128 + pages + participants * 16) * 8 + 4095) & ~4095
        try Kernel.truncate(fd: fd, length: length)
        let raw = try Kernel.mapFile(fd: fd, length: length, offset: 0)
        words = raw.assumingMemoryBound(to: Atomic<UInt64>.self)
        self.pages = pages
        self.participants = participants
        words[1].store(UInt64(pages), ordering: .relaxed)
        words[2].store(UInt64(participants), ordering: .relaxed)
        words[0].store(0x5247_4C53_4F41_4843, ordering: .sequentiallyConsistent)
    }

    deinit {
        try? Kernel.unmap(UnsafeMutableRawPointer(words), length: length)
        Kernel.close(fd: fd)
    }

    /// The seqlock word of `page` (even: canary v / 2 or zeros; odd: torn).
    func sequence(_ page: Int) -> UInt64 { words[128 + page].load(ordering: .acquiring) }

    /// A counter summed over every participant (and every replacement).
    func total(_ c: ChaosCount) -> Int {
        (0..<participants).reduce(0) { $0 + Int(words[128 + pages + $1 * 16 + c.rawValue].load(ordering: .relaxed)) }
    }

    var violations: Int { Int(words[3].load(ordering: .sequentiallyConsistent)) }

    var firstViolation: String {
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

/// The participants' canary word (ChaosLedger.swift's chaosWord).
func chaosWord(page: Int, canary: UInt64, _ i: Int) -> UInt64 {
    var z = (UInt64(page) << 40 | canary) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(i)
    z = (z ^ (z >> 29)) &* 0xBF58_476D_1CE4_E5B9
    return z ^ (z >> 32) | 1
}

/// "zero", "canary" (exactly canary `canary` of `page`) or "other".
func chaosLook(_ base: UnsafeRawPointer, page: Int, canary: UInt64) -> String {
    var isCanary = true, isZero = true
    for i in stride(from: 0, to: Kernel.pageSize, by: 8) {
        let v = base.load(fromByteOffset: i, as: UInt64.self)
        if v != chaosWord(page: page, canary: canary, i) { isCanary = false }
        if v != 0 { isZero = false }
    }
    return isCanary ? "canary" : (isZero ? "zero" : "other")
}
