// Fork safety of the purger core (DESIGN.md §9, Fork; issue 18, class 2):
// the VR_FORK_PURGER prepare handler takes, for every live purger, the pass
// lock (a pass in flight finishes first), the registry's mutex, the state
// and the lifecycle lock, in the order a pass nests them; parent and child
// release them. In the child, the uses that other threads held are
// forgotten (those threads do not exist there: `unregister` must not wait
// for them), and the purger's thread does not exist either: `stop()` and
// `wake()` leave the parent's thread alone (its eventfd is shared).
import CVRange
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One live purger's locks, in the registry's doubly linked list.
struct PurgerForkNode {
    /// Taken in this order: pass lock, registry, state, lifecycle.
    let mutexes: (UnsafeMutablePointer<pthread_mutex_t>, UnsafeMutablePointer<pthread_mutex_t>,
                  UnsafeMutablePointer<pthread_mutex_t>, UnsafeMutablePointer<pthread_mutex_t>)
    /// Unretained: the core removes its node in its deinit.
    let core: Unmanaged<PurgerCore>
    /// The forking thread runs a pass of this purger itself (it forks from
    /// inside a purge callback): its pass lock is not taken again.
    var passHeldByForker = false
    var previous: UnsafeMutablePointer<PurgerForkNode>?
    var next: UnsafeMutablePointer<PurgerForkNode>?
}

/// The registry of live purgers for the at-fork handlers. Nothing here
/// allocates in the handlers.
enum PurgerFork {
    /// Guards `head`. Created, with the at-fork registration, when the first
    /// purger is made.
    nonisolated(unsafe) static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(m, nil)
        precondition(rc == 0, "VRange: pthread_mutex_init failed: \(rc)")
        let registered = vr_atfork_register(
            Int32(VR_FORK_PURGER), { PurgerFork.prepare() }, { PurgerFork.parent() }, { PurgerFork.child() })
        precondition(registered == 0, "VRange: the purger's at-fork handlers could not be registered")
        return m
    }()
    /// The live purgers (guarded by `lock`).
    nonisolated(unsafe) static var head: UnsafeMutablePointer<PurgerForkNode>?
    /// How many fork()s this process descends from (bumped in each child):
    /// a purger thread started in an older generation is not in this process.
    static let generation = Atomic<Int>(0)

    #if DEBUG
    /// Test-only: called by the prepare handler before it takes any lock.
    static let testPrepareHook = Locked<(@Sendable () -> Void)?>(nil)
    #endif

    static func register(_ node: PurgerForkNode) -> UnsafeMutablePointer<PurgerForkNode> {
        let p = UnsafeMutablePointer<PurgerForkNode>.allocate(capacity: 1)
        p.initialize(to: node)
        pthread_mutex_lock(lock)
        p.pointee.next = head
        head?.pointee.previous = p
        head = p
        pthread_mutex_unlock(lock)
        return p
    }

    static func unregister(_ node: UnsafeMutablePointer<PurgerForkNode>) {
        pthread_mutex_lock(lock)
        if let p = node.pointee.previous { p.pointee.next = node.pointee.next } else { head = node.pointee.next }
        node.pointee.next?.pointee.previous = node.pointee.previous
        pthread_mutex_unlock(lock)
        node.deinitialize(count: 1)
        node.deallocate()
    }

    static func prepare() {
        #if DEBUG
        if let h = testPrepareHook.withLock({ $0 }) { h() }
        #endif
        pthread_mutex_lock(lock)
        var node = head
        while let n = node {
            let m = n.pointee.mutexes
            n.pointee.passHeldByForker = n.pointee.core._withUnsafeGuaranteedRef { $0.passRunsOnCurrentThread }
            if !n.pointee.passHeldByForker { pthread_mutex_lock(m.0) }
            pthread_mutex_lock(m.1)
            pthread_mutex_lock(m.2)
            pthread_mutex_lock(m.3)
            node = n.pointee.next
        }
    }

    static func parent() {
        release()
    }

    /// In the child, on the thread that forked: forgets other threads'
    /// uses, then releases every lock.
    static func child() {
        generation.add(1, ordering: .relaxed)
        var node = head
        while let n = node {
            n.pointee.core._withUnsafeGuaranteedRef { $0.registry.forkChildReset() }
            node = n.pointee.next
        }
        release()
    }

    private static func release() {
        var node = head
        while let n = node {
            let m = n.pointee.mutexes
            pthread_mutex_unlock(m.3)
            pthread_mutex_unlock(m.2)
            pthread_mutex_unlock(m.1)
            if !n.pointee.passHeldByForker { pthread_mutex_unlock(m.0) }
            node = n.pointee.next
        }
        pthread_mutex_unlock(lock)
    }
}
