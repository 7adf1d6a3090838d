import CCUDA
import Dispatch
import MoECore

/// The whole MoE layer on one NVIDIA GPU (DESIGN §3): routing, plan, both grouped GEMMs with MXFP4 decoded in
/// registers and fed to bf16 tensor cores, and the k-way reduce — all on the device with no host
/// synchronisation, captured once per token count as a CUDA graph and replayed.
///
/// Semantics are MoEPipeline's exactly (bf16 between stages, fp32 accumulation, slot-ordered fp32 sum); the
/// results differ from the CPU backend only by fp32 summation order inside dot products.
public final class CUDABackend: MoEBackend, @unchecked Sendable {
    public struct Options: Sendable {
        /// Forces one GEMM kernel for every token count (checks use this to cover each variant).
        public var gemmVariant: GemmVariant?
        /// GEMM 2 alone forced to this kernel (experiments, `$MOE_CUDA_GEMM2`); ignored at token counts where its tile
        /// rows differ from GEMM 1's (both GEMMs run over one tile schedule).
        public var gemm2Variant: GemmVariant?
        /// Fill every output and intermediate with 0xFF bytes (NaN / −1) before each `forward`, so elements a
        /// kernel fails to write show up as NaN (on by default: one memset per buffer; `timeForward` never poisons).
        public var poisonOutputs: Bool
        /// Buckets kept (one per token count); the least recently used is dropped past this.
        public var maxBuckets: Int

        /// `gemmVariant` nil: `$MOE_CUDA_GEMM` when it names a variant (for experiments), else chosen per token count.
        public init(gemmVariant: GemmVariant? = nil, poisonOutputs: Bool = true, maxBuckets: Int = 16) {
            self.gemmVariant = gemmVariant ?? currentEnvironment("MOE_CUDA_GEMM").flatMap(GemmVariant.init(rawValue:))
            self.gemm2Variant = currentEnvironment("MOE_CUDA_GEMM2").flatMap(GemmVariant.init(rawValue:))
            self.poisonOutputs = poisonOutputs
            self.maxBuckets = maxBuckets
        }
    }

    public let name = "cuda"
    public let config: MoEConfig
    public let runtime: CUDARuntime
    public var options: Options
    let layer: DeviceLayer
    let kernels: LayerKernels
    let stream: CUDAStream
    /// The MOE_TRACE build of the kernels, compiled on the first `kernelTrace`.
    private var tracedKernels: LayerKernels?
    private var buckets: [Int: TokenBucket] = [:]
    private var bucketUse = RecentlyUsed<Int>()
    let lock = DispatchSemaphore(value: 1)

    public var detail: String {
        "cuda: MXFP4 decoded in registers (mma.sync at decode sizes, register-A wgmma for large batches), CUDA-graph replay; \(runtime.device.name) (\(runtime.device.architecture))"
            + (KernelBuildSwitches.aliasesExperts
                ? " [MOE_CUDA_ALIAS_EXPERTS=1: every expert reads expert 0's weights, outputs are WRONG (timing only)]" : "")
    }

    /// Whether this machine can run the backend, and if not, what is missing and where it looked.
    public static func availability() -> BackendAvailability {
        do throws(CUDAError) {
            let runtime = try CUDARuntime.shared()
            return BackendAvailability(name: "cuda", available: true, reason: runtime.summary)
        } catch {
            return BackendAvailability(name: "cuda", available: false, reason: error.description)
        }
    }

    public convenience init(weights: MoELayerWeights) throws {
        try self.init(weights: weights, options: Options())
    }

    /// Repacks the weights (CPU, all cores), uploads them, and compiles (or loads from the cache) the kernels.
    public init(weights: MoELayerWeights, options: Options) throws {
        let runtime: CUDARuntime
        do throws(CUDAError) {
            runtime = try CUDARuntime.shared()
        } catch {
            throw MoEError.backendUnavailable(backend: "cuda", reason: error.description)
        }
        self.runtime = runtime
        self.options = options
        config = weights.config
        try runtime.device.makeCurrent()
        kernels = try LayerKernels(runtime: runtime)
        layer = try DeviceLayer(device: runtime.device, layer: RepackedLayer(weights))
        stream = try CUDAStream(device: runtime.device)
    }

    // MARK: forward

    /// A profiled pass replays the timed graph (event nodes between the kernels), not the plain one.
    public var profiledPassesAreSlower: Bool { true }

    public func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        try KernelBuildSwitches.refuseAliasedExperts("a forward pass's outputs")
        return try withInput(input, tokens: tokens) { bucket in
            if options.poisonOutputs {
                for buffer in bucket.writtenBuffers { try buffer.fill(byte: 0xFF, stream: stream) }
            }
            if let profiler {
                try runProfiled(bucket: bucket, mode: routing, profiler: profiler)
            } else {
                let graph = try makingRoom(for: tokens, what: "the graph of a \(tokens)-token forward") { () throws(CUDAError) in
                    try bucket.graph(slot: 0, mode: routing, layer: layer, kernels: kernels, stream: stream)
                }
                try graph.launch(stream)
            }
            try stream.synchronize()
            let T = tokens, k = config.topK
            let hidden = try bucket.output.download(UInt16.self, count: T * config.hidden).map { BF16.float($0) }
            let ids = try bucket.topkIds.download(Int32.self, count: T * k)
            let weights = try bucket.topkWeights.download(Float.self, count: T * k)
            return MoEForwardResult(hidden: hidden, topkIds: ids, topkWeights: weights)
        }
    }

    /// One replay of the timed graph; records per-stage device times in the profiler.
    private func runProfiled(bucket: TokenBucket, mode: RoutingMode, profiler: Profiler) throws {
        let tokens = bucket.plan.tokens
        let (exec, start, marks) = try makingRoom(for: tokens, what: "the timed graph of a \(tokens)-token forward") {
            () throws(CUDAError) in try bucket.timedGraph(slot: 0, mode: mode, layer: layer, kernels: kernels, stream: stream)
        }
        try exec.launch(stream)
        try stream.synchronize()
        let counts = try bucket.expertCounts.download(Int32.self, count: config.experts)
        let touched = counts.filter { $0 > 0 }.count
        let rows = bucket.plan.slots, T = bucket.plan.tokens
        var previous = start
        var elapsed: [(Stage, Double, StageCost)] = []
        let gatherBytes = Double((T + rows) * config.hidden * 2)  // x read once, written to its k sorted rows
        for (phase, event) in marks {
            let ms = Double(try event.milliseconds(since: previous))
            previous = event
            switch phase {
            case .route, .router: elapsed.append((.router, ms, StageCost.router(tokens: T, config: config)))
            case .plan: elapsed.append((.plan, ms, StageCost(bytes: Double(T * config.experts * 4 + rows * 16))))
            case .topk: elapsed.append((.topk, ms, StageCost(flops: Double(T * config.experts * 3), bytes: Double(T * config.experts * 4))))
            case .planScan, .planScatter: elapsed.append((.plan, ms, StageCost(bytes: Double(rows * 16))))
            case .gather: elapsed.append((.dispatch, ms, StageCost(bytes: gatherBytes)))
            case .place:
                let gathers = bucket.gathered != nil
                elapsed.append((gathers ? .dispatch : .plan, ms, StageCost(bytes: Double(rows * 16) + (gathers ? gatherBytes : 0))))
            case .gemm1: elapsed.append((.gemm1, ms, StageCost.gemm1(rows: rows, expertsTouched: touched, config: config)))
            case .gemm2: elapsed.append((.gemm2, ms, StageCost.gemm2(rows: rows, expertsTouched: touched, config: config)))
            case .reduce: elapsed.append((.reduce, ms, StageCost.reduce(tokens: T, config: config)))
            }
        }
        // Device times laid end to end, ending now on the host clock.
        let total = elapsed.reduce(0) { $0 + $1.1 }
        var cursor = Profiler.now() &- UInt64(total * 1e6)
        for (stage, ms, cost) in elapsed {
            let end = cursor &+ UInt64(ms * 1e6)
            profiler.record(stage.rawValue, start: cursor, end: end, cost: cost)
            cursor = end
        }
    }

    /// Median device time of each kernel of the layer over `iterations` replays of a graph with event nodes
    /// between the kernels (so launch gaps inside the graph count towards the following kernel).
    public func kernelTimes(_ input: [Float], tokens: Int, routing: RoutingMode, iterations: Int = 20) throws
        -> [(kernel: String, microseconds: Double)]
    {
        try withInput(input, tokens: tokens) { bucket in
            let (exec, start, marks) = try bucket.timedGraph(slot: 0, mode: routing, layer: layer, kernels: kernels, stream: stream)
            var samples = [[Double]](repeating: [], count: marks.count)
            for iteration in 0..<(iterations + 2) {
                try exec.launch(stream)
                try stream.synchronize()
                guard iteration >= 2 else { continue }  // warm-up
                var previous = start
                for (i, (_, event)) in marks.enumerated() {
                    samples[i].append(Double(try event.milliseconds(since: previous)) * 1000)
                    previous = event
                }
            }
            return marks.enumerated().map { i, mark in (mark.0.rawValue, samples[i].sorted()[samples[i].count / 2]) }
        }
    }

    /// Each kernel's span inside replays of the plain layer graph (programmatic overlap included), from the MOE_TRACE
    /// build of the kernels (compiled on first use; the atomics it adds cost little, but the spans are of that build).
    /// Median over `replays` replays after two warm-ups; the host waits for each replay, so each starts from idle.
    public func kernelTrace(_ input: [Float], tokens: Int, routing: RoutingMode, replays: Int = 20) throws -> [KernelSpan] {
        try kernelTraceBySM(input, tokens: tokens, routing: routing, replays: replays).spans
    }

    /// kernelTrace, and how each kernel's and mark's end is spread over the SMs (KernelTrace.smEnds).
    public func kernelTraceBySM(
        _ input: [Float], tokens: Int, routing: RoutingMode, replays: Int = 20
    ) throws -> (spans: [KernelSpan], smEnds: [KernelTrace.SMEnds]) {
        try withInput(input, tokens: tokens) { bucket in
            let traced = try tracedKernels ?? LayerKernels(runtime: runtime, traced: true)
            tracedKernels = traced
            let names = TokenBucket.Mark.traceNames
            let buffer = try DeviceBuffer(device: runtime.device, byteCount: KernelTrace.bufferBytes(phases: names.count))
            let exec = try bucket.tracedGraph(slot: 0, mode: routing, layer: layer, kernels: traced, stream: stream, trace: buffer)
            let raw = try KernelTrace.record(
                phases: names.count, replays: replays, warmup: 2, buffer: buffer, stream: stream, perSlot: true
            ) {
                try exec.launch(stream)
                try stream.synchronize()
            }
            let folded = raw.map { KernelTrace.fold($0, phases: names.count) }
            return (KernelTrace.spans(names: names, replays: folded), KernelTrace.smEnds(names: names, replays: raw))
        }
    }

    /// Checks the input, then, holding the backend, uploads it into input slot 0 of the bucket for T tokens.
    private func withInput<Result>(_ input: [Float], tokens: Int, _ body: (TokenBucket) throws -> Result) throws -> Result {
        try InputCheck.validate(input, tokens: tokens, hidden: config.hidden)
        lock.wait()
        defer { lock.signal() }
        try runtime.device.makeCurrent()
        let bucket = try bucket(tokens: tokens)
        try bucket.inputs[0].uploadAsync(input.map { BF16.bits($0) }, stream: stream)
        return try body(bucket)
    }

    /// The bucket for T tokens (allocated on first use; least recently used dropped past maxBuckets).
    func bucket(tokens: Int) throws(CUDAError) -> TokenBucket {
        if let bucket = buckets[tokens] {
            bucketUse.touch(tokens)
            return bucket
        }
        while buckets.count >= max(1, options.maxBuckets), dropOldestBucket() {}
        let plan = launchPlan(tokens: tokens)
        try plan.validate(maxSharedPerBlock: runtime.device.maxSharedPerBlock)
        if (plan.gemm1Variant.needsHopper || plan.gemm2Variant.needsHopper) && runtime.device.architecture != "sm_90a" {
            throw CUDAError.unsupportedDevice("\(plan.variantDescription) needs sm_90a (wgmma); this device is \(runtime.device.architecture)")
        }
        for handOver in plan.registeredHandOver ? [false, true] : [false] {
            try kernels.gemm(plan.gemm1Variant, handOver: handOver).allowSharedMemory(plan.gemm1Shape.sharedBytes)
            try kernels.gemm(plan.gemm2Variant, handOver: handOver).allowSharedMemory(plan.gemm2Shape.sharedBytes)
        }
        try kernels.topk.allowSharedMemory(plan.topkShape.sharedBytes)
        try kernels.planScatter.allowSharedMemory(plan.scatterShape.sharedBytes)
        if plan.planBuild() == .inPlace { try kernels.planPlace.allowSharedMemory(plan.placeShape(gathers: false).sharedBytes) }
        if plan.fusedRouting {
            try kernels.routeSmall(plan).allowSharedMemory(plan.routeSmallShape.sharedBytes)
        } else if plan.smallRouting {
            try kernels.routeFinish.allowSharedMemory(plan.finishShape.sharedBytes)
        }
        let bucket = try makingRoom(for: tokens, what: "the buffers of a \(tokens)-token forward") { () throws(CUDAError) in
            try TokenBucket(device: runtime.device, plan: plan, stream: stream)
        }
        buckets[tokens] = bucket
        bucketUse.touch(tokens)
        return bucket
    }

    /// `make` (a bucket's buffers, or a graph's capture and instantiation), retried while the device is out of memory
    /// and another token count's bucket can be dropped (least recently used first): a server keeps many sizes cached.
    private func makingRoom<T>(for tokens: Int, what: String, _ make: () throws(CUDAError) -> T) throws(CUDAError) -> T {
        try retryingOutOfMemory(make, evict: { dropOldestBucket(except: tokens) }) {
            CUDAError.outOfMemory(
                what: what, bytes: nil, free: try? runtime.device.memoryInfo().free, total: runtime.device.totalMemory,
                advice: "Send smaller batches (moe serve --max-batch-tokens), or hold fewer experts per GPU (moe launch --ranks R).")
        }
    }

    /// Frees the least recently used bucket other than `keep`'s; false when there is none.
    private func dropOldestBucket(except keep: Int? = nil) -> Bool {
        guard let oldest = bucketUse.removeOldest(except: keep) else { return false }
        // A bucket frees its buffers before its graphs: nothing of it may still run (a forward waits for its stream
        // before it returns, except on an error path).
        _ = try? stream.synchronize()
        buckets[oldest] = nil
        return true
    }

    /// The launch plan a forward of T tokens uses (for reports).
    public func launchPlan(tokens: Int) -> LaunchPlan {
        Self.launchPlan(tokens: tokens, config: config, options: options, device: runtime.device)
    }

    /// The plan of T tokens on `device` with `options`' forced kernels: the single-rank forward's, which the EP layer
    /// follows too (the same kernels and tile rows).
    static func launchPlan(tokens: Int, config: MoEConfig, options: Options, device: CUDADevice) -> LaunchPlan {
        LaunchPlan(
            tokens: tokens, config: config, variant: options.gemmVariant, gemm2: options.gemm2Variant,
            hopper: device.architecture == "sm_90a", multiprocessors: device.multiprocessors)
    }

    /// Drops every bucket (and its graphs): after changing `options.gemmVariant`.
    public func resetBuckets() {
        lock.wait()
        buckets.removeAll()
        bucketUse.removeAll()
        lock.signal()
    }
}
