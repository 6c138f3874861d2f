// The state of one page, as stored in two bits of the volatility map.

/// What VRange knows about one page.
public enum PageState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The default: never purged, ever.
    case nonVolatile = 0
    /// May be purged at any time; contents intact so far.
    case volatile = 1
    /// Held for a moment by an operation in flight on another thread: a
    /// purge (it ends purged), a kernel-driven mark (it ends volatile) or a
    /// kernel-driven unmark settling it (it ends non-volatile). Transient: an
    /// operation that meets it waits until it is released.
    case locked = 2
    /// Volatile and discarded: comes back zero-filled when marked non-volatile.
    case purged = 3

    public var description: String {
        switch self {
        case .nonVolatile: "non-volatile"
        case .volatile: "volatile"
        case .locked: "locked"
        case .purged: "purged"
        }
    }
}
