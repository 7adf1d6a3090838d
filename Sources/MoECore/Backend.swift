/// The result of one MoE layer forward pass.
public struct MoEForwardResult: Sendable, Equatable {
    /// [T, H] output hidden states (bf16 values held as float32).
    public var hidden: [Float]
    /// [T, k] expert ids by descending weight.
    public var topkIds: [Int32]
    /// [T, k] routing weights.
    public var topkWeights: [Float]

    public init(hidden: [Float], topkIds: [Int32], topkWeights: [Float]) {
        self.hidden = hidden
        self.topkIds = topkIds
        self.topkWeights = topkWeights
    }
}

/// A loaded MoE layer on some device. Backends are built from `MoELayerWeights` (repacking them as they like)
/// and must compute DESIGN §2's semantics: bf16 activations between stages, fp32 accumulation, and the k-way
/// sum in slot order.
public protocol MoEBackend: AnyObject {
    /// Short name: "cpu", "cuda".
    var name: String { get }
    /// What exactly runs (kernel path, device), for tables and JSON.
    var detail: String { get }
    var config: MoEConfig { get }
    /// input: [T, H] float32 (rounded to bf16 on entry). Throws on shape errors or non-finite input.
    func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult
    /// Whether a pass with a profiler runs slower than one without (CUDA: an instrumented graph whose event nodes cut
    /// the kernels' programmatic overlap, and an extra synchronisation). A server then profiles only sampled passes.
    var profiledPassesAreSlower: Bool { get }
}

extension MoEBackend {
    public var profiledPassesAreSlower: Bool { false }
}

/// Whether a backend can run on this machine, and if not, why (shown by `moe info`).
public struct BackendAvailability: Sendable, Equatable {
    public var name: String
    public var available: Bool
    /// When available: what it will use (device, kernel path). When not: what is missing and where it looked.
    public var reason: String

    public init(name: String, available: Bool, reason: String) {
        self.name = name
        self.available = available
        self.reason = reason
    }
}

/// Input validation shared by every backend.
public enum InputCheck {
    /// Throws `nonFiniteInput` naming the first bad row, or `shapeMismatch`.
    public static func validate(_ input: [Float], tokens: Int, hidden: Int) throws {
        guard tokens >= 1 else { throw MoEError.shapeMismatch("need at least 1 token, got \(tokens)") }
        guard input.count == tokens * hidden else {
            throw MoEError.shapeMismatch(
                "hidden_states holds \(input.count) values; expected T·H = \(tokens)·\(hidden) = \(tokens * hidden)")
        }
        for (index, value) in input.enumerated() where !BF16.isFiniteAfterRounding(value) {
            throw MoEError.nonFiniteInput(row: index / hidden, column: index % hidden, value: value)
        }
    }
}

/// The machine's measured limits, taken in the same run as the engine (DESIGN §5).
public struct HardwareCeilings: Sendable, Codable, Equatable {
    /// Memory bandwidth in GB/s (1e9 bytes/s).
    public var bandwidthGBps: Double
    /// How it was measured (kernel/loop, buffer size, what bytes are counted).
    public var bandwidthMethod: String
    /// Peak arithmetic rate in TFLOP/s for the arithmetic the kernels use.
    public var peakTFLOPs: Double
    public var peakMethod: String

    public init(bandwidthGBps: Double, bandwidthMethod: String, peakTFLOPs: Double, peakMethod: String) {
        self.bandwidthGBps = bandwidthGBps
        self.bandwidthMethod = bandwidthMethod
        self.peakTFLOPs = peakTFLOPs
        self.peakMethod = peakMethod
    }
}

/// What `moe bench` needs from a backend: the device's ceilings and a timing loop in the backend's own
/// clock (host clock on the CPU; device events around graph replays on a GPU).
public protocol MoEBenchmarkable: MoEBackend {
    /// CPU model or GPU name, cores or SMs, driver.
    var machineDescription: String { get }
    func measureCeilings() throws -> HardwareCeilings
    /// Runs the whole layer `warmup` times untimed, then `iterations` times, returning seconds per run.
    /// Input: [T, H] float32. Implementations must not time on zeros and must keep results live.
    func timeForward(_ input: [Float], tokens: Int, routing: RoutingMode, warmup: Int, iterations: Int) throws -> [Double]
}
