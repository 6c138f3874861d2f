// The Swift side of the test-only interleaving hooks (CVRange.h): points in
// the map, the region and the access path. Compiled to nothing unless
// VRANGE_TEST_HOOKS is set (debug builds, what `swift test` builds).
import CVRange

@usableFromInline
enum TestHook {
    /// Fires hook `point` with `arg` (a page, word or address).
    @inlinable @inline(__always)
    static func fire(_ point: Int32, _ arg: Int = 0) {
        #if VRANGE_TEST_HOOKS
        vr_test_hook_fire(point, UInt(bitPattern: arg))
        #endif
    }

    @inlinable @inline(__always)
    static func fire(_ point: Int32, _ arg: UnsafeRawPointer) {
        #if VRANGE_TEST_HOOKS
        vr_test_hook_fire(point, UInt(bitPattern: Int(bitPattern: arg)))
        #endif
    }
}
