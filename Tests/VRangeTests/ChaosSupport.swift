// The test side of the chaos run: the ledger memfd the participants share
// (ChaosLedger, in VRangeChaosLedger, defines its layout for both sides).
import Testing
@testable import VRange
import VRangeChaosLedger
#if canImport(Glibc)
import Glibc
#endif

/// A ledger for `participants` participants over a file of `pages` pages,
/// in a memfd of this process that the participants inherit.
final class ChaosLedgerFile {
    let fd: Int32
    let ledger: ChaosLedger
    let length: Int

    init(pages: Int, participants: Int) throws {
        fd = try Kernel.memfdCreate(name: "vrange-chaos-ledger")
        length = ChaosLedger.byteCount(pages: pages, participants: participants)
        try Kernel.truncate(fd: fd, length: length)
        ledger = ChaosLedger(initializing: try Kernel.mapFile(fd: fd, length: length, offset: 0),
                             pages: pages, participants: participants)
    }

    deinit {
        try? Kernel.unmap(UnsafeMutableRawPointer(ledger.words), length: length)
        Kernel.close(fd: fd)
    }

    func sequence(_ page: Int) -> UInt64 { ledger.sequence(page) }
    func total(_ c: ChaosCounter) -> Int { ledger.total(c) }
    var violations: Int { ledger.violations }
    var firstViolation: String { ledger.firstViolation }
}
