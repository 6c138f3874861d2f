// A tiny program for the SIGBUS tests that need a process of their own with
// the Swift runtime's crash handler installed (swift-testing's exit tests run
// with SWIFT_BACKTRACE=enable=no). It touches a purged page of a region made
// with the fault mechanism named in its first argument; the test checks
// which signal it died of.
//
//   VRangeCrashProbe userfaultfd|mprotect
import VRange
#if canImport(Glibc)
import Glibc
#endif

let mechanism: FaultMechanism = CommandLine.arguments.dropFirst().first == "userfaultfd" ? .userfaultfd : .mprotect
do {
    let region = try VolatileRegion(byteCount: 2 * 4096, options: .init(faultMechanism: mechanism))
    try region.markVolatile(0..<region.size)
    try region.purge(region.pageSize..<region.size)
    region.bytes[region.pageSize + 8] = 1  // SIGBUS
    print("VRangeCrashProbe: touching a purged page did not fault")
    exit(3)
} catch {
    print("VRangeCrashProbe: \(error)")
    exit(2)
}
