// Optimistic access to a file mapping: read volatile pages without pinning
// them, and get "purged" as a value instead of SIGBUS.
import CVRange
import Synchronization

extension FileMapping {
    /// Runs `body` over `range` without pinning it. A purged page touched
    /// inside `body` reads as zeros instead of raising SIGBUS, and the access
    /// is reported `.purged`; afterwards the page is punched out again (it
    /// was filled with zeros so that `body` could go on, for every process,
    /// until then). `body` is not run when a page is already purged, or
    /// when this mapper lost one (purged since it voted).
    ///
    /// - Returns: `.intact(value)` when no page of `range` was purged (or
    ///   lost by this mapper) before or during the access, else `.purged`.
    /// - Throws: a range error, `.closed` (also when the mapping or its file
    ///   was closed while `body` ran: what it read may not be the file's),
    ///   `.inheritedAcrossFork`, `.accessNestingTooDeep`, `.peerNotResponding`
    ///   when another process holds the purge lock without progress for
    ///   `VolatileFile.peerPatience` as the access ends and must punch a
    ///   page it filled out again (the page stays filled with zeros, still
    ///   reported purged), or `.system` when the purge lock cannot be taken.
    public func withVolatileAccess<Value>(
        _ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Value
    ) throws(VRangeError) -> VolatileAccess<Value> {
        try checkUsable()
        let token = try file.beginUse()
        defer { file.endUse(token) }
        file.hook(.inOperation(.mappingAccess))
        let rel = try geometry.pages(range)
        let p = (rel.lowerBound + pages.lowerBound)..<(rel.upperBound + pages.lowerBound)
        let content = file.sidecar.content
        // Generations before the states, states before the generations
        // after the body (see VolatilityMap: discard generations).
        let generation = content.generationSum(p)
        if content.anyDiscarded(in: p) || (!isPrivate && marks.anyLost(in: p)) { return .purged }
        let start = UnsafeRawPointer(baseAddress + range.lowerBound)
        TestHook.fire(Int32(VR_HOOK_ACCESS_AFTER_PRECHECK), start)
        guard Kernel.FaultTable.beginScope(slot: handlerSlot, base: start, length: range.count) else {
            throw .accessNestingTooDeep
        }
        let value = Kernel.withFaultSignalsUnblocked {
            body(UnsafeRawBufferPointer(start: start, count: range.count))
        }
        let faults = Kernel.FaultTable.endScope()
        if faults.count > 0 { try punchAgain(faults, in: p) }
        // A close() during the body replaced the pages with empty memory:
        // what the body read is not the file's (DESIGN.md §9: never intact).
        if closedFlagIsSet { throw .closed }
        if faults.count > 0 { return .purged }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if content.anyDiscarded(in: p) || (!isPrivate && marks.anyLost(in: p))
            || content.generationSum(p) != generation { return .purged }
        return .intact(value)
    }

    /// Pages that faulted inside an access were filled (zeros) so the body
    /// could go on: punch those still marked purged out of the file again,
    /// under the purge lock (a page repopulated meanwhile by a pin is left
    /// alone: it is no longer purged; see `VolatileFile.punchPurgedAgain`).
    private func punchAgain(_ faults: Kernel.FaultTable.ScopeFaults, in p: Range<Int>) throws(VRangeError) {
        var targets: [Range<Int>] = []
        if faults.overflow {
            targets = [p]
        } else {
            faults.forEachPage { address in
                let page = (Int(bitPattern: address) - Int(bitPattern: mappedBase)) / file.pageSize + alignedFirstPage
                targets.append(page..<(page + 1))
            }
        }
        try file.withPurgeLock { file.punchPurgedAgain(targets) }
    }
}
