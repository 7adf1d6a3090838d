import MoECore
import MoECPU
import Testing

@testable import MoEParallel

#if canImport(Glibc)
import Glibc
#endif

/// A serving group (`moe serve --ranks R`): rank 0 takes batches one at a time and the other ranks follow. Ranks
/// run as threads over real shared memory; `LaunchCommandTests` runs the same through the `moe` binary.
@Suite struct ExpertParallelServingTests {
    static let config = MoEConfig(hidden: 64, intermediate: 32, experts: 8, topK: 4)
    static let maxBatch = 16

    /// Joins R thread ranks as a serving group; rank 0 runs `root`, the others `serveFollower()` (or `follower`).
    static func serve<T: Sendable>(
        ranks: Int, comm: CommMode, weights: MoELayerWeights, timeout: Double = 30,
        follower: (@Sendable (ExpertParallelServingGroup) throws -> Void)? = nil,
        root: @escaping @Sendable (ExpertParallelServingGroup) throws -> T
    ) -> (root: Result<T, any Error>, followers: [Result<Void, any Error>]) {
        let job = SymmetricHeap.newJobID()
        let results = RankThreads.run(ranks: ranks) { rank -> T? in
            var options = ExpertParallelOptions()
            options.workers = 1
            options.timeoutSeconds = timeout
            let runner = try ExpertParallelRunner(
                environment: RankEnvironment(jobID: job, rank: rank, world: ranks), layers: [weights],
                maxBatchTokens: maxBatch, options: options)
            defer { runner.close() }
            let group = try ExpertParallelServingGroup(member: runner, comm: comm, maxBatchTokens: maxBatch)
            if rank == 0 { return try root(group) }
            try (follower ?? { try $0.serveFollower() })(group)
            return nil
        }
        #expect(leftoverSegments(jobID: job).isEmpty)
        return (results[0].map { $0! }, results.dropFirst().map { $0.map { _ in () } })
    }

    static func expectBitIdentical(_ got: MoEForwardResult, _ expected: MoEForwardResult, _ label: String) {
        let differing = zip(got.hidden, expected.hidden).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(got.hidden.count == expected.hidden.count && differing == 0, "\(label): \(differing) values differ")
        #expect(got.topkIds == expected.topkIds, "\(label): top-k ids differ")
        #expect(got.topkWeights.map(\.bitPattern) == expected.topkWeights.map(\.bitPattern), "\(label): top-k weights differ")
    }

    /// Batches of every size the group takes (one token, fewer than the ranks, padding, the maximum), both routing
    /// modes, one after another: each answer equals the single-rank forward of that batch, bit for bit.
    @Test(arguments: [1, 2, 3], CommMode.allCases)
    func servedBatchesAreBitIdenticalToSingleRank(ranks: Int, comm: CommMode) throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 90 + UInt64(ranks))
        let batches: [(tokens: Int, mode: RoutingMode)] = [
            (1, .renormalize), (5, .softmaxFirst), (max(1, ranks - 1), .renormalize), (Self.maxBatch, .renormalize),
            (7, .softmaxFirst), (2, .renormalize),
        ]
        let single = CPUBackend(weights: weights, workers: 1)
        let outcome = Self.serve(ranks: ranks, comm: comm, weights: weights) { group -> [MoEForwardResult] in
            var answers: [MoEForwardResult] = []
            for (index, batch) in batches.enumerated() {
                let input = SyntheticModel.hiddenStates(tokens: batch.tokens, hidden: Self.config.hidden, seed: 500 + UInt64(index))
                answers.append(try group.forward(input, tokens: batch.tokens, routing: batch.mode))
            }
            try group.stop()
            return answers
        }
        let answers = try outcome.root.get()
        for result in outcome.followers { try result.get() }
        for (index, batch) in batches.enumerated() {
            let input = SyntheticModel.hiddenStates(tokens: batch.tokens, hidden: Self.config.hidden, seed: 500 + UInt64(index))
            let expected = try single.forward(input, tokens: batch.tokens, routing: batch.mode, profiler: nil)
            Self.expectBitIdentical(answers[index], expected, "R=\(ranks) \(comm) batch \(index) (T=\(batch.tokens), \(batch.mode))")
        }
    }

    /// An idle server is not a stalled rank: followers wait for the next batch past the job's timeout.
    @Test func followersWaitForTheNextBatchPastTheTimeout() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 7)
        let input = SyntheticModel.hiddenStates(tokens: 3, hidden: Self.config.hidden, seed: 8)
        let outcome = Self.serve(ranks: 2, comm: .symmetric, weights: weights, timeout: 0.5) { group -> MoEForwardResult in
            _ = try group.forward(input, tokens: 3, routing: .renormalize)
            usleep(1_200_000)
            let answer = try group.forward(input, tokens: 3, routing: .renormalize)
            try group.stop()
            return answer
        }
        let expected = try CPUBackend(weights: weights, workers: 1).forward(input, tokens: 3, routing: .renormalize, profiler: nil)
        Self.expectBitIdentical(try outcome.root.get(), expected, "after an idle pause")
        try outcome.followers[0].get()
    }

    /// Bad batches are refused on rank 0 before any rank sees them, and the group goes on serving.
    @Test func badBatchesAreRefusedAndTheGroupKeepsServing() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 11)
        let H = Self.config.hidden
        let good = SyntheticModel.hiddenStates(tokens: 4, hidden: H, seed: 12)
        let outcome = Self.serve(ranks: 2, comm: .alltoall, weights: weights) { group -> (errors: [String], answer: MoEForwardResult) in
            var errors: [String] = []
            var withNaN = good
            withNaN[2 * H + 5] = .nan
            var beyondBF16 = good
            beyondBF16[3 * H + 1] = 3.4e38  // finite in float32, +Inf in bf16: on rank 1, it must not end the group
            let bad: [(input: [Float], tokens: Int)] = [
                (withNaN, 4), (beyondBF16, 4), (Array(good.prefix(3 * H + 1)), 4), ([Float](repeating: 0, count: (Self.maxBatch + 1) * H), Self.maxBatch + 1),
                ([], 0),
            ]
            for (input, tokens) in bad {
                do {
                    _ = try group.forward(input, tokens: tokens, routing: .renormalize)
                    errors.append("accepted")
                } catch {
                    errors.append("\(error)")
                }
            }
            #expect(group.failure == nil)
            let answer = try group.forward(good, tokens: 4, routing: .renormalize)
            try group.stop()
            return (errors, answer)
        }
        let (errors, answer) = try outcome.root.get()
        try outcome.followers[0].get()
        #expect(errors[0].contains("row 2"), "\(errors[0])")
        #expect(errors[1].contains("row 3") && errors[1].contains("rounds to infinity"), "\(errors[1])")
        #expect(errors[2].contains("expected T·H"), "\(errors[2])")
        #expect(errors[3].contains("more than this group's \(Self.maxBatch)"), "\(errors[3])")
        #expect(errors[4].contains("at least 1 token"), "\(errors[4])")
        let expected = try CPUBackend(weights: weights, workers: 1).forward(good, tokens: 4, routing: .renormalize, profiler: nil)
        Self.expectBitIdentical(answer, expected, "after the refusals")
    }

    /// A follower that leaves the job fails rank 0's next batch with its name; every later batch fails with the same
    /// reason, and the other followers end instead of waiting for a next batch forever.
    @Test func aFollowerThatLeavesFailsTheGroup() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 13)
        let input = SyntheticModel.hiddenStates(tokens: 6, hidden: Self.config.hidden, seed: 14)
        let outcome = Self.serve(
            ranks: 3, comm: .symmetric, weights: weights,
            follower: { group in
                guard group.member.rank == 2 else { return try group.serveFollower() }
                group.member.close()  // leaves without waiting for rank 0's stop
            },
            root: { group -> [String] in
                var errors: [String] = []
                for _ in 0..<2 {
                    do { _ = try group.forward(input, tokens: 6, routing: .renormalize) } catch { errors.append("\(error)") }
                }
                try group.stop()  // does nothing once the group failed
                return errors
            })
        let errors = try outcome.root.get()
        #expect(errors.count == 2)
        #expect(errors.first?.contains("rank 2") == true, "\(errors)")
        #expect(errors.last?.hasPrefix("the expert-parallel group stopped serving: ") == true, "\(errors)")
        #expect(throws: (any Error).self) { try outcome.followers[0].get() }
    }

    /// Rank 0 giving up ends followers waiting (without a timeout) for the next batch, at once.
    @Test func rankZeroAbortingEndsIdleFollowers() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 15)
        let started = MonotonicClock.seconds()
        let outcome = Self.serve(ranks: 3, comm: .symmetric, weights: weights) { group -> Void in
            usleep(100_000)
            group.member.heap.abort(message: "test: rank 0 gives up")
        }
        try outcome.root.get()
        for follower in outcome.followers {
            #expect(throws: (any Error).self) { try follower.get() }
            if case .failure(let error) = follower { #expect("\(error)".contains("rank 0 gives up"), "\(error)") }
        }
        #expect(MonotonicClock.seconds() - started < 10)
    }

    /// A batch whose per-rank share cannot fit a dispatch region is refused when the group is made.
    @Test func aGroupLargerThanItsHeapIsRefused() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 16)
        let outcome = Self.serve(ranks: 1, comm: .symmetric, weights: weights) { group -> String in
            do {
                _ = try ExpertParallelServingGroup(member: group.member, comm: .symmetric, maxBatchTokens: 10_000)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(try outcome.root.get().contains("a step here takes at most 64 per rank: lower --max-batch-tokens or raise --max-tokens-per-rank"))
    }

    /// A rank runner with a batch limit below 1 is refused before it joins (no segment made, nothing to wait for).
    @Test(arguments: [(0, 4), (16, 0)])
    func batchLimitsBelowOneAreRefusedBeforeJoining(maxBatchTokens: Int, maxTokensPerRank: Int) throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 17)
        let job = SymmetricHeap.newJobID()
        var options = ExpertParallelOptions()
        options.maxTokensPerRank = maxTokensPerRank
        #expect(throws: ExpertParallelError.invalidArgument("batch and --max-tokens-per-rank must be ≥ 1")) {
            _ = try ExpertParallelRunner(
                environment: RankEnvironment(jobID: job, rank: 0, world: 1), layers: [weights],
                maxBatchTokens: maxBatchTokens, options: options)
        }
        #expect(leftoverSegments(jobID: job).isEmpty)
    }
}
