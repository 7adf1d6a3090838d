import CCUDA
import MoECore

/// Kernel parameters carrying a MoETrace (routing, GEMM, reduce).
protocol KernelTraced { var trace: MoETrace { get set } }
extension MoERoutingParams: KernelTraced {}
extension MoEGemmParams: KernelTraced {}
extension MoEReduceParams: KernelTraced {}

/// Names the symmetric layer's launches in launch order and gives each its pair of u64 in a trace buffer (KernelTrace):
/// the kernels of a MOE_TRACE build mark their spans there; with no buffer (spans 0) they mark nothing.
struct SymmetricLaunchTrace {
    let spans: UInt64
    private(set) var names: [String] = []

    init(spans: UInt64 = 0) { self.spans = spans }

    private mutating func slot(_ name: String) -> Int32 {
        names.append(name)
        return Int32(names.count - 1)
    }

    /// The expert-parallel parameters keep every field 8 bytes wide: their slot is two fields.
    mutating func mark(_ p: CUDAExpertParallelParams, _ name: String) -> CUDAExpertParallelParams {
        var q = p
        q.traceSpans = spans
        q.tracePhase = Int64(slot(name))
        return q
    }

    mutating func mark<P: KernelTraced>(_ p: P, _ name: String) -> P {
        var q = p
        q.trace = MoETrace(spans: spans, phase: slot(name), marks: -1)
        return q
    }
}

extension CUDAExpertParallelLayer {
    /// `MOE_CUDA_EP_TRACE=1`: the layer's kernels are the MOE_TRACE build (each launch marks its span when given a
    /// trace buffer), so `symmetricTrace` can show where each kernel runs inside the graph. Read when a layer is made.
    public static let tracing = currentEnvironment("MOE_CUDA_EP_TRACE") == "1"

    /// The trace buffer's launches: more than one symmetric layer makes (18 at most: the separate router and top-k,
    /// and the three-kernel plan, across nodes).
    static let maxTracedLaunches = 32

    /// Replays a trace takes its medians over.
    public static let traceReplays = 20

    /// Where each kernel of the symmetric layer runs inside replays of its graph, programmatic overlap and barrier waits
    /// included: per launch, the median over `replays` of its earliest block start and latest warp end, µs from each
    /// replay's first block start. Needs the MOE_TRACE build (`MOE_CUDA_EP_TRACE=1` when the layer was made). Every rank
    /// must call it with the same tokens and replays (the graph's barriers pair the ranks' replays).
    /// - Parameter input: [T_r, H] this rank's rows (T_r from `share`).
    public func symmetricTrace(_ input: [Float], tokens: Int, mode: RoutingMode, replays: Int = traceReplays) throws -> [KernelSpan] {
        guard Self.tracing else {
            throw CUDAError.invalidArgument(
                "a trace of the symmetric layer needs the kernels' MOE_TRACE build: set MOE_CUDA_EP_TRACE=1 before the layer is made")
        }
        guard replays >= 1 else { throw CUDAError.invalidArgument("a trace needs ≥ 1 replay (got \(replays))") }
        try runtime.device.makeCurrent()
        try requireMappedPeers("the symmetric path", nodeOnly: true)
        let b = try bucket(tokens: tokens)
        try upload(input, bucket: b, poison: false)
        let buffer = try DeviceBuffer(device: runtime.device, byteCount: KernelTrace.bufferBytes(phases: Self.maxTracedLaunches))
        let (exec, names) = try captureSymmetric(b, mode: mode, traceSpans: buffer.address)
        guard names.count <= Self.maxTracedLaunches else {
            throw CUDAError.invalidArgument("the symmetric layer made \(names.count) launches; the trace holds \(Self.maxTracedLaunches)")
        }
        let raw = try KernelTrace.record(phases: names.count, replays: replays, buffer: buffer, stream: stream) {
            try exec.launch(stream)
            try waitForDevice(watchingRail: true)
        }
        try checkDevice()
        return KernelTrace.spans(names: names, replays: raw)
    }
}
