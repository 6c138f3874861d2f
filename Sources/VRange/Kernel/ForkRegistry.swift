// A layer's registry of live objects for the at-fork handlers (DESIGN.md §9,
// Fork; issue 18, class 2), one type for every layer whose objects come and
// go: the purger layer (each purger's pass lock, registry, state and
// lifecycle, in the order a pass nests them) and the cache layer (each
// cache's shard mutexes; after the purger layer, whose pass calls into
// caches). fork()'s prepare takes every live object's mutexes, parent and
// child release them, so that a thread that was inside an operation when
// another forked leaves no mutex locked for ever in the child.
//
// The list, its mutex and the handlers that walk it are atfork.c's, all
// static: nothing here is initialised lazily (no Swift `static let` on the
// fork path), so the first object of a layer made while another thread
// forks leaves a child that can make and use its own. Nothing here
// allocates in the handlers: nodes are made with their objects.
import CVRange
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

struct ForkRegistry: Sendable {
    /// The layer (VR_FORK_PURGER, VR_FORK_CACHE, ...).
    let layer: Int32

    /// The purgers' registry.
    static var purger: ForkRegistry { ForkRegistry(layer: Int32(VR_FORK_PURGER)) }
    /// The caches' registry.
    static var cache: ForkRegistry { ForkRegistry(layer: Int32(VR_FORK_CACHE)) }

    /// One object's entry: the object unlinks it in its deinit.
    typealias Node = UnsafeMutablePointer<vr_fork_node>
    /// Called by prepare on the forking thread: how many of the node's
    /// first mutexes that thread holds already.
    typealias HeldByForker = @convention(c) (UnsafePointer<vr_fork_node>?) -> Int32
    /// Called in the child, before the node's mutexes are released.
    typealias Child = @convention(c) (UnsafeMutablePointer<vr_fork_node>?) -> Void

    /// How many fork()s this process descends from (bumped in each child
    /// before any handler runs): work begun in an older generation was a
    /// thread's that does not exist here.
    var generation: Int { vr_fork_count() }

    /// Adds an object's mutexes (taken in this order before fork(),
    /// released in reverse after it); `context` is for the callbacks.
    ///
    /// - Returns: the node, the object's to `unlink`.
    func link(_ mutexes: [UnsafeMutablePointer<pthread_mutex_t>], context: UnsafeMutableRawPointer? = nil,
              heldByForker: HeldByForker? = nil, child: Child? = nil) -> Node {
        let list = UnsafeMutablePointer<UnsafeMutablePointer<pthread_mutex_t>?>.allocate(capacity: max(1, mutexes.count))
        for (i, m) in mutexes.enumerated() { (list + i).initialize(to: m) }
        let node = Node.allocate(capacity: 1)
        node.initialize(to: vr_fork_node(
            mutexes: list, count: Int32(mutexes.count), held_by_forker: heldByForker, child: child,
            context: context, skipped: 0, previous: nil, next: nil))
        let rc = vr_fork_link(layer, node)
        precondition(rc == 0, "VRange: vr_fork_link(\(layer)) failed")
        return node
    }

    /// Removes an object's node (waits while a fork() is in progress) and
    /// frees it.
    func unlink(_ node: Node) {
        vr_fork_unlink(layer, node)
        node.pointee.mutexes.deallocate()
        node.deinitialize(count: 1)
        node.deallocate()
    }
}

#if DEBUG
extension ForkRegistry {
    /// Test-only closures, per layer: set before the C hook is armed, so
    /// this is initialised before any prepare handler reads it.
    private static let testPrepareHooks = Locked<[(@Sendable () -> Void)?]>(
        Array(repeating: nil, count: Int(VR_FORK_LAYERS)))

    /// Test-only: `hook` runs in fork()'s prepare, on the forking thread,
    /// before the layer's list or mutexes are taken (nil: none).
    func setTestPrepareHook(_ hook: (@Sendable () -> Void)?) {
        let layer = layer
        if let hook {
            Self.testPrepareHooks.withLock { $0[Int(layer)] = hook }
            vr_fork_set_test_hook(layer) { l in
                if let h = ForkRegistry.testPrepareHooks.withLock({ $0[Int(l)] }) { h() }
            }
        } else {
            vr_fork_set_test_hook(layer, nil)
            Self.testPrepareHooks.withLock { $0[Int(layer)] = nil }
        }
    }
}
#endif
