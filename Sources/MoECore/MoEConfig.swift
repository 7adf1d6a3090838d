/// The shape and hyper-parameters of one gpt-oss-style MoE block (DESIGN §2).
///
/// Letters used throughout the code: T tokens, H hidden, I expert intermediate, E experts, k experts per token.
public struct MoEConfig: Sendable, Hashable, Codable, CustomStringConvertible {
    /// H: model width. A multiple of 32 (one MXFP4 block).
    public var hidden: Int
    /// I: expert intermediate width. A multiple of 32 (one MXFP4 block).
    public var intermediate: Int
    /// E: experts in the layer.
    public var experts: Int
    /// k: experts per token, 1 ≤ k ≤ E.
    public var topK: Int
    /// Clamp of the SwiGLU inputs (`swiglu_limit` in config.json). Double so the float64 reference uses the
    /// exact value; fp32 kernels use `Float(swigluLimit)`.
    public var swigluLimit: Double
    /// The SwiGLU sigmoid slope (1.702 in gpt-oss).
    public var swigluAlpha: Double
    /// Number of layers in a model directory.
    public var layers: Int

    public init(
        hidden: Int, intermediate: Int, experts: Int, topK: Int,
        swigluLimit: Double = 7.0, swigluAlpha: Double = 1.702, layers: Int = 1
    ) {
        self.hidden = hidden
        self.intermediate = intermediate
        self.experts = experts
        self.topK = topK
        self.swigluLimit = swigluLimit
        self.swigluAlpha = swigluAlpha
        self.layers = layers
    }

    /// Checks the invariants every kernel relies on; throws a message naming the bad field.
    public func validate() throws {
        func bad(_ why: String) -> MoEError { .invalidConfig(why) }
        guard hidden > 0, hidden % MXFP4.blockSize == 0 else {
            throw bad("hidden_size \(hidden) must be a positive multiple of \(MXFP4.blockSize) (the MXFP4 block)")
        }
        guard intermediate > 0, intermediate % MXFP4.blockSize == 0 else {
            throw bad("intermediate_size \(intermediate) must be a positive multiple of \(MXFP4.blockSize) (the MXFP4 block)")
        }
        guard experts > 0, experts <= 65_536 else { throw bad("num_local_experts \(experts) must be in 1...65536") }
        guard topK >= 1, topK <= experts else {
            throw bad("num_experts_per_tok \(topK) must be in 1...num_local_experts (\(experts))")
        }
        guard swigluLimit.isFinite, swigluLimit > 0 else { throw bad("swiglu_limit \(swigluLimit) must be finite and > 0") }
        guard swigluAlpha.isFinite else { throw bad("swiglu alpha must be finite") }
        guard layers >= 1 else { throw bad("num_hidden_layers \(layers) must be ≥ 1") }
    }

    public var description: String {
        "E=\(experts) k=\(topK) H=\(hidden) I=\(intermediate) limit=\(swigluLimit)"
    }

    // MARK: sizes

    /// Bytes of one expert's MXFP4 gate/up weights (blocks + scales): 2I rows of H/32 blocks of 17 bytes.
    public var gateUpBytesPerExpert: Int { 2 * intermediate * (hidden / MXFP4.blockSize) * 17 }
    /// Bytes of one expert's MXFP4 down weights: H rows of I/32 blocks of 17 bytes.
    public var downBytesPerExpert: Int { hidden * (intermediate / MXFP4.blockSize) * 17 }
    /// Bytes of one expert's biases (bf16).
    public var biasBytesPerExpert: Int { (2 * intermediate + hidden) * 2 }
}

/// Built-in shapes. gpt-oss-20b and gpt-oss-120b are the real models' MoE shapes.
public enum MoEPreset: String, CaseIterable, Sendable, Codable {
    case tiny
    case gptOss20b = "gpt-oss-20b"
    case gptOss120b = "gpt-oss-120b"

    public var config: MoEConfig {
        switch self {
        case .tiny: MoEConfig(hidden: 128, intermediate: 96, experts: 8, topK: 4, layers: 2)
        case .gptOss20b: MoEConfig(hidden: 2880, intermediate: 2880, experts: 32, topK: 4, layers: 24)
        case .gptOss120b: MoEConfig(hidden: 2880, intermediate: 2880, experts: 128, topK: 4, layers: 36)
        }
    }
}
