// The one place errno becomes a typed error. Every wrapper in Kernel/ goes
// through these helpers; nothing above this folder calls C directly.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

enum Kernel {
    /// Runs a libc call that returns -1 and sets errno on failure, retrying on
    /// EINTR, and maps failure to a `SystemError` naming `call`.
    @inline(__always)
    static func check<T: SignedInteger>(
        _ call: @autoclosure () -> String, _ body: () -> T
    ) throws(SystemError) -> T {
        while true {
            let result = body()
            if result != -1 { return result }
            let code = Glibc.errno
            if code == EINTR { continue }
            throw SystemError(call: call(), errno: code)
        }
    }

    /// Maps a CVRange shim's return value (0 or an errno) to a typed error.
    @inline(__always)
    static func checkCode(_ call: @autoclosure () -> String, _ code: Int32) throws(SystemError) {
        if code != 0 { throw SystemError(call: call(), errno: code) }
    }

    /// The system page size in bytes.
    static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Gives up the processor (sched_yield); used while waiting for a purge in
    /// flight on a page.
    static func yield() { _ = sched_yield() }
}
