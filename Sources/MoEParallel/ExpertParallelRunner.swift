import MoECPU
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a global batch of T tokens splits over R ranks: rank r holds [r·T_loc, (r+1)·T_loc) ∩ [0, T), T_loc = ⌈T/R⌉
/// (the last ranks may hold fewer, even none).
enum GlobalBatch {
    static func range(rank: Int, world: Int, tokens: Int) -> Range<Int> {
        let perRank = (tokens + world - 1) / world
        let first = min(tokens, rank * perRank)
        return first..<min(tokens, first + perRank)
    }
}

/// How a rank runs expert parallelism (the flags `moe forward/bench --ranks` and `moe launch` pass down).
public struct ExpertParallelOptions: Sendable {
    /// `contiguous`, `round-robin`, an inline owner list, or a JSON map file (see `ExpertAssignment.parse`).
    public var expertMap: String = "contiguous"
    /// The heap capacity cap T_cap: at most this many tokens per rank per step; larger batches run in chunks.
    public var maxTokensPerRank: Int = 4096
    /// CPU threads per rank; nil: this machine's cores divided among the ranks on this node.
    public var workers: Int?
    /// Seconds to wait for a late peer; nil: the launcher's (MOE_TIMEOUT, default 60).
    public var timeoutSeconds: Double?
    /// The GPU all-to-all baseline's transport; nil: the launcher's (MOE_A2A_TRANSPORT), else auto.
    public var allToAllTransport: AllToAllTransportChoice?
    /// Runs before this rank arrives at every barrier (fault injection in tests).
    public var barrierHook: (@Sendable (ExpertParallelPhase, Int) -> Void)?

    public init() {}
}

/// One rank of an expert-parallel job on the CPU: joins the job's symmetric heaps, runs layers over the
/// global batch, and gathers results on rank 0. This is what `moe forward --ranks R` and `moe bench --ranks R`
/// run in every rank process (started by `RankLauncher`).
///
/// Every rank is given the same global batch; rank r works on tokens [r·T_loc, (r+1)·T_loc) with
/// T_loc = ⌈T/R⌉ (the last ranks may hold fewer, even none).
public final class ExpertParallelRunner {
    public let environment: RankEnvironment
    public let assignment: ExpertAssignment
    public let heap: SymmetricHeap
    public let engine: ExpertParallelEngine
    public let config: MoEConfig
    /// One CPU backend per layer (the stage kernels the engine calls).
    public let backends: [CPUBackend]
    public let workers: Int

    public var rank: Int { environment.rank }
    public var world: Int { environment.world }
    public var isRoot: Bool { environment.rank == 0 }

    /// Joins the job. `maxBatchTokens` is the largest global batch this runner will see (it sizes the heap,
    /// capped by `options.maxTokensPerRank` per rank). Every rank must pass the same layers and options.
    public init(
        environment: RankEnvironment, layers: [MoELayerWeights], maxBatchTokens: Int, options: ExpertParallelOptions = .init()
    ) throws {
        try environment.validate()
        guard let first = layers.first else { throw ExpertParallelError.invalidArgument("no layers to run") }
        guard layers.allSatisfy({ $0.config == first.config }) else {
            throw ExpertParallelError.invalidArgument("all layers must share one config")
        }
        let network = try NetworkRendezvous.forJob(environment)
        try RankEnvironment.prepareRankProcess(maxBatchTokens: maxBatchTokens, maxTokensPerRank: options.maxTokensPerRank)
        let config = first.config
        let world = environment.world
        self.environment = environment
        self.config = config
        self.assignment = try ExpertAssignment.parse(options.expertMap, experts: config.experts, ranks: world)
        let tokensPerRank = (maxBatchTokens + world - 1) / world
        let layout = try SymmetricHeapLayout(
            ranks: world, capacity: min(tokensPerRank, options.maxTokensPerRank), topK: config.topK, hidden: config.hidden)
        heap = try SymmetricHeap.join(
            jobID: environment.jobID, rank: environment.rank, world: world, layout: layout,
            identity: HeapIdentity(layers: layers, assignment: assignment),
            timeoutSeconds: options.timeoutSeconds ?? environment.timeoutSeconds, network: network,
            barrierHook: options.barrierHook)
        engine = try ExpertParallelEngine(heap: heap, assignment: assignment, config: config)
        let workers = options.workers ?? max(1, ProcessorCount.online / environment.localWorld)
        self.workers = workers
        // Each rank packs only its own experts' weights (1/R of them); the router still sees all E.
        backends = try layers.map { [engine] in try CPUBackend(weights: $0, workers: workers, experts: engine.localExperts) }
    }

    deinit { heap.close() }

    /// Marks this rank done (peers still waiting for it fail at once instead of timing out).
    public func close() { heap.close() }

    /// This rank's token range of a global batch of `tokens`.
    public func tokenRange(tokens: Int) -> Range<Int> { GlobalBatch.range(rank: rank, world: world, tokens: tokens) }

    /// Runs every layer on the global batch [T, H] (each rank computes its own tokens' share); returns the
    /// full [T, H] output on rank 0 and nil on the other ranks. Bit-identical to running the layers one after
    /// the other on a single rank with the CPU backend.
    public func forward(
        _ globalInput: [Float], tokens: Int, mode: RoutingMode, comm: CommMode, profiler: Profiler? = nil
    ) throws -> [Float]? {
        let H = config.hidden
        guard tokens >= 1, globalInput.count == tokens * H else {
            throw ExpertParallelError.invalidArgument(
                "input holds \(globalInput.count) values; expected T·H = \(tokens)·\(H)")
        }
        let range = tokenRange(tokens: tokens)
        let share = Array(globalInput[(range.lowerBound * H)..<(range.upperBound * H)])
        return try gather(forwardShare(share, tokens: tokens, mode: mode, comm: comm, profiler: profiler), tokens: tokens)
    }

    /// This rank's share [T_r, H] of a global batch of `tokens` through every layer; returns its output rows.
    public func forwardShare(
        _ share: [Float], tokens: Int, mode: RoutingMode, comm: CommMode, profiler: Profiler? = nil
    ) throws -> [Float] {
        let range = tokenRange(tokens: tokens)
        guard share.count == range.count * config.hidden else {
            throw ExpertParallelError.invalidArgument(
                "rank \(rank)'s share holds \(share.count) values; expected \(range.count)·\(config.hidden)")
        }
        let tokensPerRank = (tokens + world - 1) / world
        var x = share
        for (index, backend) in backends.enumerated() {
            x = try engine.forward(
                x, validTokens: range.count, tokensPerRank: tokensPerRank, kernels: backend, mode: mode, comm: comm,
                layer: index, profiler: profiler)
        }
        return x
    }

    /// Collects every rank's [T_r, H] rows on rank 0, as bf16 through rank 0's dispatch region (the values
    /// are bf16 already, so nothing is lost), in rounds of at most T_cap·k rows per rank.
    public func gather(_ rows: [Float], tokens: Int) throws -> [Float]? {
        let H = config.hidden
        let tokensPerRank = (tokens + world - 1) / world
        let round = heap.layout.capacity * heap.layout.topK
        let own = tokenRange(tokens: tokens)
        guard rows.count == own.count * H else {
            throw ExpertParallelError.invalidArgument("rank \(rank) gathers \(rows.count) values; its share is \(own.count)·\(H)")
        }
        var result: [Float]? = isRoot ? [Float](repeating: 0, count: tokens * H) : nil
        var bits = [UInt16](repeating: 0, count: round * H)
        var start = 0
        do {
            while start < tokensPerRank {
                let count = max(0, min(round, own.count - start))
                for i in 0..<(count * H) { bits[i] = BF16.bits(rows[start * H + i]) }
                try heap.store(to: 0, .dispatch, byteOffset: rank * round * H * 2, from: bits, count: count * H * 2)
                try heap.barrier(.gather, layer: 0)
                if isRoot {
                    let landing = heap.pointer(to: .dispatch, rank: 0, as: UInt16.self)
                    for peer in 0..<world {
                        let first = min(tokens, peer * tokensPerRank)
                        let peerCount = max(0, min(round, min(tokens, first + tokensPerRank) - first - start))
                        let source = landing + peer * round * H
                        for i in 0..<(peerCount * H) { result![(first + start) * H + i] = BF16.float(source[i]) }
                    }
                }
                try heap.barrier(.gather, layer: 0)
                start += round
            }
        } catch {
            heap.abort(message: "rank \(rank) while gathering outputs: \(error)")
            throw error
        }
        return result
    }
}
