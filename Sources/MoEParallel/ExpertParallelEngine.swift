import MoECore

/// How tokens travel between ranks.
public enum CommMode: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// DESIGN §4: one-sided stores into peers' symmetric heaps at positions every rank computes from the
    /// gathered routing; static shapes, no count exchange.
    case symmetric
    /// The baseline it replaces: per-destination counts exchanged first (a host synchronisation), then
    /// variable-size all-to-all of packed token rows and back, run eagerly.
    case alltoall

    public var description: String { rawValue }
}

/// The phases a rank's layer is timed in, in order. Both paths have all six, so they compare side by side.
public enum ExpertParallelStage: String, CaseIterable, Sendable, Codable {
    /// Router GEMM and top-k on the rank's own tokens.
    case route
    /// Symmetric: top-k stored into every peer, barrier, global routing plan.
    /// All-to-all: per-destination counts, count exchange, barrier (the host sync), buffers sized.
    case metadata
    /// Token rows to the experts' owners (symmetric: direct stores at sorted positions; all-to-all: pack then
    /// copy), through the barrier that ends it.
    case dispatch
    /// Both grouped GEMMs on the rank's experts (all-to-all: includes its local routing plan).
    case experts
    /// Weighted expert rows back to their home ranks, through the barrier (all-to-all: pack, copy, unpack).
    case combine
    /// The k-way sum per local token, in slot order.
    case reduce
}

/// Time and bytes of one rank's layers, per phase (sums over the layers recorded).
///
/// `bytesMoved` counts every byte the phase's copies wrote (packing and unpacking included, the local share
/// of stores included); `bytesRemote` counts the bytes stored into other ranks' memory. `waitSeconds` is the
/// part of `seconds` spent in the phase's barrier (waiting for slower ranks, e.g. ones with more expert work).
public struct LayerMeasurement: Sendable, Equatable, Codable {
    public var seconds: [Double]
    public var waitSeconds: [Double]
    public var bytesMoved: [Double]
    public var bytesRemote: [Double]

    public init() {
        let zeros = [Double](repeating: 0, count: ExpertParallelStage.allCases.count)
        seconds = zeros
        waitSeconds = zeros
        bytesMoved = zeros
        bytesRemote = zeros
    }

    public subscript(seconds stage: ExpertParallelStage) -> Double { seconds[stage.index] }
    public var totalSeconds: Double { seconds.reduce(0, +) }

    mutating func add(_ stage: ExpertParallelStage, seconds: Double, moved: Double = 0, remote: Double = 0) {
        self.seconds[stage.index] += seconds
        bytesMoved[stage.index] += moved
        bytesRemote[stage.index] += remote
    }
}

extension ExpertParallelStage {
    var index: Int { Self.allCases.firstIndex(of: self)! }
}

/// One rank's expert-parallel MoE layer on the CPU: the algorithm of DESIGN §4 over a `SymmetricHeap`, and the
/// all-to-all baseline over the same heap. Any `MoEStageKernels` backend computes; every token's k-way sum
/// runs on its home rank in slot order with the backend's own kernels, so the output is bit-identical to the
/// backend's single-rank forward.
///
/// A step is one call of `forward`: every rank passes the same `tokensPerRank` T_loc (the padded per-rank
/// batch) and its own number of real tokens T_r ≤ T_loc; rows T_r..<T_loc are padding and route nowhere.
/// A T_loc larger than the heap's capacity runs in chunks of at most T_cap tokens per rank.
///
/// Scratch buffers are allocated once, from the heap capacity; the symmetric path allocates nothing per
/// layer beyond the routing plan. Not thread-safe: one engine per rank.
public final class ExpertParallelEngine: @unchecked Sendable {
    public let heap: SymmetricHeap
    public let assignment: ExpertAssignment
    public let config: MoEConfig
    /// This rank's experts, ascending global id.
    public let localExperts: [Int]
    /// L: the ranks on this rank's node (those whose heaps it maps); rank q is on node q / L. Across nodes the
    /// symmetric path sends a token row once per node, to the rank of its rail there (`symmetricStep`).
    public let ranksPerNode: Int

    /// [T_cap, H] bf16 bits of this rank's tokens.
    let tokenBits: UnsafeMutablePointer<UInt16>
    /// [T_cap, k] this rank's top-k ids and weights.
    let localIds: UnsafeMutablePointer<Int32>
    let localWeights: UnsafeMutablePointer<Float>
    /// [R·T_cap·k] routing weight of every sorted row (symmetric path).
    let rowWeights: UnsafeMutablePointer<Float>
    /// [R·T_cap·k, H] expert outputs at their global sorted positions (symmetric path). Pages are touched
    /// only where this rank's experts write.
    let expertRows: UnsafeMutablePointer<UInt16>
    /// The all-to-all baseline's dynamically sized buffers (grown on demand, reused).
    let allToAllBuffers = AllToAllBuffers()

    public init(heap: SymmetricHeap, assignment: ExpertAssignment, config: MoEConfig) throws {
        try config.validate()
        let layout = heap.layout
        guard assignment.ranks == heap.world else {
            throw ExpertParallelError.invalidArgument("the expert map is for \(assignment.ranks) ranks; the heap has \(heap.world)")
        }
        guard assignment.experts == config.experts else {
            throw ExpertParallelError.invalidArgument("the expert map covers \(assignment.experts) experts; the model has \(config.experts)")
        }
        guard layout.topK == config.topK, layout.hidden == config.hidden else {
            throw ExpertParallelError.invalidArgument(
                "the heap is laid out for k=\(layout.topK), H=\(layout.hidden); the model has k=\(config.topK), H=\(config.hidden)")
        }
        self.heap = heap
        self.assignment = assignment
        self.config = config
        self.localExperts = assignment.expertsOfRank[heap.rank]
        ranksPerNode = heap.mapped.filter { $0 }.count
        let (R, T, k, H) = (heap.world, layout.capacity, config.topK, config.hidden)
        tokenBits = .allocate(capacity: T * H)
        localIds = .allocate(capacity: T * k)
        localWeights = .allocate(capacity: T * k)
        rowWeights = .allocate(capacity: R * T * k)
        expertRows = .allocate(capacity: R * T * k * H)
    }

    deinit {
        tokenBits.deallocate()
        localIds.deallocate()
        localWeights.deallocate()
        rowWeights.deallocate()
        expertRows.deallocate()
    }

    public var rank: Int { heap.rank }
    public var world: Int { heap.world }

    /// One MoE layer across the ranks.
    ///
    /// - Parameters:
    ///   - input: [T_r, H] this rank's hidden states (float32, rounded to bf16 on entry).
    ///   - validTokens: T_r, this rank's real tokens (may be 0).
    ///   - tokensPerRank: T_loc, the same on every rank, ≥ T_r and ≥ 1.
    ///   - layer: index used in error messages.
    /// - Returns: [T_r, H] the layer output for this rank's tokens (bf16 values as float32).
    public func forward(
        _ input: [Float], validTokens: Int, tokensPerRank: Int, kernels: some MoEStageKernels, mode: RoutingMode,
        comm: CommMode, layer: Int = 0, profiler: Profiler? = nil
    ) throws -> [Float] {
        var ignored = LayerMeasurement()
        return try forward(
            input, validTokens: validTokens, tokensPerRank: tokensPerRank, kernels: kernels, mode: mode, comm: comm,
            layer: layer, profiler: profiler, measurement: &ignored)
    }

    /// `forward`, adding per-phase seconds and bytes to `measurement`.
    public func forward(
        _ input: [Float], validTokens: Int, tokensPerRank: Int, kernels: some MoEStageKernels, mode: RoutingMode,
        comm: CommMode, layer: Int = 0, profiler: Profiler? = nil, measurement: inout LayerMeasurement
    ) throws -> [Float] {
        do {
            return try run(
                input, validTokens: validTokens, tokensPerRank: tokensPerRank, kernels: kernels, mode: mode, comm: comm,
                layer: layer, profiler: profiler, measurement: &measurement)
        } catch {
            // Peers are (or will be) waiting at a barrier: tell them why this rank stops, so they fail now.
            heap.abort(message: "rank \(rank), layer \(layer): \(error)")
            throw error
        }
    }

    private func run(
        _ input: [Float], validTokens: Int, tokensPerRank: Int, kernels: some MoEStageKernels, mode: RoutingMode,
        comm: CommMode, layer: Int, profiler: Profiler?, measurement: inout LayerMeasurement
    ) throws -> [Float] {
        let (H, capacity) = (config.hidden, heap.layout.capacity)
        guard kernels.config == config else {
            throw ExpertParallelError.invalidArgument("the kernels are for \(kernels.config); the engine for \(config)")
        }
        guard tokensPerRank >= 1 else {
            throw ExpertParallelError.invalidArgument("tokens per rank must be ≥ 1, got \(tokensPerRank)")
        }
        guard validTokens >= 0, validTokens <= tokensPerRank else {
            throw ExpertParallelError.invalidArgument(
                "rank \(rank) holds \(validTokens) tokens but the step has \(tokensPerRank) per rank")
        }
        if validTokens > 0 {
            try InputCheck.validate(input, tokens: validTokens, hidden: H)
        } else if !input.isEmpty {
            throw ExpertParallelError.invalidArgument("rank \(rank) has no tokens but was given \(input.count) values")
        }
        var output = [Float](repeating: 0, count: validTokens * H)
        try input.withUnsafeBufferPointer { x in
            try output.withUnsafeMutableBufferPointer { out in
                var chunkStart = 0
                while chunkStart < tokensPerRank {
                    let chunkTokens = min(capacity, tokensPerRank - chunkStart)
                    let chunkValid = max(0, min(validTokens - chunkStart, chunkTokens))
                    let step = Step(
                        tokensPerRank: chunkTokens, validTokens: chunkValid, mode: mode, layer: layer,
                        input: chunkValid > 0 ? x.baseAddress! + chunkStart * H : nil,
                        output: chunkValid > 0 ? out.baseAddress! + chunkStart * H : nil)
                    switch comm {
                    case .symmetric: try symmetricStep(step, kernels: kernels, profiler: profiler, measured: &measurement)
                    case .alltoall: try allToAllStep(step, kernels: kernels, profiler: profiler, measured: &measurement)
                    }
                    chunkStart += chunkTokens
                }
            }
        }
        return output
    }

    /// One chunk: at most T_cap tokens per rank.
    struct Step {
        var tokensPerRank: Int
        var validTokens: Int
        var mode: RoutingMode
        var layer: Int
        /// [validTokens, H] (nil when validTokens is 0).
        var input: UnsafePointer<Float>?
        /// [validTokens, H].
        var output: UnsafeMutablePointer<Float>?
    }

    // MARK: shared pieces of both paths

    /// Measures consecutive phases: `lap(stage)` charges the time since the previous lap to `stage`.
    /// Each lap is also recorded in the profiler, when there is one, as `ep.<path>.<phase>` with the bytes the
    /// phase moved (so profiles of a rank show the communication phases beside the kernels' stages).
    struct PhaseClock {
        let profiler: Profiler?
        let path: CommMode
        private var last = Profiler.now()

        init(profiler: Profiler?, path: CommMode) {
            self.profiler = profiler
            self.path = path
        }

        mutating func lap(_ stage: ExpertParallelStage, _ measured: inout LayerMeasurement, moved: Int = 0, remote: Int = 0) {
            let now = Profiler.now()
            measured.add(stage, seconds: Double(now &- last) * 1e-9, moved: Double(moved), remote: Double(remote))
            profiler?.record("ep.\(path).\(stage.rawValue)", start: last, end: now, cost: StageCost(bytes: Double(moved)))
            last = now
        }
    }

    /// A barrier whose waiting time is charged to `stage` as wait.
    @inline(__always)
    func barrier(
        _ phase: ExpertParallelPhase, _ step: Step, charging stage: ExpertParallelStage, _ measured: inout LayerMeasurement
    ) throws {
        let start = MonotonicClock.nanoseconds()
        try heap.barrier(phase, layer: step.layer)
        measured.waitSeconds[stage.index] += Double(MonotonicClock.nanoseconds() - start) * 1e-9
    }

    /// Rounds the step's tokens to bf16 and runs router + top-k on them; padding rows get id −1, weight 0.
    func routeLocalTokens(_ step: Step, kernels: some MoEStageKernels, profiler: Profiler?) {
        let (H, k) = (config.hidden, config.topK)
        if let input = step.input, step.validTokens > 0 {
            for i in 0..<(step.validTokens * H) { tokenBits[i] = BF16.bits(input[i]) }
            kernels.route(
                x: tokenBits, tokens: step.validTokens, mode: step.mode, ids: localIds, weights: localWeights,
                profiler: profiler)
        }
        for i in (step.validTokens * k)..<(step.tokensPerRank * k) {
            localIds[i] = -1
            localWeights[i] = 0
        }
    }

    /// Stores (T_loc, T_r) into slot `rank` of every peer's step shapes, before the step's first barrier.
    func publishStepShape(_ step: Step) throws {
        var shape = (UInt32(step.tokensPerRank), UInt32(step.validTokens))
        for peer in 0..<world {
            try withUnsafeBytes(of: &shape) {
                try heap.store(to: peer, .control, byteOffset: ControlBlock.stepShapes + rank * 8, from: $0.baseAddress!, count: 8)
            }
        }
    }

    /// After the step's first barrier: every rank must have used the same T_loc.
    func checkStepShapes(_ step: Step) throws {
        let shapes = heap.address(of: .control, rank: rank) + ControlBlock.stepShapes
        let perRank = (0..<world).map { Int(shapes.load(fromByteOffset: $0 * 8, as: UInt32.self)) }
        if perRank.contains(where: { $0 != step.tokensPerRank }) {
            let listing = perRank.enumerated().map { "rank \($0.offset): \($0.element)" }.joined(separator: ", ")
            throw ExpertParallelError.invalidArgument(
                "ranks disagree on the padded tokens per rank of layer \(step.layer) (\(listing)); every rank must pass the same T_loc")
        }
    }
}
