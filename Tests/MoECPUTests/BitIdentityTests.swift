import MoECore
import Testing

@testable import MoECPU

/// What expert parallelism relies on: the same bits whatever the thread count, the fused forward equal to the
/// stage pipeline (route + runExperts + reduce), and runExperts over disjoint expert subsets composing to the
/// whole. Also each fast path against the portable one.
@Suite struct BitIdentityTests {
    static let config = MoEConfig(hidden: 96, intermediate: 160, experts: 6, topK: 3)

    static func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

    @Test(arguments: CPUKernelPath.supported)
    func threadCountsGiveIdenticalBits(path: CPUKernelPath) throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 21)
        for T in [1, 7, 50] {
            let x = SyntheticModel.hiddenStates(tokens: T, hidden: Self.config.hidden, seed: UInt64(T))
            var first: MoEForwardResult?
            for workers in [1, 2, 3, 5] {
                let backend = try CPUBackend(weights: weights, workers: workers, kernels: path)
                backend.pool.serialWork = 0  // split every phase, however small
                let out = try backend.forward(x, tokens: T, routing: .renormalize, profiler: nil)
                if let first {
                    #expect(Self.bits(out.hidden) == Self.bits(first.hidden), "\(path) T=\(T): \(workers) workers differ from 1")
                    #expect(out.topkIds == first.topkIds && Self.bits(out.topkWeights) == Self.bits(first.topkWeights))
                } else {
                    first = out
                }
            }
        }
    }

    @Test(arguments: CPUKernelPath.supported)
    func forwardEqualsTheStagePipeline(path: CPUKernelPath) throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 22)
        let backend = try CPUBackend(weights: weights, workers: 2, kernels: path)
        for T in [1, 9, 40] {
            for mode in RoutingMode.allCases {
                let x = SyntheticModel.hiddenStates(tokens: T, hidden: Self.config.hidden, seed: 100 + UInt64(T))
                let fused = try backend.forward(x, tokens: T, routing: mode, profiler: nil)
                let staged = try MoEPipeline.forward(kernels: backend, input: x, tokens: T, mode: mode, profiler: nil)
                #expect(Self.bits(fused.hidden) == Self.bits(staged.hidden), "\(path) T=\(T) \(mode): forward ≠ MoEPipeline.forward")
                #expect(fused.topkIds == staged.topkIds && Self.bits(fused.topkWeights) == Self.bits(staged.topkWeights))
                // The in-place entry point is the same computation.
                var hidden = [Float](repeating: 0, count: T * Self.config.hidden)
                var ids = [Int32](repeating: 0, count: T * Self.config.topK)
                var topWeights = [Float](repeating: 0, count: T * Self.config.topK)
                try x.withUnsafeBufferPointer {
                    try backend.forward(
                        input: $0.baseAddress!, tokens: T, routing: mode, hidden: &hidden, topkIds: &ids,
                        topkWeights: &topWeights, profiler: nil)
                }
                #expect(Self.bits(hidden) == Self.bits(fused.hidden) && ids == fused.topkIds)
            }
        }
    }

    /// runExperts per subset of experts (as ranks do), reading rows already at their sorted positions (as a
    /// dispatch region holds them), equals one runExperts over all experts reading through the token gather.
    @Test(arguments: CPUKernelPath.supported)
    func expertSubsetsComposeToTheWhole(path: CPUKernelPath) throws {
        let c = Self.config
        let weights = try SyntheticModel.layer(config: c, seed: 23)
        let backend = try CPUBackend(weights: weights, workers: 2, kernels: path)
        backend.pool.serialWork = 0
        let T = 30
        let x = SyntheticModel.hiddenStates(tokens: T, hidden: c.hidden, seed: 5)
        var xBF16 = x.map { BF16.bits($0) }
        var ids = [Int32](repeating: 0, count: T * c.topK)
        var topWeights = [Float](repeating: 0, count: T * c.topK)
        backend.route(x: xBF16, tokens: T, mode: .renormalize, ids: &ids, weights: &topWeights, profiler: nil)
        // Expert 4 gets nothing: drop it from every token's choices (−1 = padding slot, routes nowhere).
        for s in ids.indices where ids[s] == 4 { ids[s] = -1 }
        let plan = RoutingPlan(topkIds: ids, tokens: T, topK: c.topK, experts: c.experts)
        let rowWeights = plan.sortedToSlot.map { topWeights[Int($0)] }
        #expect(plan.expertCounts[4] == 0)

        var whole = [UInt16](repeating: 0, count: T * c.topK * c.hidden)
        xBF16.withUnsafeMutableBufferPointer { xp in
            whole.withUnsafeMutableBufferPointer { out in
                plan.sortedToSlot.withUnsafeBufferPointer { order in
                    backend.runExperts(
                        plan: plan, experts: Array(0..<c.experts), rowWeights: rowWeights,
                        input: RowAddressing(base: xp.baseAddress!, indices: order.baseAddress!, divisor: Int32(c.topK), stride: c.hidden),
                        output: RowAddressing(base: out.baseAddress!, indices: order.baseAddress!, stride: c.hidden),
                        profiler: nil)
                }
            }
        }
        // Rows at their sorted positions, as the dispatch region of the owning rank holds them.
        var dispatched = [UInt16](repeating: 0, count: plan.routedSlots * c.hidden)
        for r in 0..<plan.routedSlots {
            let t = plan.token(ofSortedRow: r)
            for h in 0..<c.hidden { dispatched[r * c.hidden + h] = xBF16[t * c.hidden + h] }
        }
        var split = [UInt16](repeating: 0, count: T * c.topK * c.hidden)
        for subset in [[0, 3], [1, 2, 4], [5]] {
            dispatched.withUnsafeMutableBufferPointer { input in
                split.withUnsafeMutableBufferPointer { out in
                    plan.sortedToSlot.withUnsafeBufferPointer { order in
                        backend.runExperts(
                            plan: plan, experts: subset, rowWeights: rowWeights,
                            input: RowAddressing(base: input.baseAddress!, stride: c.hidden),
                            output: RowAddressing(base: out.baseAddress!, indices: order.baseAddress!, stride: c.hidden),
                            profiler: nil)
                    }
                }
            }
        }
        #expect(split == whole, "\(path): experts run in subsets differ from all at once")
    }

    /// Each fast path against the portable path on the same layers: close, not equal (different sum orders).
    @Test(arguments: CPUKernelPath.supported.filter { $0 != .portable })
    func fastPathsAgreeWithPortable(path: CPUKernelPath) throws {
        let cases: [(MoEConfig, [Int])] = [
            (Self.config, [1, 7, 33]),
            (MoEConfig(hidden: 64, intermediate: 64, experts: 4, topK: 4), [1, 5]),  // k = E
            (MoEPreset.tiny.config, [1, 20]),
        ]
        for (config, tokenCounts) in cases {
            let weights = try SyntheticModel.layer(config: config, seed: 24)
            let fast = try CPUBackend(weights: weights, workers: 2, kernels: path)
            fast.pool.serialWork = 0
            let portable = try CPUBackend(weights: weights, workers: 2, kernels: .portable)
            for T in tokenCounts {
                let x = SyntheticModel.hiddenStates(tokens: T, hidden: config.hidden, seed: UInt64(T))
                let a = try fast.forward(x, tokens: T, routing: .renormalize, profiler: nil)
                let b = try portable.forward(x, tokens: T, routing: .renormalize, profiler: nil)
                let error = Accuracy.relativeL2(a.hidden, b.hidden.map(Double.init))
                #expect(error <= 3e-3, "\(path) vs portable \(config) T=\(T): rel L2 \(error)")
            }
        }
    }

    /// The conformance suite's quick cases (awkward shapes, all tokens on one expert, a starved expert, large block
    /// scales, both routing modes) on every kernel path, judged as `Conformance.run` judges them; the float64 reference is
    /// computed once per case and shared by the paths.
    @Test func conformanceOnEveryPath() throws {
        for testCase in Conformance.cases(quick: true) {
            let weights = try Conformance.weights(for: testCase)
            let c = testCase.config
            let x = SyntheticModel.hiddenStates(tokens: testCase.tokens, hidden: c.hidden, seed: testCase.seed)
            let reference = try ReferenceMoE.forward(weights: weights, input: x, tokens: testCase.tokens, mode: testCase.mode)
            for path in CPUKernelPath.supported {
                let backend = try CPUBackend(weights: weights, workers: 2, kernels: path)
                let first = try backend.forward(x, tokens: testCase.tokens, routing: testCase.mode, profiler: nil)
                let second = try backend.forward(x, tokens: testCase.tokens, routing: testCase.mode, profiler: nil)
                let error = Accuracy.relativeL2(first.hidden, reference.hidden)
                let mismatches = Accuracy.routingMismatches(
                    ids: first.topkIds, reference: reference, tokens: testCase.tokens, experts: c.experts, k: c.topK)
                #expect(error <= 1e-2, "\(path) \(testCase): rel L2 \(error)")
                #expect(mismatches.isEmpty, "\(path) \(testCase): tokens \(mismatches) chose other experts")
                #expect(Self.bits(first.hidden) == Self.bits(second.hidden), "\(path) \(testCase): a second run differs")
                let skew = Conformance.skewNotApplied(testCase, weights: weights, topkIds: first.topkIds)
                #expect(skew == nil, "\(path) \(testCase): skew not applied: \(skew ?? "")")
            }
        }
    }
}
