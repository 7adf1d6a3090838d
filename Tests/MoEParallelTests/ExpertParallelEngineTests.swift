import MoECore
import MoECPU
import Testing

@testable import MoEParallel

/// EP=R must equal the single-rank CPU forward bit for bit (DESIGN §4), on both paths, for every R and every
/// awkward routing. Ranks run as threads over real shared memory.
@Suite struct ExpertParallelEngineTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var config: MoEConfig
        var tokens: Int
        var ranks: Int
        var map: String = "contiguous"
        /// Router bias added to these experts, to force routing.
        var favoured: [Int] = []
        var capacity: Int? = nil
        var layers: Int = 1
        var seed: UInt64 = 1
        var description: String { "\(name) R=\(ranks) T=\(tokens) \(config) seed \(seed)" }
    }

    static let small = MoEConfig(hidden: 64, intermediate: 32, experts: 8, topK: 4)
    static let awkward = MoEConfig(hidden: 96, intermediate: 160, experts: 5, topK: 3)
    static let kEqualsE = MoEConfig(hidden: 32, intermediate: 64, experts: 4, topK: 4)
    static let topOne = MoEConfig(hidden: 32, intermediate: 32, experts: 6, topK: 1)

    static let cases: [Case] = {
        var cases: [Case] = []
        for ranks in 1...4 {
            cases.append(Case(name: "random", config: small, tokens: 13, ranks: ranks, seed: UInt64(10 + ranks)))
            cases.append(Case(name: "one token per rank", config: small, tokens: ranks, ranks: ranks, seed: 20))
            cases.append(Case(name: "awkward shape, padding", config: awkward, tokens: 7, ranks: ranks, seed: 30))
        }
        cases.append(Case(name: "k = E", config: kEqualsE, tokens: 6, ranks: 4, seed: 40))
        cases.append(Case(name: "k = 1, fewer tokens than ranks", config: topOne, tokens: 2, ranks: 3, seed: 41))
        // Experts 0-3 on rank 0 take every token: rank 1's experts get nothing.
        cases.append(Case(name: "all tokens to rank 0", config: small, tokens: 9, ranks: 2, favoured: [0, 1, 2, 3], seed: 50))
        // An explicit map gives rank 0 six experts, ranks 1 and 2 one each; all tokens go to rank 0.
        cases.append(Case(
            name: "explicit map, ranks 1-2 idle", config: small, tokens: 5, ranks: 3, map: "0,0,0,0,0,0,1,2",
            favoured: [0, 1, 2, 3], seed: 51))
        cases.append(Case(name: "round-robin map", config: small, tokens: 11, ranks: 3, map: "round-robin", seed: 52))
        cases.append(Case(name: "nested explicit map", config: awkward, tokens: 9, ranks: 2, map: "[[4,0],[1,2,3]]", seed: 53))
        // A batch above the heap capacity runs in chunks.
        cases.append(Case(name: "chunked (capacity 2)", config: small, tokens: 17, ranks: 2, capacity: 2, seed: 60))
        cases.append(Case(name: "three layers", config: small, tokens: 10, ranks: 3, layers: 3, seed: 70))
        return cases
    }()

    @Test(arguments: 0..<cases.count, CommMode.allCases)
    func bitIdenticalToSingleRank(caseIndex: Int, comm: CommMode) throws {
        let c = Self.cases[caseIndex]
        for mode in RoutingMode.allCases {
            let layers = try (0..<c.layers).map { layer -> MoELayerWeights in
                var weights = try SyntheticModel.layer(config: c.config, seed: c.seed, layer: layer)
                for e in c.favoured { weights.routerBias[e] += 64 }
                return weights
            }
            let input = SyntheticModel.hiddenStates(tokens: c.tokens, hidden: c.config.hidden, seed: c.seed)
            var expected = input
            for weights in layers {
                let single = try CPUBackend(weights: weights, workers: 1).forward(expected, tokens: c.tokens, routing: mode, profiler: nil)
                if !c.favoured.isEmpty {
                    // The case is about this routing: make sure it really happens.
                    #expect(single.topkIds.allSatisfy { c.favoured.contains(Int($0)) }, "\(c): routing not forced")
                }
                expected = single.hidden
            }
            let outputs = try Self.runRanks(c, layers: layers, input: input, mode: mode, comm: comm)
            #expect(outputs.count == expected.count, "\(c) \(mode) \(comm)")
            let differing = zip(outputs, expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(c) \(mode) \(comm): \(differing) of \(expected.count) values differ")
        }
    }

    /// Runs the case on R thread ranks and returns the concatenated [T, H] output.
    static func runRanks(
        _ c: Case, layers: [MoELayerWeights], input: [Float], mode: RoutingMode, comm: CommMode
    ) throws -> [Float] {
        let H = c.config.hidden
        let tokensPerRank = (c.tokens + c.ranks - 1) / c.ranks
        let assignment = try ExpertAssignment.parse(c.map, experts: c.config.experts, ranks: c.ranks)
        let identity = HeapIdentity(layers: layers, assignment: assignment)
        let layout = try SymmetricHeapLayout(
            ranks: c.ranks, capacity: c.capacity ?? tokensPerRank, topK: c.config.topK, hidden: H, resultWords: 8)
        let job = SymmetricHeap.newJobID()
        let results = RankThreads.run(ranks: c.ranks) { rank -> [Float] in
            let heap = try SymmetricHeap.join(
                jobID: job, rank: rank, world: c.ranks, layout: layout, identity: identity, timeoutSeconds: 30)
            defer { heap.close() }
            let engine = try ExpertParallelEngine(heap: heap, assignment: assignment, config: c.config)
            let first = min(c.tokens, rank * tokensPerRank)
            let last = min(c.tokens, first + tokensPerRank)
            var x = Array(input[(first * H)..<(last * H)])
            for (index, weights) in layers.enumerated() {
                // A rank's backend packs only its own experts, as ExpertParallelRunner's do.
                let kernels = try CPUBackend(weights: weights, workers: 1, experts: assignment.expertsOfRank[rank])
                x = try engine.forward(
                    x, validTokens: last - first, tokensPerRank: tokensPerRank,
                    kernels: kernels, mode: mode, comm: comm, layer: index)
            }
            return x
        }
        #expect(leftoverSegments(jobID: job).isEmpty)
        return try results.flatMap { try $0.get() }
    }

    @Test func bothPathsReportPhasesAndBytes() throws {
        let c = Case(name: "measure", config: Self.small, tokens: 8, ranks: 2, seed: 5)
        let weights = try SyntheticModel.layer(config: c.config, seed: c.seed)
        let assignment = try ExpertAssignment.contiguous(experts: 8, ranks: 2)
        let layout = try SymmetricHeapLayout(ranks: 2, capacity: 4, topK: 4, hidden: 64, resultWords: 8)
        let job = SymmetricHeap.newJobID()
        let input = SyntheticModel.hiddenStates(tokens: 8, hidden: 64, seed: 5)
        let results = RankThreads.run(ranks: 2) { rank -> ([LayerMeasurement], [Profiler.Record]) in
            let heap = try SymmetricHeap.join(
                jobID: job, rank: rank, world: 2, layout: layout,
                identity: HeapIdentity(layers: [weights], assignment: assignment))
            defer { heap.close() }
            let engine = try ExpertParallelEngine(heap: heap, assignment: assignment, config: c.config)
            let kernels = CPUBackend(weights: weights, workers: 1)
            let profiler = Profiler(rank: rank)
            let measurements = try CommMode.allCases.map { comm in
                var measurement = LayerMeasurement()
                _ = try engine.forward(
                    Array(input[(rank * 4 * 64)..<((rank + 1) * 4 * 64)]), validTokens: 4, tokensPerRank: 4,
                    kernels: kernels, mode: .renormalize, comm: comm, profiler: profiler, measurement: &measurement)
                return measurement
            }
            return (measurements, profiler.records)
        }
        for (rank, result) in results.enumerated() {
            let (measurements, records) = try result.get()
            // The profiler (rank set) holds the kernels' stages and every EP phase of both paths.
            #expect(records.allSatisfy { $0.rank == rank })
            let stages = Set(records.map(\.stage))
            for comm in CommMode.allCases {
                for stage in ExpertParallelStage.allCases { #expect(stages.contains("ep.\(comm).\(stage.rawValue)"), "\(stages)") }
            }
            #expect(stages.contains("router") && stages.contains("reduce"), "\(stages)")
            #expect(records.first { $0.stage == "ep.symmetric.dispatch" }?.bytes == Double(4 * 4 * 64 * 2))
            for (comm, m) in zip(CommMode.allCases, measurements) {
                #expect(m.seconds.allSatisfy { $0 >= 0 } && m.totalSeconds > 0, "rank \(rank) \(comm)")
                let dispatch = ExpertParallelStage.dispatch.index
                // Each rank sends its 4 tokens × k=4 slots (symmetric: a row per slot).
                if comm == .symmetric { #expect(m.bytesMoved[dispatch] == Double(4 * 4 * 64 * 2)) }
                #expect(m.bytesRemote[dispatch] <= m.bytesMoved[dispatch])
                #expect(m.bytesMoved[ExpertParallelStage.combine.index] > 0)
            }
        }
    }

    @Test func mismatchedStepShapesAndBadInputFailOnEveryRank() throws {
        let weights = try SyntheticModel.layer(config: Self.small, seed: 3)
        let assignment = try ExpertAssignment.contiguous(experts: 8, ranks: 2)
        let layout = try SymmetricHeapLayout(ranks: 2, capacity: 4, topK: 4, hidden: 64, resultWords: 8)
        let job = SymmetricHeap.newJobID()
        let results = RankThreads.run(ranks: 2) { rank -> Void in
            let heap = try SymmetricHeap.join(
                jobID: job, rank: rank, world: 2, layout: layout,
                identity: HeapIdentity(layers: [weights], assignment: assignment), timeoutSeconds: 10)
            defer { heap.close() }
            let engine = try ExpertParallelEngine(heap: heap, assignment: assignment, config: Self.small)
            let tokensPerRank = rank == 0 ? 2 : 3  // disagree
            _ = try engine.forward(
                SyntheticModel.hiddenStates(tokens: 2, hidden: 64, seed: 1), validTokens: 2, tokensPerRank: tokensPerRank,
                kernels: CPUBackend(weights: weights, workers: 1), mode: .renormalize, comm: .symmetric)
        }
        for result in results {
            guard case .failure(let error) = result else {
                Issue.record("a rank ran a step whose shapes the ranks disagree on")
                continue
            }
            #expect("\(error)".contains("disagree on the padded tokens per rank"), "\(error)")
        }

        let job2 = SymmetricHeap.newJobID()
        let results2 = RankThreads.run(ranks: 2) { rank -> Void in
            let heap = try SymmetricHeap.join(
                jobID: job2, rank: rank, world: 2, layout: layout,
                identity: HeapIdentity(layers: [weights], assignment: assignment), timeoutSeconds: 10)
            defer { heap.close() }
            let engine = try ExpertParallelEngine(heap: heap, assignment: assignment, config: Self.small)
            var x = SyntheticModel.hiddenStates(tokens: 2, hidden: 64, seed: 1)
            if rank == 1 { x[70] = .nan }
            _ = try engine.forward(
                x, validTokens: 2, tokensPerRank: 2, kernels: CPUBackend(weights: weights, workers: 1),
                mode: .renormalize, comm: .alltoall)
        }
        guard case .failure(let own) = results2[1], case .nonFiniteInput(let row, let column, _)? = own as? MoEError else {
            Issue.record("rank 1 should reject its NaN input: \(results2[1])")
            return
        }
        #expect(row == 1 && column == 6)
        guard case .failure(let peer) = results2[0], case .peerAborted(1, let message)? = peer as? ExpertParallelError else {
            Issue.record("rank 0 should fail with rank 1's reason: \(results2[0])")
            return
        }
        #expect(message.contains("non-finite"), "\(message)")
    }
}
