// The state of one page, as stored in two bits of the volatility map.

/// What VRange knows about one page.
public enum PageState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The default: never purged, ever.
    case nonVolatile = 0
    /// May be purged at any time; contents intact so far.
    case volatile = 1
    /// A purge of this page is in flight (the per-page lock of DESIGN.md §2).
    case purging = 2
    /// Volatile and discarded: comes back zero-filled when marked non-volatile.
    case purged = 3

    public var description: String {
        switch self {
        case .nonVolatile: "non-volatile"
        case .volatile: "volatile"
        case .purging: "purging"
        case .purged: "purged"
        }
    }
}
