// A peer that scribbles random bytes over a shared sidecar while others
// use the file. What a scribble may cost and what it may not (RELIABILITY.md,
// "A hostile peer"): a peer holding the descriptors can destroy the data
// (it can write the data file and punch it itself), so pages may be lost,
// reported purged, or raise SIGBUS when touched outside an optimistic
// access, as purged pages do. It must not make the others crash, hang, or
// touch memory outside their mappings: every call returns within a bound
// or throws a typed error.
//
// The header is validated once, at adoption; its geometry is then kept in
// each process's own memory and never read again. Scribbling over it
// ("all") changes nothing for processes that adopted the file already;
// later adopters refuse it with `.invalidSharedFile`.
//
// This process marks, pins, purges, makes and closes mappings and reads
// through optimistic accesses only (a pinned page may have been punched by
// a purge that a scribbled pin let through: touching it outside an access
// could raise SIGBUS, as documented), while a second peer runs the chaos
// participant in safe mode; a region and a second file elsewhere in this
// process keep their canaries throughout.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Scribbling peer", .serialized) struct ScribbleTests {
    @Test(arguments: ["body", "all"])
    func scribbledSidecarNeverCrashesOrHangsOthers(_ mode: String) throws {
        let seed = testSeed("scribble \(mode)")
        let millis = environmentInt("VRANGE_SCRIBBLE_MILLIS", 3000)
        var random = SeededGenerator(seed: seed)
        let pages = 64
        let f = try VolatileFile(byteCount: pages * page, options: .init(maxMappers: 12))
        // Bystanders: their bytes must not change.
        let region = try VolatileRegion(byteCount: 16 * page)
        let other = try VolatileFile(byteCount: 16 * page)
        let otherMap = try other.map()
        for p in 0..<16 { fill(region, page: p, tag: UInt8(p + 1)); fill(otherMap, page: p, tag: UInt8(p + 101)) }
        try region.markVolatile(bytes(8..<16))
        try other.markVolatile(bytes(8..<16))

        let scribbler = try peers(1, sharing: f)[0]
        let user = try peers(1, sharing: f)[0]
        try scribbler.write("scribble \(millis) \(Int64(bitPattern: random.next() >> 1)) \(mode)\n")
        try user.write("chaos file 0 1 \(Int64(bitPattern: random.next() >> 1)) \(millis) -1 safe\n")

        var mappings: [FileMapping] = []
        var operations = 0, slowest: UInt64 = 0
        var errors: [String: Int] = [:]
        let end = Kernel.monotonicNanoseconds() + UInt64(millis) * 1_000_000
        while Kernel.monotonicNanoseconds() < end {
            let lo = Int(random.next() % UInt64(pages)), hi = min(pages, lo + 1 + Int(random.next() % 16))
            let t0 = Kernel.monotonicNanoseconds()
            do {
                switch random.next() % 10 {
                case 0 where mappings.count < 3:
                    mappings.append(try f.map())
                case 0 where !mappings.isEmpty, 1 where !mappings.isEmpty:
                    mappings.removeFirst().close()
                case 2: try f.markVolatile(bytes(lo..<hi))
                case 3: _ = try f.markNonVolatile(bytes(lo..<hi))
                case 4: _ = try f.purge(bytes(lo..<hi))
                case 5: _ = try f.status()
                case 6 where !mappings.isEmpty:
                    try mappings[0].markVolatile(bytes(lo..<hi))
                case 7 where !mappings.isEmpty:
                    _ = try mappings[0].markNonVolatile(bytes(lo..<hi))
                case 8 where !mappings.isEmpty:
                    _ = try mappings[0].withVolatileAccess(bytes(lo..<hi)) { $0.reduce(0) { $0 &+ UInt64($1) } }
                case 9 where !mappings.isEmpty:
                    _ = try mappings[0].status()
                default:
                    _ = try f.purgeAll()
                }
            } catch {
                errors["\(error)".prefix(while: { $0 != "(" }).description, default: 0] += 1
            }
            slowest = max(slowest, Kernel.monotonicNanoseconds() - t0)
            operations += 1
        }
        let scribbled = try scribbler.readLine(timeout: 60, context: "scribble")
        let used = try user.readLine(timeout: 60, context: "safe chaos participant")
        #expect(scribbled.hasPrefix("ok writes="), "\(scribbled)")
        #expect(used.hasPrefix("ok ops="), "the other user survived: \(used)")
        // Once the scribbling stops, pinning the whole file returns.
        let finalPin = try f.map()
        #expect(finishes(within: 30) { _ = try? finalPin.markNonVolatile(0..<finalPin.size) })
        if mode == "all" {
            // Processes that adopted the file keep working; a new adopter refuses it.
            _ = try f.status()
            let d = try f.inheritableDescriptors()
            do {
                _ = try VolatileFile(adopting: d)
                Issue.record("a sidecar with a scribbled header was adopted")
            } catch let e {
                guard case .invalidSharedFile = e else { Issue.record("adoption threw \(e)"); return }
                Kernel.close(fd: d.data)
                Kernel.close(fd: d.sidecar)
            }
        }
        // The bystanders kept every byte.
        for p in 0..<16 {
            #expect(holds(region, page: p, tag: UInt8(p + 1)), "region page \(p)")
            #expect(look(otherMap, page: p, tag: UInt8(p + 101)) == "tag", "other file page \(p)")
        }
        #expect(try region.markNonVolatile(bytes(8..<16)).wasPurged == false)
        #expect(try other.markNonVolatile(bytes(8..<16)).wasPurged == false)
        #expect(slowest < 10_000_000_000, "every call returned within 10 s (slowest \(slowest / 1_000_000) ms)")
        print("[scribble \(mode)] seed \(seed): \(operations) calls while \(scribbled.dropFirst(3)), "
              + "slowest \(slowest / 1_000_000) ms, typed errors \(errors), other user \(used.dropFirst(3))")
    }
}
