// Sealable memfds: memfd_create with MFD_ALLOW_SEALING (and MFD_NOEXEC_SEAL
// where the kernel has it), F_ADD_SEALS and F_GET_SEALS.
import CVRange

extension Kernel {
    /// File seals (F_SEAL_*), named by meaning.
    struct Seals: OptionSet, Sendable, CustomStringConvertible {
        let rawValue: Int32
        /// No more seals may be added.
        static let seal = Seals(rawValue: vr_F_SEAL_SEAL)
        /// The file may not shrink.
        static let shrink = Seals(rawValue: vr_F_SEAL_SHRINK)
        /// The file may not grow.
        static let grow = Seals(rawValue: vr_F_SEAL_GROW)
        /// The file may not be written.
        static let write = Seals(rawValue: vr_F_SEAL_WRITE)
        /// No new writable mapping or write().
        static let futureWrite = Seals(rawValue: vr_F_SEAL_FUTURE_WRITE)
        /// The mode's execute bits are fixed.
        static let exec = Seals(rawValue: vr_F_SEAL_EXEC)

        /// What a VolatileFile's two descriptors carry: fixed size, nothing more to add.
        static let fixedSize: Seals = [.shrink, .grow, .seal]

        var description: String {
            let names: [(Seals, String)] = [(.seal, "SEAL"), (.shrink, "SHRINK"), (.grow, "GROW"),
                                            (.write, "WRITE"), (.futureWrite, "FUTURE_WRITE"), (.exec, "EXEC")]
            let set = names.filter { contains($0.0) }.map { "F_SEAL_" + $0.1 }
            return set.isEmpty ? "none" : set.joined(separator: "|")
        }
    }

    /// What `sealableMemfd` ended up using.
    struct MemfdFlags: Sendable, Equatable {
        /// MFD_NOEXEC_SEAL was accepted (Linux 6.3 and later).
        var noExecSeal: Bool
    }

    /// memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL
    /// [| MFD_HUGETLB]); where the kernel rejects MFD_NOEXEC_SEAL (EINVAL,
    /// before 6.3) the call is repeated without it.
    static func sealableMemfd(name: String, hugePages: Bool) throws(SystemError) -> (fd: Int32, flags: MemfdFlags) {
        let base = vr_MFD_CLOEXEC | vr_MFD_ALLOW_SEALING | (hugePages ? vr_MFD_HUGETLB : 0)
        var fd: Int32 = -1
        if vr_MFD_NOEXEC_SEAL != 0 {
            let code = name.withCString { vr_memfd_create($0, base | vr_MFD_NOEXEC_SEAL, &fd) }
            if code == 0 { return (fd, MemfdFlags(noExecSeal: true)) }
            if code != EINVAL { throw SystemError(call: "memfd_create", errno: code) }
        }
        try checkCode("memfd_create", name.withCString { vr_memfd_create($0, base, &fd) })
        return (fd, MemfdFlags(noExecSeal: false))
    }

    /// fcntl(fd, F_ADD_SEALS, seals).
    static func addSeals(fd: Int32, _ seals: Seals) throws(SystemError) {
        try checkCode("fcntl(F_ADD_SEALS)", vr_add_seals(fd, seals.rawValue))
    }

    /// fcntl(fd, F_GET_SEALS): EINVAL for a file that cannot be sealed (not a
    /// memfd, tmpfs or hugetlbfs file).
    static func seals(fd: Int32) throws(SystemError) -> Seals {
        var s: Int32 = 0
        try checkCode("fcntl(F_GET_SEALS)", vr_get_seals(fd, &s))
        return Seals(rawValue: s)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
