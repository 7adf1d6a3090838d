import MoECUDA
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The checks and the side-by-side benchmark `moe bench --ranks R --backend cuda` runs on every rank.
public enum GPUExpertParallelBench {
    /// A layer whose router sends every token to rank 0's experts (router bias +1000 on them): the other ranks'
    /// experts get nothing. Deterministic, so every rank builds the same one.
    public static func skewedToRankZero(_ weights: MoELayerWeights, assignment: ExpertAssignment) throws -> MoELayerWeights {
        var bias = weights.routerBias
        for e in assignment.expertsOfRank[0] { bias[e] += 1000 }
        return try MoELayerWeights(
            config: weights.config, routerWeight: weights.routerWeight, routerBias: bias, gateUp: weights.gateUp,
            gateUpBias: weights.gateUpBias, down: weights.down, downBias: weights.downBias)
    }

    /// One correctness case: a global batch through one layer, every comm path, against the single-rank forward.
    public struct Case: Sendable {
        public var name: String
        public var tokens: Int
        public var mode: RoutingMode
        public var layer: Int
        public var seed: UInt64
    }

    /// The cases for R ranks: padding, one token per rank, ranks with no tokens, both router kernels (T ≤ 32 and
    /// T > 32) and several GEMM variants, both routing modes; layer 1 (when present) is the skewed layer.
    /// `skewedLayer`: whether layer 1 is `skewedToRankZero`; `rankZeroCoversTopK`: rank 0 owns ≥ k experts, so
    /// that layer sends every token only to rank 0 and the other ranks' experts get nothing.
    public static func cases(world R: Int, skewedLayer: Bool, rankZeroCoversTopK: Bool = true) -> [Case] {
        var list: [Case] = []
        var seed: UInt64 = 100
        for mode in RoutingMode.allCases {
            for (name, tokens) in [
                ("1 token in all (ranks ≥ 1 hold none)", 1), ("1 token per rank", R), ("padding", 4 * R + 3),
                ("router MMA path (T > 32), padding", 40 * R + 1), ("T = 97·R (resident_1_2_4 tiles)", 97 * R),
            ] {
                seed += 1
                list.append(Case(name: name, tokens: tokens, mode: mode, layer: 0, seed: seed))
            }
            if skewedLayer {
                for tokens in [3 * R + 1, 50 * R] {
                    seed += 1
                    let name = rankZeroCoversTopK
                        ? "all tokens to rank 0's experts (other ranks' experts get nothing)"
                        : "rank 0's experts in every token's top-k"
                    list.append(Case(name: name, tokens: tokens, mode: mode, layer: 1, seed: seed))
                }
            }
        }
        return list
    }

    /// Runs the cases on every rank; rank 0 compares bits with `CUDABackend` and prints one line per case.
    /// Throws (after all cases) when any output differs.
    /// Returns rank 0's single-rank backend of layer 0 (nil elsewhere), for whatever else rank 0 measures.
    @discardableResult
    public static func check(runner: GPUExpertParallelRunner, weights: [MoELayerWeights], cases: [Case]) throws -> CUDABackend? {
        let H = runner.config.hidden
        var singles: [CUDABackend?] = Array(repeating: nil, count: weights.count)
        var failures: [String] = []
        for c in cases {
            let input = SyntheticModel.hiddenStates(tokens: c.tokens, hidden: H, seed: c.seed)
            var expected: [Float] = []
            if runner.isRoot {
                if singles[c.layer] == nil { singles[c.layer] = try CUDABackend(weights: weights[c.layer]) }
                expected = try singles[c.layer]!.forward(input, tokens: c.tokens, routing: c.mode, profiler: nil).hidden
            }
            var cells: [String] = []
            for comm in runner.availableComms {
                for execution in comm == .symmetric ? [CUDAExpertParallelLayer.Execution.graph, .profiled] : [.graph] {
                    let out = try runner.forward(
                        input, tokens: c.tokens, mode: c.mode, comm: comm, layerIndices: [c.layer], execution: execution, poison: true)
                    guard let out else { continue }
                    let differing = zip(out, expected).filter { $0.bitPattern != $1.bitPattern }.count
                    let label = comm == .symmetric ? (execution == .graph ? "symmetric graph" : "symmetric eager") : "all-to-all"
                    cells.append("\(label) \(differing == 0 ? "bit-identical" : "\(differing) values differ")")
                    if differing != 0 || out.count != expected.count {
                        failures.append("\(c.name) T=\(c.tokens) \(c.mode.rawValue): \(label) differs in \(differing) of \(out.count) values")
                    }
                }
            }
            if runner.isRoot {
                print("check R=\(runner.world) T=\(c.tokens) \(c.mode.rawValue) layer \(c.layer) [\(c.name)]: \(cells.joined(separator: ", "))")
            }
        }
        if runner.symmetricRefusal != nil {
            if !failures.isEmpty {
                let message = "GPU expert parallelism differs from the single-rank CUDA forward: " + failures.joined(separator: "; ")
                runner.heap.abort(message: message)
                throw GPUExpertParallelError.mismatch(message)
            }
            return singles[0]
        }
        // Many replays of one graph back to back, one host synchronisation at the end: still the same bits.
        let tokens = 5 * runner.world + 2
        let input = SyntheticModel.hiddenStates(tokens: tokens, hidden: H, seed: 999)
        let range = runner.tokenRange(tokens: tokens)
        let share = Array(input[(range.lowerBound * H)..<(range.upperBound * H)])
        let layer = runner.layers[0]
        do {
            _ = try layer.forwardSymmetric(share, tokens: tokens, mode: .renormalize)
            let replayed = try layer.forwardSymmetric(share, tokens: tokens, mode: .renormalize, replays: 50)
            let gathered = try runner.gather(replayed.hidden, tokens: tokens)
            if runner.isRoot, let gathered {
                let single = try (singles[0] ?? CUDABackend(weights: weights[0])).forward(input, tokens: tokens, routing: .renormalize, profiler: nil)
                let differing = zip(gathered, single.hidden).filter { $0.bitPattern != $1.bitPattern }.count
                print("check R=\(runner.world): 50 replays of one symmetric graph back to back, no host synchronisation between them: \(differing == 0 ? "bit-identical" : "\(differing) values differ")")
                if differing != 0 { failures.append("graph replays differ in \(differing) values") }
            }
        } catch {
            throw runner.fail(error, layer: 0)
        }
        if !failures.isEmpty {
            let message = "GPU expert parallelism differs from the single-rank CUDA forward: " + failures.joined(separator: "; ")
            runner.heap.abort(message: message)
            throw GPUExpertParallelError.mismatch(message)
        }
        return singles[0]
    }

    /// Times layer 0 through both paths for each global batch size; the report on rank 0, nil elsewhere.
    ///
    /// Symmetric: the layer time is one graph replay (device events); the phase times come from an eager run of
    /// the same kernels with events between phases. All-to-all: host wall time per phase (each ends in a host
    /// synchronisation by design). Ranks are aligned by a host barrier before every timed layer.
    public static func benchmark(
        runner: GPUExpertParallelRunner, tokenCounts: [Int], iterations: Int, warmup: Int, mode: RoutingMode, seed: UInt64,
        modelName: String
    ) throws -> ExpertParallelBenchReport? {
        let heap = runner.heap
        let words = heap.layout.resultWords
        let comms = runner.availableComms
        // Per path: 7 words per iteration (6 phases + the layer) and 12 of bytes.
        guard iterations >= 1, comms.count * (7 * iterations + 12) <= words else {
            throw ExpertParallelError.invalidArgument("iterations must be in 1...\((words / comms.count - 12) / 7)")
        }
        let H = runner.config.hidden
        let layer = runner.layers[0]
        var rows: [ExpertParallelBenchReport.Row] = []
        for tokens in tokenCounts {
            let range = runner.tokenRange(tokens: tokens)
            let global = SyntheticModel.hiddenStates(tokens: tokens, hidden: H, seed: seed)
            let share = Array(global[(range.lowerBound * H)..<(range.upperBound * H)])
            let host = HostSide(heap: heap, layer: 0)
            func run(_ comm: CommMode) throws -> (phases: [Double], layer: Double, moved: [Double], remote: [Double]) {
                do {
                    switch comm {
                    case .symmetric:
                        try heap.barrier(.step, layer: 0)
                        let eager = try layer.forwardSymmetric(share, tokens: tokens, mode: mode, execution: .profiled)
                        try heap.barrier(.step, layer: 0)
                        stallIfAsked(rank: runner.rank)
                        let replay = try layer.forwardSymmetric(share, tokens: tokens, mode: mode, execution: .graph)
                        let bytes = try layer.symmetricBytes(tokens: tokens)
                        return (eager.phaseSeconds, replay.layerSeconds ?? 0, bytes.moved, bytes.remote)
                    case .alltoall:
                        try heap.barrier(.step, layer: 0)
                        let result = try layer.forwardAllToAll(share, tokens: tokens, mode: mode, host: host)
                        return (result.phaseSeconds, result.phaseSeconds.reduce(0, +), result.bytesMoved, result.bytesRemote)
                    }
                } catch {
                    throw runner.fail(error, layer: 0)
                }
            }
            for _ in 0..<warmup { for comm in comms { _ = try run(comm) } }
            var samples = [[[Double]]](repeating: [], count: comms.count)
            var bytes = [([Double], [Double])](repeating: ([], []), count: comms.count)
            for iteration in 0..<iterations {
                let order = iteration % 2 == 0 ? Array(comms.indices) : comms.indices.reversed()
                for path in order {
                    let r = try run(comms[path])
                    samples[path].append(r.phases + [r.layer])
                    bytes[path] = (r.moved, r.remote)
                }
            }
            // MOE_CUDA_EP_TRACE=1: where each kernel runs inside the symmetric graph, on every rank (same replays).
            if CUDAExpertParallelLayer.tracing && comms.contains(.symmetric) {
                do {
                    try heap.barrier(.step, layer: 0)
                    let spans = try layer.symmetricTrace(share, tokens: tokens, mode: mode)
                    print("trace T=\(tokens) R=\(runner.world) (symmetric graph, MOE_TRACE build, median of \(CUDAExpertParallelLayer.traceReplays) replays): \(KernelTrace.describe(spans))")
                } catch {
                    throw runner.fail(error, layer: 0)
                }
            }
            var row: [Double] = []
            for path in comms.indices {
                for sample in samples[path] { row.append(contentsOf: sample) }
                row.append(contentsOf: bytes[path].0 + bytes[path].1)
            }
            try heap.store(to: 0, .results, byteOffset: runner.rank * words * 8, from: row, count: row.count * 8)
            try heap.barrier(.gather, layer: 0)
            if runner.isRoot {
                rows.append(summarize(heap: heap, comms: comms, iterations: iterations, tokens: tokens, world: runner.world))
            }
            try heap.barrier(.gather, layer: 0)
        }
        guard runner.isRoot else { return nil }
        return ExpertParallelBenchReport(
            model: modelName, ranks: runner.world, workersPerRank: 0, mode: mode.rawValue, iterations: iterations,
            warmup: warmup, phases: ExpertParallelStage.allCases.map(\.rawValue), rows: rows)
    }

    /// Fault injection for scripts/gpu/ep-check.sh: with GPUEP_STALL_RANK=r, rank r stops for good just before
    /// its first timed symmetric graph, so its peers wait inside a device barrier (the case a host barrier
    /// cannot see). The script then either lets the device timeout fire or kills the stalled rank.
    static func stallIfAsked(rank: Int) {
        guard let text = getenv("GPUEP_STALL_RANK"), Int(String(cString: text)) == rank else { return }
        print("rank \(rank): stalling before its symmetric graph (GPUEP_STALL_RANK)")
        while true { sleep(3600) }
    }

    /// Rank 0: phase medians (mean over ranks per iteration), layer median of the slowest rank, bytes summed.
    static func summarize(heap: SymmetricHeap, comms: [CommMode], iterations: Int, tokens: Int, world: Int) -> ExpertParallelBenchReport.Row {
        let stages = ExpertParallelStage.allCases.count
        let words = heap.layout.resultWords
        let results = heap.pointer(to: .results, rank: 0, as: Double.self)
        let perPath = 7 * iterations + 12
        var paths: [ExpertParallelBenchReport.PathSummary] = []
        for (path, comm) in comms.enumerated() {
            var layerTimes: [Double] = []
            var phases = [[Double]](repeating: [], count: stages)
            for iteration in 0..<iterations {
                var slowest = 0.0
                var means = [Double](repeating: 0, count: stages)
                for peer in 0..<world {
                    let sample = results + peer * words + path * perPath + iteration * 7
                    for s in 0..<stages { means[s] += sample[s] / Double(world) }
                    slowest = max(slowest, sample[6])
                }
                layerTimes.append(slowest)
                for s in 0..<stages { phases[s].append(means[s]) }
            }
            var moved = [Double](repeating: 0, count: stages), remote = moved
            for peer in 0..<world {
                let b = results + peer * words + path * perPath + 7 * iterations
                for s in 0..<stages {
                    moved[s] += b[s]
                    remote[s] += b[stages + s]
                }
            }
            let sorted = layerTimes.sorted()
            let median: Double = ExpertParallelBenchmark.percentile(sorted, 0.5)
            let p10: Double = ExpertParallelBenchmark.percentile(sorted, 0.1) * 1e6
            let p90: Double = ExpertParallelBenchmark.percentile(sorted, 0.9) * 1e6
            let phaseMedians: [Double] = phases.map { ExpertParallelBenchmark.percentile($0.sorted(), 0.5) * 1e6 }
            // Device barriers and host synchronisations are not split from the phases' work on the GPU path:
            // waits are reported as 0, so "comm work" there includes them.
            let waits = [Double](repeating: 0, count: stages)
            let work = ExpertParallelBenchReport.PathSummary.communicationWork(phase: phaseMedians, wait: waits)
            let summary = ExpertParallelBenchReport.PathSummary(
                comm: comm.rawValue, medianMicroseconds: median * 1e6, p10Microseconds: p10, p90Microseconds: p90,
                tokensPerSecond: Double(tokens) / max(median, 1e-12), phaseMicroseconds: phaseMedians,
                phaseWaitMicroseconds: waits, phaseBytesMoved: moved, phaseBytesRemote: remote,
                communicationWorkMicroseconds: work)
            paths.append(summary)
        }
        var ratio: Double?
        if let sym = paths.first(where: { $0.comm == "symmetric" }), let a2a = paths.first(where: { $0.comm == "alltoall" }),
            sym.medianMicroseconds > 0
        {
            ratio = a2a.medianMicroseconds / sym.medianMicroseconds
        }
        return .init(tokens: tokens, tokensPerRank: (tokens + world - 1) / world, paths: paths, ratio: ratio, singleRankMicroseconds: nil)
    }
}

extension GPUExpertParallelBench {
    /// `moe bench --ranks R --backend cuda` on one rank: join, check every case bit for bit against the
    /// single-rank CUDA forward (rank 0), then time both paths; rank 0 prints. Throws on any mismatch or fault.
    public static func runCommand(
        environment: RankEnvironment, weights: MoELayerWeights, source: String, options: ExpertParallelOptions,
        tokenCounts: [Int], mode: RoutingMode, iterations: Int, warmup: Int, seed: UInt64, checks: Bool = true,
        measureCeilings: Bool = false
    ) throws -> CommandResult? {
        try GPUExpertParallelRunner.requireCUDA()
        let assignment = try ExpertAssignment.parse(options.expertMap, experts: weights.config.experts, ranks: environment.world)
        let skewed = try skewedToRankZero(weights, assignment: assignment)
        let world = environment.world
        let coversTopK = assignment.expertsOfRank[0].count >= weights.config.topK
        let checkCases = cases(world: world, skewedLayer: true, rankZeroCoversTopK: coversTopK)
        let checkMax = checkCases.map(\.tokens).max() ?? 1
        let runner = try GPUExpertParallelRunner(
            environment: environment, layers: checks ? [weights, skewed] : [weights],
            maxBatchTokens: max(tokenCounts.max() ?? 1, checks ? checkMax : 1), options: options)
        defer { runner.close() }
        let say: (String) -> Void = { if runner.isRoot { print($0) } }
        say("model:   \(source): \(weights.config)")
        say("ranks:   \(world) × cuda, device \(runner.deviceOrdinal) of rank 0: \(runner.layers[0].deviceSummary); experts \(runner.assignment)")
        say("weights: rank 0 holds the \(runner.layers[0].heldWeightsSummary)")
        say(runner.transportLine)
        // The ceiling copies through the IPC mapping of the next node rank: only where the symmetric path can run.
        let ceiling = runner.symmetricRefusal == nil ? try runner.measurePeerCopy() : nil
        say("ceiling: \(ceiling.map { "\($0)" } ?? "peer copy not measured (no CUDA IPC path between the node's GPUs)")")
        if let why = runner.symmetricRefusal { say("note:    the symmetric path cannot run: \(why)") }
        if let why = runner.allToAllRefusal { say("note:    the all-to-all baseline cannot run: \(why)") }
        var single: CUDABackend?
        if checks {
            single = try check(runner: runner, weights: [weights, skewed], cases: checkCases)
        }
        // The JSON's ceilings and its accuracy check, on rank 0 while the others wait at a barrier.
        var ceilings: HardwareCeilings?
        var accuracy = CommandResult.Check(tokens: 0, relativeL2: 0, routingMismatches: 0)
        if measureCeilings {
            if runner.isRoot {
                // A failure here costs the JSON, not the run: the timings below do not depend on it.
                do {
                    let (measured, checked) = try singleRankCeilingsAndAccuracy(
                        backend: single ?? CUDABackend(weights: weights), weights: weights, world: world, mode: mode, seed: seed)
                    (ceilings, accuracy) = (measured, checked)
                    say("ceilings: bandwidth \(fmt(measured.bandwidthGBps)) GB/s (\(measured.bandwidthMethod)); peak \(fmt(measured.peakTFLOPs)) TFLOP/s (\(measured.peakMethod))")
                } catch {
                    say("note:    the ceilings for the JSON could not be measured (\(error)); no JSON will be written")
                }
            }
            try runner.heap.barrier(.step, layer: 0)
        }
        let description = runner.layers[0].deviceSummary
        guard !tokenCounts.isEmpty else {
            return runner.isRoot ? CommandResult(report: nil, ceilings: ceilings, peerCopy: ceiling, check: accuracy, device: description, transport: runner.transportLine) : nil
        }
        guard let report = try benchmark(
            runner: runner, tokenCounts: tokenCounts, iterations: iterations, warmup: warmup, mode: mode, seed: seed,
            modelName: source)
        else { return nil }
        print("")
        print(report.table().replacingOccurrences(of: "× 0 CPU threads", with: "× 1 GPU process"))
        print("")
        print("summary (R=\(world)): T, tokens per rank, symmetric µs, all-to-all µs, all-to-all/symmetric; the symmetric path's")
        print("dispatch and combine GB/s per rank (remote bytes over the eager phase time, barrier waits included) against the peer copy")
        for row in report.rows {
            let symmetric = row.paths.first { $0.comm == "symmetric" }
            let sym = symmetric?.medianMicroseconds ?? 0
            let a2a = row.paths.first { $0.comm == "alltoall" }?.medianMicroseconds ?? 0
            func gbps(_ stage: ExpertParallelStage) -> Double {
                guard let symmetric else { return 0 }
                return PeerCopyCeiling.perRankGBps(
                    remoteBytes: symmetric.phaseBytesRemote[stage.index], ranks: world, microseconds: symmetric.phaseMicroseconds[stage.index])
            }
            print("EPROW R=\(world) T=\(row.tokens) per-rank=\(row.tokensPerRank) symmetric_us=\(fmt(sym)) alltoall_us=\(fmt(a2a)) ratio=\(fmt(row.ratio ?? 0)) a2a=\(runner.transport?.kind.rawValue ?? "none") dispatch_GBps=\(fmt(gbps(.dispatch))) combine_GBps=\(fmt(gbps(.combine))) peer_GBps=\(fmt(ceiling?.medianGBps ?? 0))")
        }
        return CommandResult(report: report, ceilings: ceilings, peerCopy: ceiling, check: accuracy, device: description, transport: runner.transportLine)
    }

    /// What `runCommand` hands rank 0's caller for the JSON (`moe bench --json`).
    public struct CommandResult: Sendable {
        public struct Check: Sendable {
            public var tokens: Int
            public var relativeL2: Double
            public var routingMismatches: Int
        }
        public var report: ExpertParallelBenchReport?
        /// The device's copy bandwidth and bf16 peak (measured when asked).
        public var ceilings: HardwareCeilings?
        public var peerCopy: PeerCopyCeiling?
        /// The single-rank CUDA forward against the float64 reference (the expert-parallel outputs are checked bit
        /// for bit against that forward).
        public var check: Check
        public var device: String
        public var transport: String
    }

    /// Rank 0 alone: the GPU's ceilings, and `backend`'s single-rank forward of a check batch against the float64
    /// reference (relative L2, tokens whose experts differ).
    static func singleRankCeilingsAndAccuracy(
        backend: CUDABackend, weights: MoELayerWeights, world: Int, mode: RoutingMode, seed: UInt64
    ) throws -> (HardwareCeilings, CommandResult.Check) {
        let tokens = 5 * world + 2
        let input = SyntheticModel.hiddenStates(tokens: tokens, hidden: weights.config.hidden, seed: seed &+ 77)
        let single = try backend.forward(input, tokens: tokens, routing: mode, profiler: nil)
        let reference = try ReferenceMoE.forward(weights: weights, input: input, tokens: tokens, mode: mode)
        let k = weights.config.topK
        let mismatches = (0..<tokens).filter { t in
            Set(single.topkIds[(t * k)..<((t + 1) * k)]) != Set(reference.topkIds[(t * k)..<((t + 1) * k)])
        }.count
        return (try backend.measureCeilings(), .init(tokens: tokens, relativeL2: Accuracy.relativeL2(single.hidden, reference.hidden), routingMismatches: mismatches))
    }

    static func fmt(_ v: Double) -> String { String((v * 100).rounded() / 100) }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
