// Misuse of PurgeableBuffer: what the type system rejects at compile time
// (use after free, a span alive across unlock) is checked by compiling
// snippets against the built module; what remains possible at run time
// (unbalanced unlock, lock-count overflow, bytes touched while unlocked)
// must stop the process with a precondition failure, never corrupt memory.
import Foundation
import Testing
import VRange

@Suite("PurgeableBuffer misuse") struct AllocatorMisuseTests {
    @Test("unbalanced unlock stops the process")
    func unbalancedUnlock() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try VolatileAllocator()
            var b = try a.allocate(byteCount: 64)
            b.unlock()
            b.unlock()
        }
        expectMessage(r, "unbalanced unlock")
    }

    @Test("unbalanced unlock of a page span stops the process")
    func unbalancedUnlockSpan() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try VolatileAllocator()
            var b = try a.allocate(byteCount: 3 * 4096)
            b.unlock()
            b.unlock()
        }
        expectMessage(r, "unbalanced unlock")
    }

    @Test("lock count overflow stops the process")
    func lockOverflow() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try VolatileAllocator()
            var b = try a.allocate(byteCount: 100)
            for _ in 0..<PurgeableBuffer.maxLockDepth { b.lock() }
        }
        expectMessage(r, "lock count overflow")
    }

    @Test("the deepest allowed nesting works")
    func deepestNesting() throws {
        let a = try VolatileAllocator()
        var b = try a.allocate(byteCount: 100)
        for _ in 1..<PurgeableBuffer.maxLockDepth { b.lock() }
        expect(b.lockCount == PurgeableBuffer.maxLockDepth)
        for _ in 0..<PurgeableBuffer.maxLockDepth { b.unlock() }
        expect(!b.isLocked)
    }

    @Test("reading the bytes of an unlocked buffer stops the process")
    func bytesWhileUnlocked() async {
        let r0 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try VolatileAllocator()
            var b = try a.allocate(byteCount: 4096)
            b.unlock()
            _ = b.withUnsafeBytes { $0[0] }
        }
        expectMessage(r0, "bytes read while unlocked")
        let r1 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try VolatileAllocator()
            var b = try a.allocate(byteCount: 10)
            b.unlock()
            _ = b.bytes.byteCount
        }
        expectMessage(r1, "bytes read while unlocked")
    }

    @Test("writing the bytes of an unlocked buffer stops the process")
    func bytesWrittenWhileUnlocked() async {
        let r0 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try VolatileAllocator()
            var b = try a.allocate(byteCount: 3 * 4096)
            b.unlock()
            b.withUnsafeMutableBytes { $0[0] = 1 }
        }
        expectMessage(r0, "bytes written while unlocked")
        let r1 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try VolatileAllocator()
            var b = try a.allocate(byteCount: 10)
            b.unlock()
            var span = b.mutableBytes
            span.storeBytes(of: 1, toByteOffset: 0, as: UInt8.self)
        }
        expectMessage(r1, "bytes written while unlocked")
    }

    @Test("use after free and a span across unlock do not compile")
    func rejectedAtCompileTime() throws {
        let prelude = "import VRange\nfunc f(_ a: VolatileAllocator) throws {\n"
        let fine = prelude + "var b = try a.allocate(byteCount: 1)\ndo { let s = b.bytes; _ = s.byteCount }\nb.unlock()\nb.free()\n}\n"
        let afterFree = prelude + "let b = try a.allocate(byteCount: 1)\nb.free()\n_ = b.count\n}\n"
        let doubleFree = prelude + "let b = try a.allocate(byteCount: 1)\nb.free()\nb.free()\n}\n"
        let spanAcrossUnlock = prelude + "var b = try a.allocate(byteCount: 1)\nlet s = b.bytes\nb.unlock()\n_ = s.byteCount\n}\n"
        let control = try compile(fine)
        #expect(control.status == 0, "the control snippet must compile: \(control.output)")
        for (name, source, diagnostic) in [("use after free", afterFree, "used after consume"),
                                           ("double free", doubleFree, "consumed more than once"),
                                           ("span across unlock", spanAcrossUnlock, "overlapping accesses")] {
            let r = try compile(source)
            #expect(r.status != 0 && r.output.contains(diagnostic), "\(name): \(r.output)")
        }
    }

    /// The child's standard error names the misuse (so that it died of the
    /// precondition, not of something else).
    private func expectMessage(_ r: ExitTest.Result?, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let err = r.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(err.contains(text), "stderr: \(err.suffix(300))", sourceLocation: sourceLocation)
    }

    /// Compiles `source` to SIL (where ownership is checked) against the
    /// VRange module of the build that runs these tests.
    private func compile(_ source: String) throws -> (status: Int32, output: String) {
        let exe = try #require(Bundle.main.executablePath ?? CommandLine.arguments.first)
        var dir = URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Modules/VRange.swiftmodule").path) {
            try #require(dir.path != "/", "no Modules/VRange.swiftmodule above \(exe)")
            dir = dir.deletingLastPathComponent()
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("vrange-misuse-\(getpid())-\(UUID().uuidString).swift")
        try source.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let swiftc = ["/opt/swift/usr/bin/swiftc", "/usr/bin/swiftc"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: swiftc ?? "/usr/bin/env")
        p.arguments = (swiftc == nil ? ["swiftc"] : []) + [
            "-emit-sil", "-o", "/dev/null", "-I", dir.appendingPathComponent("Modules").path,
            "-Xcc", "-fmodule-map-file=" + dir.appendingPathComponent("CVRange.build/module.modulemap").path, file.path,
        ]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
