// Fork safety of the cache layer (DESIGN.md §9, Fork; issue 18, 2b): every
// live cache's shard mutexes are taken by the VR_FORK_CACHE prepare handler
// (after the purger layer, whose pass calls into caches; a shard's mutex is held while the allocator is
// called, never the other way round) and released after fork() in the
// parent and in the child, so that a thread that was inside a cache
// operation when another forked leaves no mutex locked for ever in the
// child. A rebuild in flight has no leader in the child: flights carry the
// fork generation they began in, and the child replaces older ones instead
// of waiting for them.
import CVRange
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One live cache's shard mutexes, in the registry's doubly linked list.
struct CacheForkNode {
    let mutexes: UnsafeMutableBufferPointer<UnsafeMutablePointer<pthread_mutex_t>>
    var previous: UnsafeMutablePointer<CacheForkNode>?
    var next: UnsafeMutablePointer<CacheForkNode>?
}

/// The registry of live caches for the at-fork handlers. Nothing here
/// allocates in the handlers: nodes are made when a cache is, and walked.
enum CacheFork {
    /// Guards `head`: a cache made or dropped during fork() waits. Created,
    /// with the at-fork registration, when the first cache is made.
    nonisolated(unsafe) static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(m, nil)
        precondition(rc == 0, "VRange: pthread_mutex_init failed: \(rc)")
        let registered = vr_atfork_register(
            Int32(VR_FORK_CACHE), { CacheFork.prepare() }, { CacheFork.parent() }, { CacheFork.child() })
        precondition(registered == 0, "VRange: the cache's at-fork handlers could not be registered")
        return m
    }()
    /// The live caches (guarded by `lock`).
    nonisolated(unsafe) static var head: UnsafeMutablePointer<CacheForkNode>?
    /// How many fork()s this process descends from (bumped in each child):
    /// a rebuild flight of an older generation has no leader here.
    static let generation = Atomic<Int>(0)

    #if DEBUG
    /// Test-only: called by the prepare handler before it takes any mutex.
    static let testPrepareHook = Locked<(@Sendable () -> Void)?>(nil)
    #endif

    /// Adds a cache's shard mutexes; the node is the cache's to remove.
    static func register(_ mutexes: [UnsafeMutablePointer<pthread_mutex_t>]) -> UnsafeMutablePointer<CacheForkNode> {
        let list = UnsafeMutableBufferPointer<UnsafeMutablePointer<pthread_mutex_t>>.allocate(capacity: mutexes.count)
        _ = list.initialize(from: mutexes)
        let node = UnsafeMutablePointer<CacheForkNode>.allocate(capacity: 1)
        node.initialize(to: CacheForkNode(mutexes: list, previous: nil, next: nil))
        pthread_mutex_lock(lock)
        node.pointee.next = head
        head?.pointee.previous = node
        head = node
        pthread_mutex_unlock(lock)
        return node
    }

    /// Removes a cache's node (its deinit) and frees it.
    static func unregister(_ node: UnsafeMutablePointer<CacheForkNode>) {
        pthread_mutex_lock(lock)
        if let p = node.pointee.previous { p.pointee.next = node.pointee.next } else { head = node.pointee.next }
        node.pointee.next?.pointee.previous = node.pointee.previous
        pthread_mutex_unlock(lock)
        node.pointee.mutexes.deallocate()
        node.deinitialize(count: 1)
        node.deallocate()
    }

    /// Takes the registry's lock, then every shard mutex of every live
    /// cache (a thread inside a cache operation finishes it first; no
    /// operation holds two shard mutexes at once, so the order is free).
    static func prepare() {
        #if DEBUG
        if let h = testPrepareHook.withLock({ $0 }) { h() }
        #endif
        pthread_mutex_lock(lock)
        forEachMutex { pthread_mutex_lock($0) }
    }

    static func parent() {
        forEachMutex { pthread_mutex_unlock($0) }
        pthread_mutex_unlock(lock)
    }

    /// In the child, on the thread that forked (which holds every mutex):
    /// releases them and starts a new generation of rebuild flights.
    static func child() {
        generation.add(1, ordering: .relaxed)
        forEachMutex { pthread_mutex_unlock($0) }
        pthread_mutex_unlock(lock)
    }

    private static func forEachMutex(_ body: (UnsafeMutablePointer<pthread_mutex_t>) -> Void) {
        var node = head
        while let n = node {
            for m in n.pointee.mutexes { body(m) }
            node = n.pointee.next
        }
    }
}
