import ArgumentParser
import Foundation
import MoECPU
import MoECUDA
import MoECore
import MoEParallel
import MoEServer

#if canImport(Glibc)
import Glibc
#endif

/// `moe serve`: one MoE layer behind HTTP until SIGTERM or SIGINT.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve one MoE layer over HTTP (loopback by default) until SIGTERM/SIGINT.",
        discussion: """
            Endpoints:
              POST /v1/moe/forward   {"hidden_states": [[...H numbers...], ...], "routing": "renormalize"}
                                     or a safetensors body (Content-Type: application/octet-stream, tensor
                                     hidden_states [T, H], F32 or BF16, as moe forward reads;
                                     ?routing=softmax-first)
                                     -> {"hidden_states", "topk_ids", "topk_weights"}
              GET  /health           what is loaded
              GET  /metrics          Prometheus text: requests, errors by status, latency, tokens/s, stage times
              POST /start_profile    (--enable-profiling) optional {"name", "output_dir", "with_flops", "trace", "stages"}
              POST /stop_profile     writes the table, summary JSON and Chrome trace; returns the summary
            Concurrent requests share forward passes of up to --max-batch-tokens tokens.
            On SIGTERM the server stops accepting connections and finishes the requests in flight.

            With --ranks R the layer runs expert-parallel on R rank processes of this host (CPU ranks, or one
            process per GPU with --backend cuda): rank 0 serves HTTP and every forward pass is one step of the
            whole job (--comm symmetric or alltoall). If a rank dies or stalls, the requests in flight fail with
            the reason, the server stops and the job exits non-zero.
            """)

    @OptionGroup var model: ModelOptions

    @OptionGroup var parallel: ExpertParallelFlags

    @Option(help: "Address to bind (loopback by default; 0.0.0.0 exposes the server to the network).")
    var host: String = "127.0.0.1"

    @Option(help: "TCP port (0: any free port, printed at start).")
    var port: Int = 8000

    @Option(help: "Backend: auto, cpu or cuda.")
    var backend: BackendChoice = .auto

    @Option(help: "Routing for requests that do not name one: renormalize or softmax-first.")
    var routing: RoutingMode = .renormalize

    @Flag(help: "Serve POST /start_profile and /stop_profile (404 otherwise).")
    var enableProfiling = false

    @Option(help: "Where profiles go when /start_profile names no output_dir.")
    var profileDir: String = "moe-profiles"

    @Option(help: "Most tokens in one forward pass (summed over the requests batched together).")
    var maxBatchTokens: Int = 256

    @Option(help: "Most tokens (rows) in one request; more → 422.")
    var maxRequestTokens: Int = 256

    @Option(help: "Largest request body in bytes; larger → 413.")
    var maxBodyBytes: Int = 64 << 20

    @Option(help: "Log level: \(ServerLogging.levels.joined(separator: ", ")).")
    var logLevel: String = "info"

    @Option(help: ArgumentHelp(
        "Profile one forward pass in N for the per-stage metrics (every pass while a profile runs).",
        discussion: "Default: every pass on the CPU backend, one in \(MoEServerConfiguration.defaultStageMetricsEvery) on CUDA, where a profiled pass replays a slower, instrumented graph."))
    var stageMetricsEvery: Int?

    var serverConfiguration: MoEServerConfiguration {
        MoEServerConfiguration(
            host: host, port: port, maxBatchTokens: maxBatchTokens, maxRequestTokens: maxRequestTokens,
            maxBodyBytes: maxBodyBytes, enableProfiling: enableProfiling, profileDirectory: profileDir,
            defaultRouting: routing, stageMetricsEvery: stageMetricsEvery)
    }

    func validate() throws {
        if model.model == nil && model.preset == nil {
            throw ValidationError("give the layer to serve: --model DIR [--layer L], or --preset NAME for synthetic weights")
        }
        do {
            try serverConfiguration.validate()
        } catch {
            throw ValidationError("\(error)")
        }
        if !ServerLogging.levels.contains(logLevel) {
            throw ValidationError("--log-level '\(logLevel)' is not one of \(ServerLogging.levels.joined(separator: ", "))")
        }
    }

    func run() async throws {
        if parallel.isRequested { return try await runExpertParallel() }
        let logger = try ServerLogging.bootstrap(level: logLevel)
        let (weights, source) = try model.loadWeights(defaultPreset: .tiny)
        let (engine, why) = try BackendRegistry.make(backend, weights: weights)
        if let cuda = engine as? CUDABackend {
            // Poisoning every output before each pass catches unwritten elements in checks; a server need not pay
            // for it. And a server sees every batch size up to --max-batch-tokens: keep each size's buffers and
            // graphs (by arithmetic about 75 KB per token of a gpt-oss layer: 2.5 GB for all sizes to 256) rather than capture
            // again when more than 16 sizes alternate; out of memory, the least recently used go first.
            cuda.options.poisonOutputs = false
            cuda.options.maxBuckets = max(cuda.options.maxBuckets, min(maxBatchTokens, 512))
        }
        logger.info("model \(source): \(weights.config)")
        logger.info("backend \(engine.detail) [\(why)]")
        var ceilings: HardwareCeilings?
        if enableProfiling {
            // Profiles report % of the machine's measured limits; measure them once, before serving.
            ceilings = try engine.measureCeilings()
            logger.info("ceilings: \(ceilings!.bandwidthGBps) GB/s (\(ceilings!.bandwidthMethod)), \(ceilings!.peakTFLOPs) TFLOP/s (\(ceilings!.peakMethod))")
        }
        let server = try MoEServer(backend: engine, configuration: serverConfiguration, ceilings: ceilings, logger: logger)
        let host = self.host
        try await server.run(onServerRunning: { port in
            // Scripts read the port from this line: written unbuffered, so it arrives even when stdout is a pipe.
            FileHandle.standardOutput.write(Data("moe serve: listening on http://\(host):\(port)\n".utf8))
        })
        logger.info("stopped")
    }

    /// `--ranks R`: every rank joins the job; rank 0 serves, the others follow its steps until it stops them.
    func runExpertParallel() async throws {
        guard let environment = try parallel.enterRank() else { return }
        let logger = try ServerLogging.bootstrap(level: logLevel)
        let (weights, source) = try model.loadWeights(defaultPreset: .tiny)
        let comm = parallel.comm(in: environment)
        let member: any ExpertParallelServingMember
        switch backend {
        case .cuda:
            let runner = try GPUExpertParallelRunner(
                environment: environment, layers: [weights], maxBatchTokens: maxBatchTokens, options: parallel.options())
            // Refuse now, on every rank alike, rather than fail the first request (and the job with it).
            if let why = comm == .symmetric ? runner.symmetricRefusal : runner.allToAllRefusal {
                runner.close()
                let other: CommMode = comm == .symmetric ? .alltoall : .symmetric
                throw ValidationError("--comm \(comm) cannot run in this job: \(why)"
                    + (runner.availableComms.contains(other) ? " (--comm \(other) can)" : ""))
            }
            member = runner
        case .auto, .cpu:
            member = try ExpertParallelRunner(
                environment: environment, layers: [weights], maxBatchTokens: maxBatchTokens, options: parallel.options())
        }
        defer { member.close() }
        let group = try ExpertParallelServingGroup(member: member, comm: comm, maxBatchTokens: maxBatchTokens)
        guard environment.rank == 0 else {
            // Rank 0 stops the group once it has finished the requests in flight; a signal the launcher forwards
            // must not take this rank away from under them.
            signal(SIGTERM, SIG_IGN)
            signal(SIGINT, SIG_IGN)
            try group.serveFollower()
            return
        }
        let engine = ExpertParallelServingBackend(group: group, name: backend == .cuda ? "cuda" : "cpu")
        engine.onFailure = { reason in
            logger.error("the expert-parallel group failed, stopping the server: \(reason)")
            kill(getpid(), SIGTERM)  // the server's graceful shutdown: requests in flight get their errors
        }
        logger.info("model \(source): \(weights.config)")
        logger.info("backend \(engine.detail)\(backend == .auto ? " [auto: expert parallelism runs on CPU ranks unless --backend cuda]" : "")")
        do {
            var ceilings: HardwareCeilings?
            if enableProfiling {
                ceilings = try BackendRegistry.make(backend == .cuda ? .cuda : .cpu, weights: weights).backend.measureCeilings()
            }
            let server = try MoEServer(backend: engine, configuration: serverConfiguration, ceilings: ceilings, logger: logger)
            let host = self.host
            try await server.run(onServerRunning: { port in
                FileHandle.standardOutput.write(Data("moe serve: listening on http://\(host):\(port) (\(environment.world) ranks)\n".utf8))
            })
        } catch {
            // The followers wait for rank 0's next step: tell them why there will be none.
            member.heap.abort(message: "rank 0 could not serve: \(error)")
            throw error
        }
        if let failure = group.failure {
            throw ExpertParallelError.invalidArgument("the expert-parallel group failed: \(failure)")
        }
        try group.stop()
        logger.info("stopped \(environment.world) ranks")
    }
}
