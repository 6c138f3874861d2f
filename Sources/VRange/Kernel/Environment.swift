// getenv and the process's credentials: what pressure-source detection asks
// about its host.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Kernel {
    /// getenv(name), or nil when unset.
    static func environment(_ name: String) -> String? {
        guard let raw = getenv(name) else { return nil }
        return String(cString: raw)
    }

    /// geteuid().
    static var effectiveUserID: UInt32 { geteuid() }
}
