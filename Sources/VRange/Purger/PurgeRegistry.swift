// The purger's registered memory, held weakly: a region dropped by its owner
// is deinitialised as usual and simply disappears from here.
import Synchronization

/// A registered object, held weakly, with its identity.
struct WeakPurgeable {
    let id: ObjectIdentifier
    weak var object: (any PurgeableMemory)?
}

final class PurgeRegistry: Sendable {
    private let entries = Locked<[WeakPurgeable]>([])

    /// Adds `object` unless it is already registered. Returns whether added.
    func add(_ object: any PurgeableMemory) -> Bool {
        let id = ObjectIdentifier(object)
        return entries.withLock { list in
            list.removeAll { $0.object == nil }
            if list.contains(where: { $0.id == id }) { return false }
            list.append(WeakPurgeable(id: id, object: object))
            return true
        }
    }

    /// Removes `object`. Returns whether it was registered.
    func remove(_ object: any PurgeableMemory) -> Bool {
        let id = ObjectIdentifier(object)
        return entries.withLock { list in
            let had = list.contains { $0.id == id && $0.object != nil }
            list.removeAll { $0.id == id || $0.object == nil }
            return had
        }
    }

    /// Strong references to the live objects, in registration order, for
    /// one pass of the purger (the lock is not held while they are used).
    func snapshot() -> [any PurgeableMemory] {
        entries.withLock { list in
            list.removeAll { $0.object == nil }
            return list.compactMap(\.object)
        }
    }
}
