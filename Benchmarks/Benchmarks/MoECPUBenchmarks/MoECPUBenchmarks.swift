// Host-side overhead of the CPU backend, guarded against regressions:
// - allocations per forward pass after warm-up: 0 for the in-place forward and for runExperts (the expert-parallel
//   entry point), exactly the three result arrays for the array-returning `forward`;
// - the dispatch cost of a tiny layer (E=8, k=4, H=128, I=96), where the kernels are negligible and the time is
//   the pool hand-overs, the plan and the bookkeeping.
// Static thresholds (malloc counts) live in Thresholds/: from Benchmarks/, `swift package benchmark thresholds check`
// (`thresholds update --metric mallocCountTotal` rewrites them). Names have no spaces: package-benchmark 1.38.1
// writes threshold files with spaces turned into '_' but looks them up by the raw name.
// The dispatch cost is guarded by comparing runs: `swift package benchmark baseline update main` on the old commit,
// then `swift package benchmark baseline check main` on the new one.
import Benchmark
import MoECPU
import MoECore

/// A backend with buffers for `tokens` tokens, warmed up so its workspace has reached its size.
final class Fixture: @unchecked Sendable {
    let backend: CPUBackend
    let tokens: Int
    let input: [Float]
    var hidden: [Float]
    var ids: [Int32]
    var weights: [Float]
    let plan: RoutingPlan
    var rowWeights: [Float]
    var x: [UInt16]
    var combine: [UInt16]

    init(config: MoEConfig, tokens: Int, kernels: CPUKernelPath, workers: Int) throws {
        let layer = try SyntheticModel.layer(config: config, seed: 3)
        backend = try CPUBackend(weights: layer, workers: workers, kernels: kernels)
        self.tokens = tokens
        input = SyntheticModel.hiddenStates(tokens: tokens, hidden: config.hidden, seed: 4)
        hidden = [Float](repeating: 0, count: tokens * config.hidden)
        ids = [Int32](repeating: 0, count: tokens * config.topK)
        weights = [Float](repeating: 0, count: tokens * config.topK)
        let routed = try backend.forward(input, tokens: tokens, routing: .renormalize, profiler: nil)
        plan = RoutingPlan(topkIds: routed.topkIds, tokens: tokens, topK: config.topK, experts: config.experts)
        rowWeights = plan.sortedToSlot.map { routed.topkWeights[Int($0)] }
        x = input.map { BF16.bits($0) }
        combine = [UInt16](repeating: 0, count: tokens * config.topK * config.hidden)
        for _ in 0..<3 { try forwardInPlace() }
    }

    func forwardInPlace() throws {
        try input.withUnsafeBufferPointer { input in
            try backend.forward(
                input: input.baseAddress!, tokens: tokens, routing: .renormalize, hidden: &hidden, topkIds: &ids,
                topkWeights: &weights, profiler: nil)
        }
    }

    func runExperts() {
        let c = backend.config
        x.withUnsafeMutableBufferPointer { xp in
            combine.withUnsafeMutableBufferPointer { cp in
                plan.sortedToSlot.withUnsafeBufferPointer { order in
                    rowWeights.withUnsafeBufferPointer { rw in
                        backend.runExperts(
                            plan: plan, experts: allExperts, rowWeights: rw.baseAddress!,
                            input: RowAddressing(base: xp.baseAddress!, indices: order.baseAddress!, divisor: Int32(c.topK), stride: c.hidden),
                            output: RowAddressing(base: cp.baseAddress!, indices: order.baseAddress!, stride: c.hidden),
                            profiler: nil)
                    }
                }
            }
        }
    }

    lazy var allExperts = Array(0..<backend.config.experts)
}

let benchmarks: @Sendable () -> Void = {
    let zeroAllocations: [BenchmarkMetric: BenchmarkThresholds] = [
        .mallocCountTotal: .init(absolute: [.p0: 0, .p50: 0, .p90: 0, .p100: 0])
    ]
    // Only wall clock and malloc counts: the OS-statistics metrics (cpuTotal, contextSwitches, ...) make the harness
    // itself malloc 16 times per iteration on Linux, and .instructions (perf counters) slows the pool's hand-overs
    // a hundredfold. "empty body" checks that the harness adds no mallocs of its own.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        warmupIterations: 10,
        maxDuration: .seconds(2),
        maxIterations: 20_000,
        thresholds: zeroAllocations)

    Benchmark("empty_body_harness_calibration") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(0) }
    }

    // The fastest path this CPU has (names leave it out, so thresholds apply on any machine).
    let tiny = MoEPreset.tiny.config
    let path = CPUKernelPath.best
    for workers in [1, 2] {
        for tokens in [1, 64] {
            guard let fixture = try? Fixture(config: tiny, tokens: tokens, kernels: path, workers: workers) else {
                fatalError("cannot build the tiny-layer fixture")
            }
            Benchmark("forward_in_place,tiny,T=\(tokens),workers=\(workers)") { benchmark in
                for _ in benchmark.scaledIterations { try fixture.forwardInPlace() }
                blackHole(fixture.hidden[0])
            }
            Benchmark("runExperts,tiny,T=\(tokens),workers=\(workers)") { benchmark in
                for _ in benchmark.scaledIterations { fixture.runExperts() }
                blackHole(fixture.combine[0])
            }
        }
    }

    // The array-returning forward allocates its three result arrays and nothing else.
    guard let fixture = try? Fixture(config: tiny, tokens: 1, kernels: path, workers: 2) else {
        fatalError("cannot build the tiny-layer fixture")
    }
    Benchmark(
        "forward_returning_arrays,tiny,T=1,workers=2",
        configuration: .init(thresholds: [.mallocCountTotal: .init(absolute: [.p0: 3, .p50: 3, .p90: 3, .p100: 3])])
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try fixture.backend.forward(fixture.input, tokens: 1, routing: .renormalize, profiler: nil))
        }
    }
}
