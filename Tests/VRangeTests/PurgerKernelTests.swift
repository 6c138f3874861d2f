// The kernel wrappers the purger added: eventfd counters, poll, whole-file
// reads past one buffer, single writes, stat kinds and their typed errors.
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Kernel layer, purger wrappers") struct PurgerKernelTests {
    @Test func eventFDCountsAndPollSeesIt() throws {
        let fd = try Kernel.eventFD()
        defer { Kernel.close(fd: fd) }
        #expect(try Kernel.eventFDRead(fd) == 0)  // nothing yet: EAGAIN is 0
        var requests = [Kernel.PollRequest(fd: fd, events: [.input])]
        #expect(try Kernel.poll(&requests, timeoutMilliseconds: 0) == 0)
        #expect(requests[0].returned.isEmpty)
        try Kernel.eventFDWrite(fd, 3)
        try Kernel.eventFDWrite(fd)
        #expect(try Kernel.poll(&requests, timeoutMilliseconds: -1) == 1)
        #expect(requests[0].returned.contains(.input))
        #expect(try Kernel.eventFDRead(fd) == 4)  // coalesced, and reset
        #expect(try Kernel.eventFDRead(fd) == 0)
        #expect(throws: SystemError(call: "read(eventfd)", errno: EBADF)) { try Kernel.eventFDRead(-1) }
    }

    @Test func readAllReadsPastOneBuffer() throws {
        let text = String(repeating: "0123456789abcdef", count: 5000)  // 80 000 bytes
        let path = temporaryFile(text)
        defer { unlink(path) }
        #expect(try Kernel.readFile(path) == Array(text.utf8))
        #expect(try Kernel.readFile(path, limit: 100).count == 100)
        #expect(try Kernel.readFile("/proc/self/mountinfo").count > 0)
        #expect(throws: SystemError(call: "open(/nonexistent, O_RDONLY)", errno: ENOENT)) {
            try Kernel.readFile("/nonexistent")
        }
    }

    @Test func writesAndKinds() throws {
        let path = temporaryFile("")
        defer { unlink(path) }
        try Kernel.writeFile(path, "hello")
        #expect(readText(path) == "hello")
        #expect(try Kernel.fileKind(path) == .regular)
        #expect(try Kernel.fileKind("/tmp") == .directory)
        #expect(try Kernel.fileKind("/dev/null") == .characterDevice)
        let fifo = "/tmp/vrange-test-\(getpid())-kind.fifo"
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        #expect(try Kernel.fileKind(fifo) == .fifo)
        #expect(throws: SystemError(call: "stat(/nonexistent)", errno: ENOENT)) { try Kernel.fileKind("/nonexistent") }
        #expect(throws: SystemError(call: "write(x)", errno: EBADF)) { try Kernel.writeOnce(fd: -1, [1], what: "x") }
        #expect(Kernel.exists(path) && !Kernel.exists("/nonexistent"))
    }

    @Test func threadRunsAndJoins() throws {
        let flag = PurgeLog()
        let t = try Kernel.Thread(name: "vrange-test-thr") { flag.append("ran") }
        #expect(!t.isCurrent)
        t.join()
        #expect(flag.all == ["ran"])
    }
}
