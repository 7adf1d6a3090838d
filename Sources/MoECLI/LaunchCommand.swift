import ArgumentParser
import Foundation
import MoECPU
import MoECheckpoint
import MoECore
import MoEParallel

extension CommMode: ExpressibleByArgument {}
extension AllToAllTransportChoice: ExpressibleByArgument {}

/// `moe launch --ranks R [--comm …] -- <moe subcommand …>`: starts R rank processes of this binary on this host.
struct LaunchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "launch",
        abstract: "Run a moe subcommand as R expert-parallel rank processes on this host.",
        discussion: """
            Starts R copies of this moe binary running the command after --, with MOE_RANK, MOE_WORLD_SIZE, \
            MOE_JOB_ID (and the other MOE_* variables) set; the ranks meet through POSIX shared memory. Output \
            lines are prefixed [rank i]. When a rank fails, the others get --kill-grace seconds to stop on their \
            own (they name the failed rank and phase), then are terminated; the exit status is the first failing \
            rank's. Example: moe launch --ranks 2 -- bench --preset gpt-oss-20b --tokens 8,64
            """)

    @Option(help: "Rank processes on this host.")
    var ranks: Int

    @Option(help: "Token exchange for the ranks: symmetric or alltoall (MOE_COMM; subcommands may override).")
    var comm: CommMode?

    @Option(
        name: .customLong("a2a-transport"),
        help: "GPU all-to-all baseline transport: auto (NCCL when every rank has its own GPU, else CUDA IPC), nccl or ipc (MOE_A2A_TRANSPORT).")
    var allToAllTransport: AllToAllTransportChoice?

    @Option(help: "Seconds a rank waits for a late or dead peer before failing with an error naming it.")
    var timeout: Double = 60

    @Option(name: .customLong("kill-grace"), help: "Seconds the other ranks get to stop on their own after one fails.")
    var killGrace: Double = 5

    @Option(
        name: .customLong("signal-grace"),
        help: "Seconds the ranks get to finish after SIGTERM/SIGINT is forwarded to them (a server drains its requests); a second signal ends them at once.")
    var signalGrace: Double = 120

    @Option(help: "Nodes (hosts) in the job. More than 1 needs --master; see --node-rank.")
    var nodes: Int = 1

    @Option(name: .customLong("node-rank"), help: "This node's index in 0..<nodes.")
    var nodeRank: Int = 0

    @Option(help: "host:port of node 0's rendezvous (multi-node jobs).")
    var master: String?

    @Option(name: .customLong("job-id"), help: "Job id (default: random); shared-memory segment names embed it.")
    var jobID: String?

    @Argument(parsing: .postTerminator, help: "The moe subcommand and its arguments, after --.")
    var command: [String] = []

    func validate() throws {
        if command.isEmpty {
            throw ValidationError("give the command to run after --, e.g. moe launch --ranks 2 -- bench --preset tiny")
        }
        if ranks < 1 { throw ValidationError("--ranks must be ≥ 1") }
        if !(timeout > 0) { throw ValidationError("--timeout must be > 0") }
        if !(signalGrace >= 0) { throw ValidationError("--signal-grace must be ≥ 0") }
        if command.first == "launch" { throw ValidationError("a launched rank cannot itself launch ranks") }
    }

    func run() throws {
        var options = LaunchOptions(ranks: ranks, arguments: command)
        options.comm = comm
        options.allToAllTransport = allToAllTransport
        options.timeoutSeconds = timeout
        options.killGraceSeconds = killGrace
        options.signalGraceSeconds = signalGrace
        options.nodes = nodes
        options.nodeRank = nodeRank
        options.master = master
        options.jobID = jobID
        let outcome = try RankLauncher.run(options)
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }
}

/// The expert-parallel flags `moe bench` (and `moe forward`) take: `--ranks R` runs the command as R ranks.
struct ExpertParallelFlags: ParsableArguments {
    @Option(help: "Run as R expert-parallel rank processes on this host (shortcut for moe launch --ranks R -- …).")
    var ranks: Int?

    @Option(help: "Expert parallelism: symmetric (default) or alltoall. forward and serve run this path; bench times both and this picks its JSON rows.")
    var comm: CommMode?

    @Option(
        name: .customLong("a2a-transport"),
        help: "GPU all-to-all baseline transport: auto (NCCL when every rank has its own GPU, else CUDA IPC), nccl (one GPU per rank; refused when ranks share a GPU) or ipc (one node).")
    var allToAllTransport: AllToAllTransportChoice?

    @Option(name: .customLong("expert-map"), help: "contiguous, round-robin, a list of E owner ranks (0,0,1,1), or a JSON map file.")
    var expertMap: String = "contiguous"

    @Option(name: .customLong("rank-timeout"), help: "Seconds a rank waits for a late or dead peer (default 60).")
    var rankTimeout: Double?

    @Option(name: .customLong("max-tokens-per-rank"), help: "Heap capacity per rank per step; larger batches run in chunks.")
    var maxTokensPerRank: Int = 4096

    @Option(name: .customLong("workers-per-rank"), help: "CPU threads per rank (default: cores ÷ ranks).")
    var workersPerRank: Int?

    /// True when this command runs expert-parallel: asked with --ranks, or started as a rank by moe launch.
    var isRequested: Bool { ranks != nil || ProcessInfo.processInfo.environment["MOE_RANK"] != nil }

    func validate() throws {
        if let ranks, ranks < 1 { throw ValidationError("--ranks must be ≥ 1") }
        if let rankTimeout, !(rankTimeout > 0) { throw ValidationError("--rank-timeout must be > 0") }
        if maxTokensPerRank < 1 { throw ValidationError("--max-tokens-per-rank must be ≥ 1") }
        if let workersPerRank, workersPerRank < 1 { throw ValidationError("--workers-per-rank must be ≥ 1") }
    }

    /// Outside a job: launches this command line as the ranks and returns (throwing their failure); inside a
    /// rank: returns this rank's environment.
    func enterRank() throws -> RankEnvironment? {
        if let environment = try RankEnvironment.current() {
            if let ranks, environment.world != ranks * environment.nodes {
                throw ValidationError("--ranks \(ranks) disagrees with MOE_WORLD_SIZE=\(environment.world) of this job")
            }
            return environment
        }
        let code = try RankLauncher.launchSelfUnlessRank(ranks: ranks ?? 1, comm: comm, timeoutSeconds: rankTimeout)
        if let code, code != 0 { throw ExitCode(code) }
        return nil
    }

    /// The path this rank runs: --comm, else the launcher's (MOE_COMM), else symmetric.
    func comm(in environment: RankEnvironment) -> CommMode { comm ?? environment.comm ?? .symmetric }

    func options() -> ExpertParallelOptions {
        var options = ExpertParallelOptions()
        options.expertMap = expertMap
        options.maxTokensPerRank = maxTokensPerRank
        options.workers = workersPerRank
        options.timeoutSeconds = rankTimeout
        options.allToAllTransport = allToAllTransport
        return options
    }
}

/// `moe bench --ranks R`: both token exchanges side by side on R CPU rank processes, checked first.
enum ExpertParallelBenchCommand {
    static func run(
        flags: ExpertParallelFlags, model: ModelOptions, backend: BackendChoice, tokens: [Int]?, routing: RoutingMode,
        iterations: Int?, warmup: Int, json: String?
    ) throws {
        guard let environment = try flags.enterRank() else { return }
        if backend == .cuda {
            // GPU expert parallelism: symmetric heaps over CUDA IPC (GPUExpertParallelBench).
            let (weights, source) = try model.loadWeights(defaultPreset: .gptOss20b)
            let comm = flags.comm(in: environment)
            guard let result = try GPUExpertParallelBench.runCommand(
                environment: environment, weights: weights, source: source, options: flags.options(),
                tokenCounts: tokens ?? [1, 8, 32, 128].map { $0 * environment.world }, mode: routing,
                iterations: iterations ?? 20, warmup: warmup, seed: model.seed, measureCeilings: json != nil),
                let json, let report = result.report
            else { return }
            guard let measured = result.ceilings else {
                print("not writing \(json): the ceilings were not measured (see the note above)")
                return
            }
            var output = try jsonReport(
                report, comm: comm, weights: weights, ceilings: measured, model: model, routing: routing,
                check: .init(tokens: result.check.tokens, relativeL2: result.check.relativeL2, routingMismatches: result.check.routingMismatches),
                world: environment.world,
                machine: .init(description: result.device, backendDetail: "cuda, \(environment.world) ranks, \(result.transport)"),
                backend: "cuda")
            output.ceilings.peerCopyGBps = result.peerCopy?.medianGBps
            output.ceilings.peerCopyMethod = result.peerCopy?.description
            try output.write(to: json)
            print("wrote \(json)")
            return
        }
        guard backend == .auto || backend == .cpu else {
            throw ValidationError("expert parallelism runs on the CPU backend in this build (--backend \(backend.rawValue) given)")
        }
        let (weights, source) = try model.loadWeights(defaultPreset: .gptOss20b)
        let config = weights.config
        let tokenCounts = tokens ?? [1, 8, 32, 128]
        let comm = flags.comm(in: environment)
        let runner = try ExpertParallelRunner(
            environment: environment, layers: [weights], maxBatchTokens: tokenCounts.max()!, options: flags.options())
        defer { runner.close() }
        let say: (String) -> Void = { if runner.isRoot { print($0) } }
        say("model:   \(source): \(config)")
        say("ranks:   \(runner.world) × cpu (\(runner.workers) thread\(runner.workers == 1 ? "" : "s") each); experts \(runner.assignment)")
        let packed = runner.backends.reduce(0) { $0 + $1.packedExpertBytes }
        let owned = runner.assignment.expertsOfRank[runner.rank].count
        say(String(format: "memory:  rank 0 packs its %d experts' weights: %.1f MiB (all %d: %.1f MiB)", owned,
                   Double(packed) / 1048576, config.experts, Double(packed) * Double(config.experts) / Double(owned) / 1048576))

        // 1. Correctness first: both paths bit-identical to the single-rank forward, which matches the reference.
        let checkTokens = max(5, 2 * runner.world + 1)
        let sample = SyntheticModel.hiddenStates(tokens: checkTokens, hidden: config.hidden, seed: model.seed &+ 77)
        var outputs: [CommMode: [Float]] = [:]
        for path in CommMode.allCases {
            if let output = try runner.forward(sample, tokens: checkTokens, mode: routing, comm: path) { outputs[path] = output }
        }
        var ceilings: HardwareCeilings?
        var checkError = 0.0
        if runner.isRoot {
            let singleBackend = CPUBackend(weights: weights, workers: runner.workers * environment.localWorld)
            let single = try singleBackend.forward(sample, tokens: checkTokens, routing: routing, profiler: nil)
            let reference = try ReferenceMoE.forward(weights: weights, input: sample, tokens: checkTokens, mode: routing)
            checkError = Accuracy.relativeL2(single.hidden, reference.hidden)
            for (path, output) in outputs.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                let differing = zip(output, single.hidden).filter { $0.bitPattern != $1.bitPattern }.count
                guard differing == 0 else {
                    let message = "the \(path) path differs from the single-rank forward in \(differing) of \(output.count) values; not benchmarking a wrong answer"
                    runner.heap.abort(message: message)
                    throw MoEError.invalidArgument(message)
                }
            }
            print(String(format: "check:   both paths bit-identical to the single-rank CPU forward (%d tokens); rel L2 %.2e vs float64 reference", checkTokens, checkError))
            // 2. Ceilings for the JSON's floors, in the same run (the other ranks wait at the next barrier).
            if json != nil {
                // The single-rank backend runs every worker of this host, as the ranks together do.
                let measured = try singleBackend.measureCeilings()
                ceilings = measured
                let bandwidth = (value: measured.bandwidthGBps, method: measured.bandwidthMethod)
                let peak = (value: measured.peakTFLOPs, method: measured.peakMethod)
                print(String(format: "ceilings: bandwidth %.1f GB/s (%@); peak %.3f TFLOP/s (%@)",
                             bandwidth.value, bandwidth.method, peak.value, peak.method))
            }
        }
        try runner.heap.barrier(.step, layer: 0)

        // 3. Both paths, every batch size.
        var options = ExpertParallelBenchOptions(tokenCounts: tokenCounts)
        options.iterations = iterations ?? 20
        options.warmup = warmup
        options.mode = routing
        options.inputSeed = model.seed
        guard let report = try runner.benchmark(options, modelName: source) else { return }
        print("")
        print(report.table())
        if let json, let ceilings {
            try jsonReport(report, comm: comm, weights: weights, ceilings: ceilings, model: model, routing: routing,
                           check: .init(tokens: checkTokens, relativeL2: checkError, routingMismatches: 0),
                           world: runner.world,
                           machine: .init(
                               description: "\(CPUInfo.modelName), \(ProcessorCount.online) cores",
                               backendDetail: "cpu, \(runner.world) ranks × \(runner.workers) threads, POSIX shared memory"),
                           backend: "cpu")
                .write(to: json)
            print("wrote \(json)")
        }
    }

    /// DESIGN §5's JSON: rows from the chosen path; the side-by-side comparison under `expert_parallel`.
    static func jsonReport(
        _ report: ExpertParallelBenchReport, comm: CommMode, weights: MoELayerWeights, ceilings: HardwareCeilings,
        model: ModelOptions, routing: RoutingMode, check: BenchmarkReport.Check, world: Int, machine: BenchmarkReport.Machine,
        backend: String
    ) throws -> BenchmarkReport {
        let c = weights.config
        var rows: [BenchmarkReport.Row] = []
        let router = CPUBackend(weights: weights, workers: 1)
        for row in report.rows {
            guard let path = row.paths.first(where: { $0.comm == comm.rawValue }) else { continue }
            let input = SyntheticModel.hiddenStates(tokens: row.tokens, hidden: c.hidden, seed: model.seed)
            var ids = [Int32](repeating: 0, count: row.tokens * c.topK)
            var topWeights = [Float](repeating: 0, count: row.tokens * c.topK)
            let bits = input.map(BF16.bits)
            bits.withUnsafeBufferPointer {
                router.route(x: $0.baseAddress!, tokens: row.tokens, mode: routing, ids: &ids, weights: &topWeights, profiler: nil)
            }
            let touched = Set(ids).count
            let median = path.medianMicroseconds * 1e-6
            let flops = LayerCost.flops(tokens: row.tokens, config: c)
            let bytes = LayerCost.weightBytes(expertsTouched: touched, config: c)
            let floor = LayerCost.floorSeconds(flops: flops, bytes: bytes, ceilings: ceilings)
            var stages: [String: BenchmarkReport.StageRow] = [:]
            for (index, phase) in report.phases.enumerated() {
                stages[phase] = .init(medianMicroseconds: path.phaseMicroseconds[index], flops: 0, bytes: path.phaseBytesMoved[index])
            }
            rows.append(.init(
                tokens: row.tokens, medianMicroseconds: path.medianMicroseconds, p10Microseconds: path.p10Microseconds,
                p90Microseconds: path.p90Microseconds, tokensPerSecond: path.tokensPerSecond,
                TFLOPs: flops / median / 1e12, GBps: bytes / median / 1e9, floorMicroseconds: floor * 1e6,
                percentOfFloor: 100 * floor / median, expertsTouched: touched, weightBytes: bytes, flops: flops,
                iterations: report.iterations, stages: stages))
        }
        var result = BenchmarkReport(
            machine: machine,
            ceilings: .init(
                bandwidthGBps: ceilings.bandwidthGBps, bandwidthMethod: ceilings.bandwidthMethod,
                peakTFLOPs: ceilings.peakTFLOPs, peakMethod: ceilings.peakMethod),
            config: .init(
                preset: model.model == nil ? (model.preset ?? .gptOss20b).rawValue : nil, model: model.model, E: c.experts,
                k: c.topK, H: c.hidden, I: c.intermediate, backend: backend, ranks: world, comm: comm.rawValue,
                routing: routing.rawValue),
            check: check,
            rows: rows)
        result.expertParallel = report
        return result
    }
}

/// `moe forward --ranks R`: one layer of a model directory across R CPU ranks; rank 0 writes the output file.
enum ExpertParallelForwardCommand {
    static func run(
        flags: ExpertParallelFlags, model: String, layer: Int, input: String, output: String, backend: BackendChoice,
        routing: RoutingMode
    ) throws {
        guard let environment = try flags.enterRank() else { return }
        if backend == .cuda {
            return try runOnGPUs(
                environment: environment, flags: flags, model: model, layer: layer, input: input, output: output, routing: routing)
        }
        guard backend == .auto || backend == .cpu else {
            throw ValidationError("expert parallelism runs on the CPU or CUDA backend (--backend \(backend.rawValue) given)")
        }
        // Every rank loads the layer and reads the whole input; each computes its own tokens' share.
        let weights = try ModelDirectory(path: model).layer(layer)
        let config = weights.config
        let (values, tokens) = try HiddenStatesFile.readInput(input, hidden: config.hidden)
        let comm = flags.comm(in: environment)
        let runner = try ExpertParallelRunner(
            environment: environment, layers: [weights], maxBatchTokens: tokens, options: flags.options())
        defer { runner.close() }
        guard let hidden = try runner.forward(values, tokens: tokens, mode: routing, comm: comm),
              let (ids, topWeights) = try runner.globalRouting(globalInput: values.map(BF16.bits), tokens: tokens, mode: routing)
        else { return }
        let detail = "cpu expert-parallel, \(runner.world) ranks × \(runner.workers) threads, \(comm)"
        try HiddenStatesFile.writeOutput(
            output, result: MoEForwardResult(hidden: hidden, topkIds: ids, topkWeights: topWeights), tokens: tokens,
            config: config,
            metadata: ["model": model, "layer": String(layer), "routing": routing.rawValue, "backend": detail])
        print("wrote \(output): \(tokens) token\(tokens == 1 ? "" : "s"), layer \(layer) of \(model) (\(config)), \(routing.rawValue), \(detail)")
    }

    /// `--backend cuda`: the layer through GPU expert parallelism (GPUExpertParallelRunner); rank 0 writes the
    /// file, with the top-k each token's home rank computed.
    static func runOnGPUs(
        environment: RankEnvironment, flags: ExpertParallelFlags, model: String, layer: Int, input: String, output: String,
        routing: RoutingMode
    ) throws {
        let weights = try ModelDirectory(path: model).layer(layer)
        let config = weights.config
        let (values, tokens) = try HiddenStatesFile.readInput(input, hidden: config.hidden)
        let comm = flags.comm(in: environment)
        let runner = try GPUExpertParallelRunner(
            environment: environment, layers: [weights], maxBatchTokens: tokens, options: flags.options())
        defer { runner.close() }
        let hidden = try runner.forward(values, tokens: tokens, mode: routing, comm: comm)
        let routed = try runner.gatherRouting(layer: 0, tokens: tokens)
        guard let hidden, let routed else { return }
        let over = comm == .symmetric
            ? (runner.environment.nodes > 1 ? "CUDA IPC and NCCL rails" : "CUDA IPC")
            : runner.transport?.kind == .nccl ? "NCCL" : "CUDA IPC copies"
        let detail = "cuda expert-parallel, \(runner.world) ranks over \(over), \(comm)"
        try HiddenStatesFile.writeOutput(
            output, result: MoEForwardResult(hidden: hidden, topkIds: routed.ids, topkWeights: routed.weights), tokens: tokens,
            config: config,
            metadata: ["model": model, "layer": String(layer), "routing": routing.rawValue, "backend": detail])
        print("wrote \(output): \(tokens) token\(tokens == 1 ? "" : "s"), layer \(layer) of \(model) (\(config)), \(routing.rawValue), \(detail)")
    }
}
