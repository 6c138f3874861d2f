// poll(2): how the purger's thread waits for pressure events, its wake-up
// eventfd and its timers at once.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// poll event bits, named.
    struct PollEvents: OptionSet, Sendable, Hashable {
        let rawValue: Int16
        /// Data to read (eventfds, FIFOs, sockets).
        static let input = PollEvents(rawValue: Int16(POLLIN))
        /// Priority data: how PSI triggers and cgroup files signal an event.
        static let priority = PollEvents(rawValue: Int16(POLLPRI))
        /// An error condition; for a PSI trigger, the file is gone.
        static let error = PollEvents(rawValue: Int16(POLLERR))
        /// Hang-up: the writer or peer went away.
        static let hangUp = PollEvents(rawValue: Int16(POLLHUP))
        /// The descriptor is not open.
        static let invalid = PollEvents(rawValue: Int16(POLLNVAL))
    }

    /// One descriptor to wait on, and what it reported.
    struct PollRequest: Sendable, Equatable {
        var fd: Int32
        var events: PollEvents
        var returned: PollEvents = []
    }

    /// poll(fds, n, timeout): waits until a descriptor is ready or
    /// `timeoutMilliseconds` pass (-1 waits for ever). Fills each request's
    /// `returned`. EINTR restarts the wait (the caller's loop recomputes its
    /// deadlines after every return anyway).
    ///
    /// - Returns: the number of descriptors with events.
    /// - Throws: `SystemError` naming `poll`.
    static func poll(_ requests: inout [PollRequest], timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        var fds = requests.map { pollfd(fd: $0.fd, events: $0.events.rawValue, revents: 0) }
        let n = try check("poll") { Glibc.poll(&fds, nfds_t(fds.count), timeoutMilliseconds) }
        for i in requests.indices { requests[i].returned = PollEvents(rawValue: fds[i].revents) }
        return Int(n)
    }

    /// `poll` with `mutex` released for the wait only, by the caller's
    /// thread, which holds it on entry and holds it again on return: no
    /// Swift code runs between the release, the wait and the retake (the
    /// purger's thread holds its pass lock whenever it runs: PurgerLoop),
    /// but `contended`, called when the mutex is held by another thread
    /// as the wait ends, before blocking for it, and `retaken`, after a
    /// contended retake.
    static func poll(
        _ requests: inout [PollRequest], timeoutMilliseconds: Int32,
        unlocking mutex: UnsafeMutablePointer<pthread_mutex_t>,
        contended: () -> Void = {}, retaken: () -> Void = {}
    ) throws(SystemError) -> Int {
        var fds = requests.map { pollfd(fd: $0.fd, events: $0.events.rawValue, revents: 0) }
        let (n, code) = fds.withUnsafeMutableBufferPointer { b -> (Int32, Int32) in
            pthread_mutex_unlock(mutex)
            var n: Int32
            repeat { n = Glibc.poll(b.baseAddress, nfds_t(b.count), timeoutMilliseconds) } while n < 0 && Glibc.errno == EINTR
            let code = n < 0 ? Glibc.errno : 0
            if pthread_mutex_trylock(mutex) != 0 {
                contended()
                pthread_mutex_lock(mutex)
                retaken()
            }
            return (n, code)
        }
        if n < 0 { throw SystemError(call: "poll", errno: code) }
        for i in requests.indices { requests[i].returned = PollEvents(rawValue: fds[i].revents) }
        return Int(n)
    }
}
