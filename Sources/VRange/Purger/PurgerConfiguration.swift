// How a Purger is set up: its budget, its pressure sources, its reactions
// and its timers.

extension Purger {
    /// Which pressure sources a purger watches.
    public enum PressureSources: Sendable, Equatable {
        /// Detect what the host offers at start-up and watch the best one
        /// (see `Purger.detectPressureSources()` for the order).
        case automatic
        /// Watch nothing: purge on request and for the budget only.
        case none
        /// Try these, in order: the first that opens is watched; when it
        /// vanishes, the next one.
        case only([PressureSourceSpec])
    }

    /// A purger's settings. The defaults suit a cache in a process that has
    /// no other memory-pressure handling.
    public struct Configuration: Sendable, Equatable {
        /// The most volatile memory (bytes still resident) to keep: when the
        /// registered memory holds more, the purger's thread purges the least
        /// recently used down to it. nil (the default): no budget.
        public var budget: Int?
        /// Which pressure sources to watch. Default `.automatic`.
        public var pressureSources: PressureSources
        /// Moderate events are acted on at most once per this interval
        /// (later ones within it are counted as debounced). Default 5 s.
        public var moderateInterval: Duration
        /// With no budget, the fraction of the purgeable bytes a moderate
        /// event purges (least recently used first). Default 0.5.
        public var moderateFraction: Double
        /// How often the purger's thread advances `RecencyClock` (the
        /// resolution of "least recently used") and, with a budget, checks
        /// it. Default 100 ms.
        ///
        /// Durations here: `tick`, `memAvailableInterval` and
        /// `cgroupHeadroomInterval` must be at least 1 ms, `moderateInterval`
        /// at least 0; anything longer is accepted up to `Duration`'s
        /// maximum, and the purger's arithmetic on it saturates (a tick of
        /// `.seconds(Int64.max)` means "never": the thread sleeps until woken).
        /// Anything else is `.invalidConfiguration`.
        public var tick: Duration
        /// PSI triggers for moderate and critical pressure (`critical` nil:
        /// moderate only). Defaults: `some 200000 2000000`,
        /// `full 500000 2000000`.
        public var psiModerate: PSITrigger
        public var psiCritical: PSITrigger?
        /// How often `MemAvailable` is read when it is the source. Default 5 s.
        public var memAvailableInterval: Duration
        /// How often a cgroup's headroom is read (cgroup v1 with a limit,
        /// cgroup v2). Default 1 s.
        public var cgroupHeadroomInterval: Duration
        /// Fractions of memory still available (MemAvailable of MemTotal;
        /// a cgroup's limit − usage + inactive file cache, of its limit) at
        /// or below which pressure is moderate / critical. Defaults 0.25 and
        /// 0.15, as Chromium on Linux.
        public var moderateAvailableFraction: Double
        public var criticalAvailableFraction: Double

        public init(
            budget: Int? = nil,
            pressureSources: PressureSources = .automatic,
            moderateInterval: Duration = .seconds(5),
            moderateFraction: Double = 0.5,
            tick: Duration = .milliseconds(100),
            psiModerate: PSITrigger = .defaultModerate,
            psiCritical: PSITrigger? = .defaultCritical,
            memAvailableInterval: Duration = .seconds(5),
            cgroupHeadroomInterval: Duration = .seconds(1),
            moderateAvailableFraction: Double = 0.25,
            criticalAvailableFraction: Double = 0.15
        ) {
            self.budget = budget
            self.pressureSources = pressureSources
            self.moderateInterval = moderateInterval
            self.moderateFraction = moderateFraction
            self.tick = tick
            self.psiModerate = psiModerate
            self.psiCritical = psiCritical
            self.memAvailableInterval = memAvailableInterval
            self.cgroupHeadroomInterval = cgroupHeadroomInterval
            self.moderateAvailableFraction = moderateAvailableFraction
            self.criticalAvailableFraction = criticalAvailableFraction
        }

        /// Throws `.invalidConfiguration` naming the first bad value.
        func validate() throws(VRangeError) {
            if let budget, budget < 0 { throw .invalidConfiguration("budget \(budget): must be ≥ 0") }
            if !(moderateFraction > 0 && moderateFraction <= 1) {
                throw .invalidConfiguration("moderateFraction \(moderateFraction): must be in (0, 1]")
            }
            if !(criticalAvailableFraction >= 0 && criticalAvailableFraction <= moderateAvailableFraction
                 && moderateAvailableFraction < 1) {
                throw .invalidConfiguration("available fractions \(criticalAvailableFraction)/\(moderateAvailableFraction): need 0 ≤ critical ≤ moderate < 1")
            }
            for (name, d) in [("moderateInterval", moderateInterval), ("tick", tick),
                              ("memAvailableInterval", memAvailableInterval),
                              ("cgroupHeadroomInterval", cgroupHeadroomInterval)] {
                if d < .zero || (name != "moderateInterval" && d.milliseconds < 1) {
                    throw .invalidConfiguration("\(name) \(d): must be at least 1 ms")
                }
            }
            if case .only(let specs) = pressureSources {
                for spec in specs {
                    if case .memAvailable(_, let ms) = spec, ms < 1 {
                        throw .invalidConfiguration("memAvailable interval \(ms) ms: must be at least 1 ms")
                    }
                }
            }
        }

        var thresholds: HeadroomThresholds {
            HeadroomThresholds(moderate: moderateAvailableFraction, critical: criticalAvailableFraction)
        }

        var detectionSettings: DetectionSettings {
            DetectionSettings(psiModerate: psiModerate, psiCritical: psiCritical,
                              memAvailableIntervalMilliseconds: memAvailableInterval.milliseconds)
        }
    }
}

extension Duration {
    /// `components`, saturating at `Int64.max`/`Int64.min` seconds:
    /// `Duration` holds 128 bits, and `components` traps beyond 64 bits of
    /// seconds (`.seconds(Int64.max) * 10`; found by a hostile review).
    var saturatingComponents: (seconds: Int64, attoseconds: Int64) {
        if self >= .seconds(Int64.max) { return (Int64.max, 0) }
        if self <= .seconds(Int64.min) { return (Int64.min, 0) }
        return components
    }

    /// Whole milliseconds (rounded toward zero), saturating at Int.min and
    /// Int.max: never a trap, whatever the duration (issue 18, 4c).
    var milliseconds: Int {
        let (s, atto) = saturatingComponents  // same sign
        let ms = s.multipliedReportingOverflow(by: 1000)
        if ms.overflow { return s < 0 ? .min : .max }
        return saturatingSum(Int(ms.partialValue), Int(atto / 1_000_000_000_000_000))
    }

    /// Whole nanoseconds, 0 for a negative duration, saturating at
    /// UInt64.max.
    var nanoseconds: UInt64 {
        let (s, atto) = saturatingComponents
        if s < 0 || (s == 0 && atto < 0) { return 0 }
        let ns = UInt64(s).multipliedReportingOverflow(by: 1_000_000_000)
        return ns.overflow ? .max : ns.partialValue.addingSaturating(UInt64(atto / 1_000_000_000))
    }
}
