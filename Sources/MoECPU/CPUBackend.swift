import CMoECPUKernels
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The CPU backend: DESIGN §3's pipeline with bf16 activations between stages and fp32 accumulation.
///
/// - Kernels: one `CPUKernelPath` chosen at start-up (`kernelPath`); the expert weights are repacked at load
///   into row groups of 16 rows the kernels stream (`PackedExpertStack`).
/// - Threads: a persistent `WorkerPool`; each phase (router, pack, GEMM 1, GEMM 2, reduce) is split statically
///   over the workers, the GEMMs over (expert × 16-row group) units balanced by cost, with no lock in between.
///   Every output element is produced by one tile call with a fixed reduction order, so the bits never depend
///   on the number of workers.
/// - Memory: buffers live in a `Workspace` sized by the largest batch seen; after that warm-up a call to
///   `forward(input:tokens:routing:hidden:topkIds:topkWeights:profiler:)` allocates nothing.
/// - Calls on one backend from several threads are serialised by a lock (they share the workspace).
public final class CPUBackend: MoEBackend, MoEStageKernels, @unchecked Sendable {
    public let name = "cpu"
    public let config: MoEConfig
    public let weights: MoELayerWeights
    public let workers: Int
    /// The instruction-set path the GEMMs run.
    public let kernelPath: CPUKernelPath
    /// Why the path differs from what was asked (a bad MOEKIT_CPU_KERNELS), or nil.
    public let selectionNote: String?

    /// W1 [E, 2I, H] as gate/up row-group pairs; W2 [E, H, I] as row groups of 16 output columns.
    let gateUp: PackedExpertStack
    let down: PackedExpertStack
    /// b1 split: [E, I] gate biases and [E, I] up biases; b2 [E, H].
    let gateBias: AlignedBuffer<Float>
    let upBias: AlignedBuffer<Float>
    let downBias: AlignedBuffer<Float>
    /// Wr [E, H] as fp32 (portable router) and as bf16 bits (AVX-512 router); br [E].
    let routerWeight: AlignedBuffer<Float>
    let routerWeightBF16: AlignedBuffer<UInt16>
    let routerBias: AlignedBuffer<Float>

    let pool: WorkerPool
    let workspace: Workspace
    let lock = Mutex()
    /// The parallel phases of a pass, reused call after call (set once `self` exists).
    private(set) var phases: Phases!

    /// The experts whose weights are packed here: all of them, or an expert-parallel rank's share.
    public var residentExperts: [Int] { gateUp.resident }
    /// Bytes of packed expert weights (W1 and W2) this backend holds.
    public var packedExpertBytes: Int { gateUp.byteCount + down.byteCount }

    /// Throws unless every expert is packed (a single-rank forward may route to any of them).
    func requireEveryExpert() throws {
        guard gateUp.resident.count == config.experts else {
            throw MoEError.invalidArgument(
                "this CPU backend packs \(gateUp.resident.count) of \(config.experts) experts (an expert-parallel rank's share); "
                    + "a single-rank forward needs all of them: make it without `experts:`")
        }
    }

    public var detail: String {
        var text = "cpu \(kernelPath.summary), \(workers) threads"
        if let selectionNote { text += " [\(selectionNote)]" }
        return text
    }

    /// Always available; says which kernel path `init(weights:workers:)` will run (MOEKIT_CPU_KERNELS included).
    public static func availability() -> BackendAvailability {
        let (path, note) = CPUKernelPath.selection(environmentValue: environmentKernels)
        let supported = CPUKernelPath.supported.map(\.rawValue).joined(separator: ", ")
        let source = note ?? (environmentKernels.map { _ in "from \(CPUKernelPath.environmentVariable)" } ?? "fastest here")
        return BackendAvailability(
            name: "cpu", available: true,
            reason: "\(ProcessorCount.online) cores, \(path.rawValue) kernels (\(source); supported: \(supported))")
    }

    /// MOEKIT_CPU_KERNELS, nil when unset or empty.
    static var environmentKernels: String? {
        getenv(CPUKernelPath.environmentVariable).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The fastest kernel path this CPU supports, or the one `MOEKIT_CPU_KERNELS` names. A name that is unknown
    /// or unsupported here is not used: the backend falls back to the fastest path, says so in `detail` and on
    /// stderr (use `init(weights:workers:kernels:)` to fail instead).
    public convenience init(weights: MoELayerWeights, workers: Int? = nil) {
        let (path, note) = CPUKernelPath.selection(environmentValue: CPUBackend.environmentKernels)
        if let note { StandardError.print("moe: warning: CPU backend: \(note)\n") }
        self.init(weights: weights, workers: workers, path: path, note: note)
    }

    /// Runs the given kernel path; throws `backendUnavailable` naming what is missing when this CPU lacks it.
    public convenience init(weights: MoELayerWeights, workers: Int? = nil, kernels: CPUKernelPath) throws {
        try kernels.requireSupported()
        self.init(weights: weights, workers: workers, path: kernels, note: nil)
    }

    /// An expert-parallel rank's backend: packs only `experts` (its share, ascending ids), so a rank holds 1/R of
    /// the packed expert weights. It runs `runExperts` for those experts and the router for all; a single-rank
    /// `forward` needs every expert and is refused.
    public convenience init(weights: MoELayerWeights, workers: Int? = nil, experts: [Int]) throws {
        guard !experts.isEmpty, zip(experts, experts.dropFirst()).allSatisfy({ $0 < $1 }),
              experts.allSatisfy({ (0..<weights.config.experts).contains($0) })
        else {
            throw MoEError.invalidArgument(
                "resident experts \(experts) must be a non-empty ascending list of distinct ids below \(weights.config.experts)")
        }
        let (path, note) = CPUKernelPath.selection(environmentValue: CPUBackend.environmentKernels)
        if let note { StandardError.print("moe: warning: CPU backend: \(note)\n") }
        self.init(weights: weights, workers: workers, path: path, note: note, experts: experts)
    }

    private init(weights: MoELayerWeights, workers requested: Int?, path: CPUKernelPath, note: String?, experts: [Int]? = nil) {
        let c = weights.config
        let (E, H, I) = (c.experts, c.hidden, c.intermediate)
        self.weights = weights
        self.config = c
        self.kernelPath = path
        var note = note
        let wanted = max(1, requested ?? ProcessorCount.online)
        if let pool = WorkerPool(workers: wanted) {
            self.pool = pool
        } else {
            // The OS refused a thread: run on the caller's thread alone rather than not at all.
            note = [note, "could not start \(wanted - 1) worker threads; running single-threaded"]
                .compactMap { $0 }.joined(separator: "; ")
            self.pool = WorkerPool(workers: 1)!
        }
        self.workers = pool.workers
        self.selectionNote = note
        gateUp = PackedExpertStack.gateUp(weights.gateUp, subset: experts)
        down = PackedExpertStack.down(weights.down, subset: experts)
        gateBias = AlignedBuffer(count: E * I)
        upBias = AlignedBuffer(count: E * I)
        for e in 0..<E {
            for i in 0..<I {
                gateBias.pointer[e * I + i] = weights.gateUpBias[e * 2 * I + 2 * i]
                upBias.pointer[e * I + i] = weights.gateUpBias[e * 2 * I + 2 * i + 1]
            }
        }
        downBias = AlignedBuffer(copying: weights.downBias)
        routerWeight = AlignedBuffer(copying: weights.routerWeight)
        routerWeightBF16 = AlignedBuffer(copying: weights.routerWeight.map { BF16.bits($0) })
        routerBias = AlignedBuffer(copying: weights.routerBias)
        precondition(H % 32 == 0 && I % 32 == 0, "MoEConfig.validate() guarantees 32-multiples")
        workspace = Workspace(config: c, workers: pool.workers)
        phases = Phases(backend: self)
    }

    public func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        try InputCheck.validate(input, tokens: tokens, hidden: config.hidden)
        var hidden = [Float](repeating: 0, count: tokens * config.hidden)
        var ids = [Int32](repeating: 0, count: tokens * config.topK)
        var topWeights = [Float](repeating: 0, count: tokens * config.topK)
        try input.withUnsafeBufferPointer { x in
            try forward(
                input: x.baseAddress!, tokens: tokens, routing: routing, hidden: &hidden, topkIds: &ids,
                topkWeights: &topWeights, profiler: profiler)
        }
        return MoEForwardResult(hidden: hidden, topkIds: ids, topkWeights: topWeights)
    }
}

/// Writes to file descriptor 2 (the C `stderr` global is not concurrency-safe to touch from Swift 6).
enum StandardError {
    static func print(_ text: String) {
        var text = text
        text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}

public enum ProcessorCount {
    public static var online: Int {
        #if canImport(Glibc) || canImport(Darwin)
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #else
        return 1
        #endif
    }
}
