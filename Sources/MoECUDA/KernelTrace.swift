import CCUDA
import MoECore

/// Where one kernel of the layer ran inside a graph replay, in µs from the replay's first block start: the earliest
/// start of any of its blocks and the latest end of any of its warps. Programmatic overlap shows as a kernel starting
/// before the previous one ends.
public struct KernelSpan: Sendable, Equatable {
    public let kernel: String
    public let start: Double
    public let end: Double
    public var microseconds: Double { end - start }
}

/// Reading the trace buffer a MOE_TRACE build of the kernels fills (`moe cuda-debug --trace`): per phase and SM slot,
/// the earliest block start (atomicMin) and the latest warp end (atomicMax) of %globaltimer, in ns, folded over the
/// slots here. Unlike the event-timed graph, the replay traced is the plain layer graph, so the spans include the
/// overlap the bench sees.
public enum KernelTrace {
    /// SM slots a phase (MOE_TRACE_SLOTS): each SM updates its own pair, so a kernel of many blocks does not queue on
    /// two words.
    public static let slots = Int(MOE_TRACE_SLOTS)
    /// Bytes of a trace buffer for `phases` phases.
    public static func bufferBytes(phases: Int) -> Int { phases * slots * 16 }

    /// "layer L µs, kernel start–end (span) µs: name a–b (s) | …", L the latest end.
    public static func describe(_ spans: [KernelSpan]) -> String {
        let layer = spans.map(\.end).max() ?? 0
        func f(_ v: Double) -> String { Fixed.format(v, digits: 1) }
        let parts = spans.map { "\($0.kernel) \(f($0.start))–\(f($0.end)) (\(f($0.microseconds)))" }
        return "layer \(f(layer)) µs, kernel start–end (span) µs: \(parts.joined(separator: " | "))"
    }

    /// Every pair before any kernel marks it (start = UInt64.max, end = 0), `slotsPerPhase` pairs a phase.
    public static func emptyBuffer(phases: Int, slotsPerPhase: Int = slots) -> [UInt64] {
        Array(repeating: [UInt64.max, 0], count: phases * slotsPerPhase).flatMap { $0 }
    }

    /// A raw buffer of `slotsPerPhase` pairs a phase folded to one pair a phase: the earliest start and the latest end
    /// of the slots any kernel marked (a phase no slot marked stays UInt64.max, 0).
    public static func fold(_ raw: [UInt64], phases: Int, slotsPerPhase: Int = slots) -> [UInt64] {
        precondition(raw.count == 2 * phases * slotsPerPhase, "a trace buffer holds two values a phase and slot")
        return (0..<phases).flatMap { phase -> [UInt64] in
            var start = UInt64.max, end: UInt64 = 0
            for slot in 0..<slotsPerPhase {
                let at = 2 * (phase * slotsPerPhase + slot)
                guard raw[at] != UInt64.max else { continue }
                start = min(start, raw[at])
                end = max(end, raw[at + 1])
            }
            return [start, end]
        }
    }

    /// The buffers of `replays` replays after `warmup` more: before each, `buffer` is reset on `stream`; `replay`
    /// launches the traced graph and waits for it; after each counted one, the buffer is read back, folded to one pair
    /// a phase unless `perSlot`.
    static func record(
        phases: Int, replays: Int, warmup: Int = 0, buffer: DeviceBuffer, stream: CUDAStream, perSlot: Bool = false,
        replay: () throws -> Void
    ) throws -> [[UInt64]] {
        var raw: [[UInt64]] = []
        let empty = emptyBuffer(phases: phases)  // the same reset before every replay
        for index in 0..<(warmup + replays) {
            try buffer.uploadAsync(empty, stream: stream)
            try replay()
            guard index >= warmup else { continue }
            let slotsRead = try buffer.download(UInt64.self, count: 2 * phases * slots)
            raw.append(perSlot ? slotsRead : fold(slotsRead, phases: phases))
        }
        return raw
    }

    /// How a phase's end is spread over the SMs: per replay, each SM's latest end (µs from the replay's first start) at
    /// the 0th, 10th, 50th, 90th and 100th percentile of the SMs that marked it, then each the median over the replays.
    /// Whether a kernel's last blocks end together or a few SMs trail (e.g. SMs holding more of its blocks than others).
    public struct SMEnds: Sendable, Equatable {
        public let kernel: String
        public let sms: Int
        public let percentiles: [Double]  // 0, 10, 50, 90, 100
    }

    /// SMEnds of every phase at least `minimumSMs` SMs marked in every replay; `replays`: unfolded buffers
    /// (`slotsPerPhase` pairs a phase).
    public static func smEnds(names: [String], replays: [[UInt64]], slotsPerPhase: Int = slots, minimumSMs: Int = 8) -> [SMEnds] {
        precondition(replays.allSatisfy { $0.count == 2 * names.count * slotsPerPhase }, "unfolded trace buffers")
        var quantiles = [[[Double]]](repeating: [], count: names.count), counts = [[Int]](repeating: [], count: names.count)
        for raw in replays {
            guard let origin = origin(of: raw) else { continue }
            for phase in names.indices {
                let ends = (0..<slotsPerPhase).compactMap { slot -> Double? in
                    let at = 2 * (phase * slotsPerPhase + slot)
                    return isMarked(raw, at) ? Double(raw[at + 1] - origin) / 1000 : nil
                }.sorted()
                guard ends.count >= minimumSMs else { continue }
                quantiles[phase].append([0.0, 0.1, 0.5, 0.9, 1.0].map { ends[Int(($0 * Double(ends.count - 1)).rounded())] })
                counts[phase].append(ends.count)
            }
        }
        return names.indices.compactMap { phase in
            guard !quantiles[phase].isEmpty, quantiles[phase].count == replays.count else { return nil }
            let each = (0..<5).map { q in median(quantiles[phase].map { $0[q] }) }
            return SMEnds(kernel: names[phase], sms: median(counts[phase]), percentiles: each)
        }
    }

    /// "ends by SM (min / p10 / p50 / p90 / max µs): name a / b / c / d / e on n SMs | …".
    public static func describeEnds(_ ends: [SMEnds]) -> String {
        let parts = ends.map { e in
            "\(e.kernel) " + e.percentiles.map { Fixed.format($0, digits: 1) }.joined(separator: " / ") + " on \(e.sms) SMs"
        }
        return "ends by SM (min / p10 / p50 / p90 / max µs): " + parts.joined(separator: " | ")
    }

    /// Whether the (start, end) pair at `at` was marked: a start lowered from its reset and an end raised past it.
    private static func isMarked(_ raw: [UInt64], _ at: Int) -> Bool { raw[at] != UInt64.max && raw[at + 1] >= raw[at] }
    /// A replay's first start: the earliest of its marked pairs (folded a phase or a phase and SM slot alike).
    private static func origin(of raw: [UInt64]) -> UInt64? {
        stride(from: 0, to: raw.count, by: 2).filter { isMarked(raw, $0) }.map { raw[$0] }.min()
    }
    private static func median<T: Comparable>(_ values: [T]) -> T { values.sorted()[values.count / 2] }

    /// Per phase marked in every replay, the median start and end relative to each replay's first start (phases no
    /// kernel marked, e.g. the reduce when the sum is fused, are left out). `replays`: raw buffers, 2 u64 per phase.
    public static func spans(names: [String], replays: [[UInt64]]) -> [KernelSpan] {
        precondition(replays.allSatisfy { $0.count == 2 * names.count }, "a trace buffer holds two values per phase")
        var starts = [[Double]](repeating: [], count: names.count), ends = starts
        for raw in replays {
            guard let origin = origin(of: raw) else { continue }
            for phase in names.indices where isMarked(raw, 2 * phase) {
                starts[phase].append(Double(raw[2 * phase] - origin) / 1000)
                ends[phase].append(Double(raw[2 * phase + 1] - origin) / 1000)
            }
        }
        return names.indices.compactMap { phase in
            guard !starts[phase].isEmpty, starts[phase].count == replays.count else { return nil }
            return KernelSpan(kernel: names[phase], start: median(starts[phase]), end: median(ends[phase]))
        }
    }
}
