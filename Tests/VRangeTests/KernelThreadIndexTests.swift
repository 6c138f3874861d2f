// Kernel.ThreadIndex: live threads hold distinct numbers; an exited
// thread's number is given to the next thread (so arenas stay distinct).
// Checked in a child process, where no other test starts threads.
import Synchronization
import Testing
@testable import VRange
#if canImport(Glibc)
import Glibc
#endif

@Suite("Thread index") struct KernelThreadIndexTests {
    @Test("live threads hold distinct numbers; exited threads give theirs back")
    func distinctAndRecycled() async {
        await #expect(processExitsWith: .success) {
            let main = Kernel.ThreadIndex.current
            let seen = Locked<[Int]>([])
            let alive = Atomic<Int>(0)
            let threads = (0..<4).map { _ in
                TestThread {
                    seen.withLock { $0.append(Kernel.ThreadIndex.current) }
                    alive.add(1, ordering: .relaxed)
                    while alive.load(ordering: .relaxed) < 4 { sched_yield() }  // all alive at once
                }
            }
            for t in threads { t.join() }
            let first = seen.withLock { $0 }
            guard Set(first + [main]).count == 5 else { print("not distinct: \(first) main \(main)"); exit(1) }
            let next = Locked<Int>(-1)
            let t = TestThread { next.withLock { $0 = Kernel.ThreadIndex.current } }
            t.join()
            guard first.contains(next.withLock { $0 }) else { print("not recycled: \(next.withLock { $0 })"); exit(1) }
        }
    }
}
