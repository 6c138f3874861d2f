// A chaos participant on a shared VolatileFile: until its deadline (or its
// SIGKILL), random file marks, votes and pins, purges, optimistic accesses,
// mappings made and closed, status; canaries written to the pages it owns
// (page p belongs to participant p % participants) while it pins them.
//
// What it checks, by what it knows for sure:
//   - strong (its own pages, through its main mapping, whose votes and pins
//     only it makes): a page it pins keeps its canary exactly, for as long
//     as it pins it; a pin that reports a page intact finds its canary
//     exactly, one that reports it purged finds zeros; an optimistic access
//     that returns .intact read the canary exactly;
//   - weak (any page, through a second mapping, a party of its own): a page
//     it pins holds zeros or its owner's latest canary (read under the
//     ledger's seqlock; a canary torn by a killed owner is skipped).
// `safe` (for the scribbling test): no canaries, no content checks, no
// read outside an optimistic access; only that every call returns or
// throws a typed error.
#if DEBUG
@testable import VRange
#else
import VRange
#endif
import VRangeChaosLedger
#if canImport(Glibc)
import Glibc
#endif

final class FileChaos {
    enum Own { case pinned(UInt64), voted(UInt64) }

    let file: VolatileFile
    let ledger: ChaosLedger?
    let index: Int
    let participants: Int
    let safe: Bool
    var random: SplitMix64
    let ps: Int
    let pages: Int
    var main: FileMapping?
    var extra: FileMapping?
    var own: [Int: Own] = [:]

    init(file: VolatileFile, ledger: ChaosLedger?, index: Int, participants: Int, seed: UInt64, safe: Bool) {
        self.file = file
        self.ledger = ledger
        self.index = index
        self.participants = participants
        self.safe = safe
        random = SplitMix64(seed: seed)
        ps = file.pageSize
        pages = file.size / file.pageSize
    }

    func count(_ c: ChaosCounter, _ n: Int = 1) { ledger?.count(c, index, n) }
    func violation(_ s: String) {
        violations += 1
        reportViolation("participant \(index) (pid \(getpid())): \(s)", in: ledger)
    }
    var violations = 0
    var typedErrors = 0

    func bytes(_ lo: Int, _ hi: Int) -> Range<Int> { (lo * ps)..<(hi * ps) }
    func address(_ m: FileMapping, _ page: Int) -> UnsafeMutableRawPointer { m.baseAddress + page * ps - m.fileRange.lowerBound }

    /// A call that may throw only `allowed` errors (any typed error in safe mode).
    func attempt<T>(_ what: String, allowed: (VRangeError) -> Bool = { _ in false },
                    _ body: () throws(VRangeError) -> T) -> T? {
        do { return try body() } catch {
            typedErrors += 1
            count(.typedErrors)
            if !safe && !allowed(error) { violation("\(what) threw \(error)") }
            return nil
        }
    }

    func run(until deadline: UInt64) -> String {
        count(.starts)
        while main == nil && now() < deadline {
            main = attempt("map", allowed: { $0 == .tooManyMappers(limit: self.file.maxMappers) }) { () throws(VRangeError) in try file.map() }
            if main == nil { sched_yield() }
        }
        guard let main else { return "ok nomapping" }
        if !safe { for p in stride(from: index, to: pages, by: participants) { adopt(p, main) } }
        var ops = 0
        while now() < deadline {
            step(main)
            ops += 1
            count(.operations)
        }
        if !safe { for p in own.keys.sorted() { pinAndCheck(p, main) } }
        count(.finishes)
        extra?.close()
        return "ok ops=\(ops) violations=\(violations) typed=\(typedErrors)"
    }

    func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    // MARK: - Own pages (strong checks)

    /// Takes over page `p` at start: pins it, checks it weakly (a killed
    /// predecessor may have left anything it was allowed to), writes a new
    /// canary.
    func adopt(_ p: Int, _ m: FileMapping) {
        guard attempt("pin", { () throws(VRangeError) in try m.markNonVolatile(bytes(p, p + 1)) }) != nil else { return }
        count(.pins)
        weakCheck(p, m)
        write(p, m)
    }

    func write(_ p: Int, _ m: FileMapping) {
        guard let ledger else { return }
        let canary = ledger.beginWrite(p)
        chaosFill(address(m, p), pageSize: ps, page: p, canary: canary)
        ledger.endWrite(p, canary)
        own[p] = .pinned(canary)
        note(p, "wrote \(canary)")
    }

    func strongCheck(_ p: Int, _ m: FileMapping, canary: UInt64, expect: PageContent, _ why: String) {
        let seen = chaosLook(address(m, p), pageSize: ps, page: p, canary: canary)
        count(.strongChecks)
        count(.bytesVerified, ps)
        if seen != expect {
            violation("page \(p) (\(why)): holds \(seen), expected \(expect) of canary \(canary)\(diagnosis(p, m))")
        }
    }

    /// Debug builds: the page's state in the sidecar and this page's recent
    /// history here, for the violation's text.
    func diagnosis(_ p: Int, _ m: FileMapping) -> String {
        #if DEBUG
        let sc = file.sidecar
        return "; content \(sc.content.state(ofPage: p)), file mark \(sc.fileMarks.state(ofPage: p)), "
            + "slot \(m.slot) mark \(m.marks.state(ofPage: p)), purges \(sc.control.purges), "
            + "recoveries \(sc.control.recoveries); history \(history[p] ?? [])"
        #else
        return ""
        #endif
    }

    var history: [Int: [String]] = [:]
    func note(_ p: Int, _ event: String) {
        var h = history[p] ?? []
        h.append(event)
        if h.count > 8 { h.removeFirst() }
        history[p] = h
    }

    func weakCheck(_ p: Int, _ m: FileMapping) {
        guard let ledger else { return }
        for _ in 0..<3 {
            let v1 = ledger.sequence(p)
            let seen = chaosLook(address(m, p), pageSize: ps, page: p, canary: v1 / 2)
            let v2 = ledger.sequence(p)
            guard v1 == v2 else { continue }
            if v1 & 1 == 1 { return }  // torn by a killed owner (or being written)
            count(.weakChecks)
            count(.bytesVerified, ps)
            if seen == .other { violation("page \(p): holds neither zeros nor canary \(v1 / 2)") }
            return
        }
    }

    /// Pins an own voted page: intact means its canary, purged means zeros.
    func pinAndCheck(_ p: Int, _ m: FileMapping) {
        guard case .voted(let canary) = own[p] else {
            if case .pinned(let canary) = own[p] { strongCheck(p, m, canary: canary, expect: .canary, "pinned") }
            return
        }
        guard let r = attempt("pin", { () throws(VRangeError) in try m.markNonVolatile(bytes(p, p + 1)) }) else { return }
        count(.pins)
        note(p, "pin \(r.wasPurged ? "purged" : "intact")")
        if r.wasPurged {
            count(.pagesLost)
            strongCheck(p, m, canary: canary, expect: .zero, "pin reported it purged")
            write(p, m)
        } else {
            strongCheck(p, m, canary: canary, expect: .canary, "pin reported it intact")
            own[p] = .pinned(canary)
            if random.next() & 1 == 0 { write(p, m) }
        }
    }

    func voteOwn(_ p: Int, _ m: FileMapping) {
        guard case .pinned(let canary) = own[p] else { return }
        strongCheck(p, m, canary: canary, expect: .canary, "pinned until now")
        if attempt("vote", { () throws(VRangeError) in try m.markVolatile(bytes(p, p + 1)) }) != nil {
            own[p] = .voted(canary)
            note(p, "vote")
        }
    }

    func accessOwn(_ p: Int, _ m: FileMapping) {
        guard case .voted(let canary) = own[p] else { return }
        let page = p
        let pageSize = ps
        guard let r = attempt("access", { () throws(VRangeError) in
            try m.withVolatileAccess(bytes(p, p + 1)) { chaosLook($0.baseAddress!, pageSize: pageSize, page: page, canary: canary) }
        }) else { return }
        count(.accesses)
        note(p, "access \(r == .purged ? "purged" : "intact")")
        if case .intact(let seen) = r {
            count(.accessesIntact)
            count(.strongChecks)
            count(.bytesVerified, ps)
            if seen != .canary { violation("page \(p): an access reported intact read \(seen), not canary \(canary)") }
        }
    }

    // MARK: - One random step

    /// Kinds of step left out (VRANGE_CHAOS_DISABLE, comma-separated:
    /// extra, file, purge, access, map, status), to narrow a failure down.
    static let disabled: Set<String> = {
        guard let raw = getenv("VRANGE_CHAOS_DISABLE") else { return [] }
        return Set(String(cString: raw).split(separator: ",").map(String.init))
    }()

    func step(_ m: FileMapping) {
        var roll = Int(random.next() % 100)
        let kinds: [(Range<Int>, String)] = [(36..<46, "extra"), (46..<52, "file"), (52..<62, "purge"),
                                             (62..<72, "accessown"), (72..<76, "accessany"), (76..<82, "map"), (82..<88, "status")]
        if !Self.disabled.isEmpty, let k = kinds.first(where: { $0.0.contains(roll) }), Self.disabled.contains(k.1) {
            roll = 99
        }
        let ownPages = Array(own.keys)
        let lo = Int(random.next() % UInt64(pages))
        let hi = min(pages, lo + 1 + Int(random.next() % 8))
        switch roll {
        case 0..<18 where !ownPages.isEmpty:
            voteOwn(ownPages[Int(random.next() % UInt64(ownPages.count))], m)
        case 18..<36 where !ownPages.isEmpty:
            pinAndCheck(ownPages[Int(random.next() % UInt64(ownPages.count))], m)
        case 36..<46:  // another party (the second mapping): votes, or pins, checks, votes again
            guard let x = extra, !x.isPrivate, x.fileRange.contains(lo * ps) else { break }
            let top = min(hi, x.fileRange.upperBound / ps)
            let rel = bytes(lo, top).lowerBound - x.fileRange.lowerBound
            let range = rel..<(rel + (top - lo) * ps)
            if random.next() & 1 == 0 {
                _ = attempt("vote (extra)") { () throws(VRangeError) in try x.markVolatile(range) }
            } else if attempt("pin (extra)", { () throws(VRangeError) in try x.markNonVolatile(range) }) != nil {
                count(.pins)
                if !safe { for p in lo..<top { weakCheck(p, x) } }
                if random.next() % 4 != 0 {
                    _ = attempt("vote (extra)") { () throws(VRangeError) in try x.markVolatile(range) }
                }
            }
        case 36..<52:  // the file's own marks
            count(.fileMarks)
            if random.next() % 3 != 0 {
                _ = attempt("fvol") { () throws(VRangeError) in try file.markVolatile(bytes(lo, hi)) }
            } else {
                _ = attempt("fnonvol") { () throws(VRangeError) in try file.markNonVolatile(bytes(lo, hi)) }
            }
        case 52..<62:
            let whole = random.next() % 4 == 0
            if let n = attempt("purge", { () throws(VRangeError) in whole ? try file.purgeAll() : try file.purge(bytes(lo, hi)) }) {
                count(.purges)
                count(.pagesPurged, n / ps)
            }
        case 62..<72 where !ownPages.isEmpty:
            accessOwn(ownPages[Int(random.next() % UInt64(ownPages.count))], m)
        case 62..<76:  // an access anywhere: no check but no fault escapes
            let pageSize = ps
            if attempt("access", { () throws(VRangeError) in
                try m.withVolatileAccess(bytes(lo, hi)) { buf in
                    var sum: UInt64 = 0
                    for i in stride(from: 0, to: buf.count, by: pageSize) { sum &+= UInt64(buf[i]) }
                    return sum
                }
            }) != nil { count(.accesses) }
        case 76..<82:  // the second mapping: made (now and then private) or closed
            if let x = extra {
                x.close()
                extra = nil
                count(.unmaps)
            } else {
                let isPrivate = random.next() % 8 == 0
                extra = attempt("map", allowed: { $0 == .tooManyMappers(limit: self.file.maxMappers) }) { () throws(VRangeError) in
                    try file.map(bytes(lo, pages), options: .init(privateMapping: isPrivate))
                }
                if extra != nil { count(.maps) }
            }
        case 82..<88:
            if let s = attempt("status", { () throws(VRangeError) in try file.status() }) {
                if !safe && (s.purgedBytes > s.bytes || s.purgeableBytes > s.presentBytes || s.bytes != file.size) {
                    violation("status out of range: \(s)")
                }
            }
            _ = attempt("mapping status") { () throws(VRangeError) in try m.status() }
        case 88..<94 where !safe:
            for p in ownPages { if case .pinned(let c) = own[p] { strongCheck(p, m, canary: c, expect: .canary, "pinned") } }
        default:
            sched_yield()
        }
    }
}
