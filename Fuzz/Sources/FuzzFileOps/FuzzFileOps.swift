// Fuzz target: sequences of VolatileFile and FileMapping calls in one
// process (file marks, mappings made and closed, votes, pins, purges,
// optimistic accesses, writes, status, close) with arbitrary ranges,
// checked after every call against a model of DESIGN.md §1c: a page is
// purged iff no private mapping covers it, no mapper pins it, and the file
// marked it volatile or every shared mapper of it voted; every party that
// had it volatile is told, exactly, when it marks it non-volatile; pages
// keep every byte until purged and come back zero; bad input gives the
// typed error the README documents and changes nothing.
import FuzzSupport
import VRange
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFileOps(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    FileFuzz.run(&input)
    return 0
}

enum FileFuzz {
    /// A party's two bits for one page (PartyMap's encoding).
    enum Mark: Equatable { case neutral, voted, votedLost, pinned
        var votes: Bool { self == .voted || self == .votedLost }
    }

    final class Mapper {
        let mapping: FileMapping
        let pages: Range<Int>
        let isPrivate: Bool
        var marks: [Mark]  // indexed by file page
        init(_ mapping: FileMapping, pages: Range<Int>, isPrivate: Bool, filePages: Int) {
            self.mapping = mapping
            self.pages = pages
            self.isPrivate = isPrivate
            marks = [Mark](repeating: .neutral, count: filePages)
        }
    }

    static func run(_ input: inout FuzzInput) {
        let ps = Int(sysconf(Int32(_SC_PAGESIZE)))
        let flags = input.u8()
        let n = 1 + input.below(80)
        let maxMappers = 1 + Int(flags % 5)
        let mechanism: FaultMechanism = flags & 8 != 0 ? .mprotect : .automatic
        guard let file = try? VolatileFile(byteCount: n * ps, options: .init(maxMappers: maxMappers)) else {
            fuzzFail("VolatileFile(\(n) pages) failed")
        }
        let size = file.size
        var purged = [Bool](repeating: false, count: n)
        var fileMarks = [Mark](repeating: .neutral, count: n)
        var tags = [UInt64](repeating: 0, count: n)
        var mappers: [Mapper] = []
        var fileClosed = false
        var nextTag: UInt64 = 1

        func purgeable(_ p: Int) -> Bool {
            if mappers.contains(where: { $0.isPrivate && $0.pages.contains(p) }) { return false }
            if mappers.contains(where: { $0.marks[p] == .pinned }) { return false }
            if fileMarks[p].votes { return true }
            let shared = mappers.filter { !$0.isPrivate && $0.pages.contains(p) }
            return !shared.isEmpty && shared.allSatisfy { $0.marks[p].votes }
        }
        func notePurge(_ p: Int) {
            if fileMarks[p] == .voted { fileMarks[p] = .votedLost }
            for m in mappers where m.marks[p] == .voted { m.marks[p] = .votedLost }
        }
        func shared(covering p: Int) -> Mapper? { mappers.first { !$0.isPrivate && $0.pages.contains(p) } }
        func verify(_ pages: Range<Int>) {
            for p in pages where !purged[p] {
                guard let m = shared(covering: p) else { continue }
                let at = m.mapping.baseAddress + (p - m.pages.lowerBound) * ps
                let seen = classify(at, pageSize: ps, tag: tags[p])
                check(seen == tags[p], "page \(p) should hold \(tags[p]), holds \(String(describing: seen))")
            }
        }
        func checkStatus() {
            guard !fileClosed, let s = try? file.status() else { return }
            let expected = (
                fileVolatile: (0..<n).filter { fileMarks[$0].votes && !purged[$0] }.count,
                purged: purged.filter { $0 }.count,
                purgeable: (0..<n).filter { !purged[$0] && purgeable($0) }.count,
                shared: mappers.filter { !$0.isPrivate }.count,
                privates: mappers.filter { $0.isPrivate }.count)
            check(s.fileVolatileBytes == expected.fileVolatile * ps && s.purgedBytes == expected.purged * ps
                  && s.purgeableBytes == expected.purgeable * ps && s.presentBytes == (n - expected.purged) * ps
                  && s.sharedMappers == expected.shared && s.privateMappers == expected.privates,
                  "file status \(s), model \(expected)")
        }

        var steps = 0
        while !input.isEmpty && steps < 64 {
            steps += 1
            let op = input.u8()
            let target = mappers.isEmpty ? nil : mappers[Int(input.u8()) % mappers.count]
            let scope = target?.mapping.size ?? size
            let range = input.range(size: scope, pageSize: ps)
            let (offset, length) = (range.lowerBound, wrappedLength(range))
            let fileError = fileClosed ? VRangeError.closed : expectedRangeError(offset: offset, length: length, size: size, pageSize: ps)
            let mapError: VRangeError? = target.map { t in
                t.mapping.isClosed || fileClosed ? .closed
                    : expectedRangeError(offset: offset, length: length, size: t.mapping.size, pageSize: ps)
            } ?? nil
            let filePages = fileError == nil ? (offset / ps)..<((offset + length) / ps) : 0..<0
            func expect(_ e: VRangeError?, _ want: VRangeError?, _ what: String) {
                check(e == want, "\(what)(\(offset), \(length)): \(String(describing: e)), expected \(String(describing: want))")
            }
            switch op % 12 {
            case 0:  // file.markVolatile
                expect(thrown { () throws(VRangeError) in try file.markVolatile(range) }.error, fileError, "file.markVolatile")
                for p in filePages where fileMarks[p] == .neutral { fileMarks[p] = .voted }
            case 1:  // file.markNonVolatile
                let r = thrown { () throws(VRangeError) in try file.markNonVolatile(range) }
                expect(r.error, fileError, "file.markNonVolatile")
                guard let result = r.value else { break }
                let lost = filePages.filter { fileMarks[$0] == .votedLost || purged[$0] }
                check(result.purgedRanges == byteRuns(lost, pageSize: ps), "file.markNonVolatile(\(range)): \(result.purgedRanges), model lost \(lost)")
                for p in filePages {
                    fileMarks[p] = .neutral
                    if purged[p] { purged[p] = false; tags[p] = 0 }
                }
                verify(filePages)
            case 2, 3:  // vote / pin through a mapping
                guard let t = target else { break }
                let want = mapError ?? (t.isPrivate ? .unsupported("a private mapping neither votes nor pins") : nil)
                let first = t.pages.lowerBound
                let pages = want == nil ? (first + offset / ps)..<(first + (offset + length) / ps) : 0..<0
                if op % 12 == 2 {
                    let byOffset = op & 0x80 != 0
                    expect(thrown { () throws(VRangeError) in
                        byOffset ? try t.mapping.markVolatile(offset: offset, length: length) : try t.mapping.markVolatile(range)
                    }.error, want, "vote")
                    for p in pages where !t.marks[p].votes { t.marks[p] = .voted }
                } else {
                    let r = thrown { () throws(VRangeError) in try t.mapping.markNonVolatile(range) }
                    expect(r.error, want, "pin")
                    guard let result = r.value else { break }
                    let lost = pages.filter { t.marks[$0] == .votedLost || purged[$0] }.map { $0 - first }
                    check(result.purgedRanges == byteRuns(lost, pageSize: ps), "pin(\(range)): \(result.purgedRanges), model lost \(lost)")
                    for p in pages {
                        t.marks[p] = .pinned
                        if purged[p] { purged[p] = false; tags[p] = 0 }
                    }
                    verify(pages)
                }
            case 4:  // purge
                let r = thrown { () throws(VRangeError) -> Int in op & 0x80 != 0 && !fileClosed ? try file.purgeAll() : try file.purge(range) }
                let whole = op & 0x80 != 0 && !fileClosed
                expect(r.error, whole ? nil : fileError, "purge")
                guard let bytes = r.value else { break }
                let victims = (whole ? 0..<n : filePages).filter { !purged[$0] && purgeable($0) }
                check(bytes == victims.count * ps, "purge(\(range)) took \(bytes / ps) pages, model \(victims)")
                for p in victims { purged[p] = true; notePurge(p); tags[p] = 0 }
            case 5:  // optimistic access through a mapping
                guard let t = target else { break }
                let first = t.pages.lowerBound
                let r = thrown { () throws(VRangeError) -> VolatileAccess<[UInt64?]> in
                    try t.mapping.withVolatileAccess(range) { buf in
                        stride(from: 0, to: buf.count, by: ps).map { i in
                            classify(buf.baseAddress! + i, pageSize: ps, tag: tags[first + (offset + i) / ps])
                        }
                    }
                }
                expect(r.error, mapError, "access")
                guard let access = r.value else { break }
                let pages = (first + offset / ps)..<(first + (offset + length) / ps)
                if pages.contains(where: { purged[$0] || (!t.isPrivate && t.marks[$0] == .votedLost) }) {
                    check(access == .purged, "access over a purged or lost page: \(access)")
                } else {
                    check(access == .intact(pages.map { tags[$0] }), "access: \(access), expected \(pages.map { tags[$0] })")
                }
            case 6:  // write a pattern through a shared mapping, to a page not purged
                guard let t = target, !t.isPrivate, mapError == nil else { break }
                let p = t.pages.lowerBound + offset / ps
                guard !purged[p] else { break }
                tags[p] = nextTag
                fillPage(t.mapping.baseAddress + offset, pageSize: ps, tag: nextTag)
                nextTag += 1
            case 7, 8:  // map a range of the file (shared, or now and then private)
                let isPrivate = op & 0xC0 == 0xC0
                let want = fileError ?? (mappers.count >= maxMappers ? .tooManyMappers(limit: maxMappers) : nil)
                let r = thrown { () throws(VRangeError) in
                    try file.map(range, options: .init(privateMapping: isPrivate, faultMechanism: isPrivate ? .automatic : mechanism))
                }
                expect(r.error, want, "map")
                if let m = r.value {
                    mappers.append(Mapper(m, pages: filePages, isPrivate: isPrivate, filePages: n))
                    check(m.isPrivate == isPrivate && m.size == length, "mapping \(m.size) private \(m.isPrivate)")
                }
            case 9:  // close a mapping: its votes and pins are withdrawn
                guard let t = target else { break }
                t.mapping.close()
                mappers.removeAll { $0 === t }
                check(thrown { () throws(VRangeError) in try t.mapping.markVolatile(0..<ps) }.error == .closed, "closed mapping")
            case 10:  // mapping status
                guard let t = target else { break }
                let r = thrown { () throws(VRangeError) in try t.mapping.status(range) }
                expect(r.error, mapError, "mapping.status")
                guard let s = r.value else { break }
                let pages = (t.pages.lowerBound + offset / ps)..<(t.pages.lowerBound + (offset + length) / ps)
                let want = (bytes: length, voted: pages.filter { t.marks[$0] == .voted }.count * ps,
                            pinned: pages.filter { t.marks[$0] == .pinned }.count * ps,
                            lost: pages.filter { t.marks[$0] == .votedLost || purged[$0] }.count * ps)
                check(s.bytes == want.bytes && s.votedBytes == want.voted && s.pinnedBytes == want.pinned
                      && s.lostBytes == want.lost, "mapping status \(s), model \(want)")
            default:  // file status; rarely, close the file
                if op >= 0xF8 {
                    file.close()
                    fileClosed = true
                    for m in mappers { check(m.mapping.isClosed, "a mapping outlived its file's close") }
                    mappers = []
                } else {
                    let r = thrown { () throws(VRangeError) in try file.status(range) }
                    expect(r.error, fileError, "file.status")
                }
            }
            checkStatus()
            if steps % 8 == 0 && !fileClosed { verify(0..<n) }
        }
        if !fileClosed {
            verify(0..<n)
            checkStatus()
        }
        file.close()
    }
}
