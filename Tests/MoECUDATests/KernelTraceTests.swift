import CCUDA
import Testing

@testable import MoECUDA

/// A replay's buffer from (start, end) ns per phase; nil: the phase ran no kernel.
private func buffer(_ phases: [(UInt64, UInt64)?]) -> [UInt64] {
    phases.flatMap { $0.map { [$0.0, $0.1] } ?? [UInt64.max, 0] }
}

@Test func traceSpansAreMediansFromEachReplaysFirstStart() {
    let names = ["route", "plan", "gemm1", "gemm2", "reduce"]
    // Absolute clocks differ between replays; the spans are relative to each replay's first start. GEMM 2 starts
    // before GEMM 1 ends (programmatic overlap) and the reduce never runs (fused sum).
    let replays = [
        buffer([(1_000_000, 1_006_000), nil, (1_001_000, 1_090_000), (1_080_000, 1_150_000), nil]),
        buffer([(5_000_000, 5_007_000), nil, (5_001_500, 5_095_000), (5_085_000, 5_160_000), nil]),
        buffer([(9_000_000, 9_005_000), nil, (9_000_500, 9_080_000), (9_070_000, 9_140_000), nil]),
    ]
    let spans = KernelTrace.spans(names: names, replays: replays)
    #expect(spans.map(\.kernel) == ["route", "gemm1", "gemm2"])
    #expect(spans[0] == KernelSpan(kernel: "route", start: 0, end: 6))
    #expect(spans[1] == KernelSpan(kernel: "gemm1", start: 1, end: 90))
    #expect(spans[2] == KernelSpan(kernel: "gemm2", start: 80, end: 150))
    #expect(spans[2].start < spans[1].end)
    #expect(spans[2].microseconds == 70)
}

@Test func aPhaseMissingFromSomeReplaysIsLeftOut() {
    let replays = [buffer([(100, 200), (150, 400)]), buffer([(100, 200), nil])]
    #expect(KernelTrace.spans(names: ["a", "b"], replays: replays).map(\.kernel) == ["a"])
    // A replay where nothing ran contributes nothing, and no replay at all gives no spans.
    #expect(KernelTrace.spans(names: ["a"], replays: [buffer([nil])]).isEmpty)
    #expect(KernelTrace.spans(names: ["a"], replays: []).isEmpty)
}

@Test func theEmptyBufferMarksEveryPhaseUnrun() {
    #expect(KernelTrace.emptyBuffer(phases: 3, slotsPerPhase: 1) == [UInt64.max, 0, UInt64.max, 0, UInt64.max, 0])
    let empty = KernelTrace.emptyBuffer(phases: 3)
    #expect(empty.count == 2 * 3 * KernelTrace.slots && KernelTrace.bufferBytes(phases: 3) == 8 * empty.count)
    #expect(KernelTrace.spans(names: ["a", "b", "c"], replays: [KernelTrace.fold(empty, phases: 3)]).isEmpty)
}

/// Each SM marks its own pair of a phase (MOE_TRACE_SLOTS; one pair a phase made a kernel of many small blocks queue on
/// two words); the host folds a phase's slots to the earliest start and the latest end of those marked.
@Test func theSlotsOfAPhaseFoldToItsEarliestStartAndLatestEnd() {
    #expect(KernelTrace.slots == 256 && KernelTrace.slots >= 132)  // every SM of an H100 or H200 its own slot
    let unrun: [UInt64] = [UInt64.max, 0]
    // Phase 0: slots 0 and 2 marked; phase 1: none; phase 2: slot 1 only. Four slots a phase.
    let raw = [500, 900] + unrun + [400, 700] + unrun
        + unrun + unrun + unrun + unrun
        + unrun + [1_000, 1_200] + unrun + unrun
    let folded = KernelTrace.fold(raw, phases: 3, slotsPerPhase: 4)
    #expect(folded == [400, 900, UInt64.max, 0, 1_000, 1_200])
    #expect(KernelTrace.spans(names: ["a", "b", "c"], replays: [folded]).map(\.kernel) == ["a", "c"])
}

@Test func aTraceReadsAsOneLineWithTheLayerEndFirst() {
    let spans = [KernelSpan(kernel: "route", start: 0, end: 6.04), KernelSpan(kernel: "gemm1", start: 0.95, end: 28.71)]
    #expect(KernelTrace.describe(spans) == "layer 28.7 µs, kernel start–end (span) µs: route 0.0–6.0 (6.0) | gemm1 1.0–28.7 (27.8)")
    #expect(KernelTrace.describe([]) == "layer 0.0 µs, kernel start–end (span) µs: ")
}

/// The symmetric layer's launches are numbered in launch order, each parameter struct carrying the buffer and its
/// own slot; names repeat only as the caller gives them, and with no buffer the slots are still numbered (the kernels
/// then mark nothing).
@Test func symmetricLaunchesGetTheirSlotsInLaunchOrder() {
    var trace = SymmetricLaunchTrace(spans: 0xABC0)
    let route = trace.mark(MoERoutingParams(), "route")
    let publish = trace.mark(CUDAExpertParallelParams(), "publish")
    let barrier = trace.mark(CUDAExpertParallelParams(), "barrier (route)")
    let gemm = trace.mark(MoEGemmParams(), "gemm1")
    let reduce = trace.mark(MoEReduceParams(), "reduce")
    #expect(trace.names == ["route", "publish", "barrier (route)", "gemm1", "reduce"])
    #expect(route.trace.spans == 0xABC0 && route.trace.phase == 0)
    #expect(publish.traceSpans == 0xABC0 && publish.tracePhase == 1)
    #expect(barrier.tracePhase == 2 && gemm.trace.phase == 3 && reduce.trace.phase == 4)
    #expect(gemm.trace.spans == 0xABC0 && reduce.trace.spans == 0xABC0)
    var untraced = SymmetricLaunchTrace()
    let p = untraced.mark(CUDAExpertParallelParams(), "publish")
    #expect(p.traceSpans == 0 && p.tracePhase == 0 && untraced.names == ["publish"])
}

/// Per phase, the spread of its SMs' latest ends (µs from the replay's first start): percentiles of the SMs that marked
/// it, each the median over replays; phases fewer than `minimumSMs` SMs marked, or missing from a replay, left out.
@Test func theEndsBySMArePercentilesOverTheSMsThatMarked() {
    let unrun: [UInt64] = [UInt64.max, 0]
    // Ten slots a phase. Phase 0 (route): one SM. Phase 1 (gemm1): ten SMs ending at 10, 11, …, 19 µs after the
    // replay's first start (1000 ns), except SM 9 at 30: a straggler.
    func replay(shift: UInt64) -> [UInt64] {
        var raw = [1_000 + shift, 5_000 + shift] + Array(repeating: unrun, count: 9).flatMap { $0 }
        for sm in 0..<10 {
            let end: UInt64 = sm == 9 ? 31_000 : UInt64(11_000 + 1_000 * sm)
            raw += [2_000 + shift, end + shift]
        }
        return raw
    }
    let names = ["route", "gemm1"]
    let ends = KernelTrace.smEnds(names: names, replays: [replay(shift: 0), replay(shift: 7_777)], slotsPerPhase: 10)
    #expect(ends.map(\.kernel) == ["gemm1"])
    #expect(ends[0].sms == 10)
    #expect(ends[0].percentiles == [10, 11, 15, 18, 30])  // of 10 sorted ends, indices round(q · 9): 0, 1, 5, 8, 9
    #expect(KernelTrace.describeEnds(ends) == "ends by SM (min / p10 / p50 / p90 / max µs): gemm1 10.0 / 11.0 / 15.0 / 18.0 / 30.0 on 10 SMs")
    // With a lower bound the one-SM route shows; a phase missing from one replay does not.
    #expect(KernelTrace.smEnds(names: names, replays: [replay(shift: 0)], slotsPerPhase: 10, minimumSMs: 1).map(\.kernel) == names)
    var partial = replay(shift: 0)
    for slot in 0..<10 { partial[2 * (10 + slot)] = UInt64.max; partial[2 * (10 + slot) + 1] = 0 }
    #expect(KernelTrace.smEnds(names: names, replays: [replay(shift: 0), partial], slotsPerPhase: 10).isEmpty)
}
