import Dispatch
import Logging
import MoECore

/// Runs the backend's forward passes one at a time on a thread of its own, never on Swift's cooperative pool
/// (a CPU forward takes milliseconds to seconds and would starve every other task on a small machine).
///
/// The backend need not be thread-safe: this is the only caller of `forward` and it calls from one serial queue.
final class ForwardEngine: @unchecked Sendable {
    private let backend: any MoEBackend
    private let queue = DispatchQueue(label: "moe.serve.forward", qos: .userInitiated)
    let config: MoEConfig
    let name: String
    let detail: String

    init(backend: any MoEBackend) {
        self.backend = backend
        self.config = backend.config
        self.name = backend.name
        self.detail = backend.detail
    }

    /// x: [T, H] float32.
    func forward(_ x: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) async throws -> MoEForwardResult {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.backend.forward(x, tokens: tokens, routing: routing, profiler: profiler) })
            }
        }
    }
}

/// Merges concurrent requests into shared forward passes.
///
/// Requests wait in arrival order. Whenever the engine is idle, the batcher takes the oldest request and, behind
/// it in order, every other waiting request with the same routing mode while the total stays within
/// `maxBatchTokens` (it stops at the first one that does not fit, so big requests are not starved). Their rows are
/// concatenated into one [ΣT, H] input, run once, and each caller gets back exactly its own rows of the
/// outputs. Nothing waits on a timer: requests that arrive while a pass runs form the next batch.
///
/// Every backend computes each token's row independently of the others in the batch (routing, expert GEMMs and
/// the k-way sum are per row), so a caller's result is bit-identical to running its input alone.
actor ForwardBatcher {
    private struct Job {
        var input: ForwardInput
        var continuation: CheckedContinuation<MoEForwardResult, any Error>
    }

    private let engine: ForwardEngine
    private let maxBatchTokens: Int
    private let metrics: ServerMetrics
    private let profiles: ProfileSessions
    private let logger: Logger
    private var waiting: [Job] = []
    private var running = false
    /// Passes profiled for the stage metrics: one in `stageMetricsEvery` (the first among them), and every pass while
    /// a profile session runs.
    nonisolated let stageMetricsEvery: Int
    private var passes = 0

    init(
        engine: ForwardEngine, maxBatchTokens: Int, metrics: ServerMetrics, profiles: ProfileSessions, stageMetricsEvery: Int = 1,
        logger: Logger
    ) {
        precondition(stageMetricsEvery >= 1, "the configuration checks --stage-metrics-every")
        self.engine = engine
        self.maxBatchTokens = maxBatchTokens
        self.metrics = metrics
        self.profiles = profiles
        self.stageMetricsEvery = stageMetricsEvery
        self.logger = logger
    }

    /// Runs `input` (already checked: T ≤ maxBatchTokens, T·H finite values) as part of some batch.
    func submit(_ input: ForwardInput) async throws -> MoEForwardResult {
        precondition(input.tokens >= 1 && input.tokens <= maxBatchTokens, "requests are checked against the token limit first")
        return try await withCheckedThrowingContinuation { continuation in
            waiting.append(Job(input: input, continuation: continuation))
            if !running {
                running = true
                Task { await self.drain() }
            }
        }
    }

    /// Requests waiting for a batch (tests, metrics).
    var waitingCount: Int { waiting.count }

    private func drain() async {
        while !waiting.isEmpty {
            let batch = takeBatch()
            await run(batch)
        }
        running = false
    }

    private func takeBatch() -> [Job] {
        let routing = waiting[0].input.routing
        var tokens = 0
        var taken: [Job] = []
        var left: [Job] = []
        var full = false
        for job in waiting {
            if !full && job.input.routing == routing {
                if tokens + job.input.tokens <= maxBatchTokens {
                    tokens += job.input.tokens
                    taken.append(job)
                    continue
                }
                full = true
            }
            left.append(job)
        }
        waiting = left
        return taken
    }

    private func run(_ batch: [Job]) async {
        let H = engine.config.hidden, k = engine.config.topK
        let T = batch.reduce(0) { $0 + $1.input.tokens }
        var x = [Float]()
        x.reserveCapacity(T * H)
        for job in batch { x += job.input.values }
        let profiled = passes % stageMetricsEvery == 0 || profiles.isActive
        passes += 1
        let profiler = profiled ? Profiler() : nil
        let start = Profiler.now()
        let result: MoEForwardResult
        do {
            result = try await engine.forward(x, tokens: T, routing: batch[0].input.routing, profiler: profiler)
        } catch {
            metrics.forwardFailed()
            logger.error("forward pass failed", metadata: ["tokens": "\(T)", "requests": "\(batch.count)", "error": "\(error)"])
            for job in batch { job.continuation.resume(throwing: error) }
            return
        }
        let seconds = Double(Profiler.now() - start) * 1e-9
        // Metrics and the profile first, so a caller that sees its response also sees its pass counted.
        metrics.batchFinished(requests: batch.count, tokens: T, seconds: seconds, records: profiler?.records)
        if let profiler { profiles.append(profiler.records, origin: profiler.origin) }
        logger.debug("forward pass", metadata: ["tokens": "\(T)", "requests": "\(batch.count)", "seconds": "\(seconds)"])
        var row = 0
        for job in batch {
            let t = job.input.tokens
            job.continuation.resume(returning: MoEForwardResult(
                hidden: Array(result.hidden[(row * H)..<((row + t) * H)]),
                topkIds: Array(result.topkIds[(row * k)..<((row + t) * k)]),
                topkWeights: Array(result.topkWeights[(row * k)..<((row + t) * k)])))
            row += t
        }
    }
}
