import MoECore
import SafeTensors

/// The gpt-oss MoE tensors of one layer in a Hugging Face checkpoint (DESIGN §2), under `model.layers.L.mlp.`.
public enum GptOssTensor: String, CaseIterable, Sendable {
    /// Wr: [E, H] bf16
    case routerWeight = "router.weight"
    /// br: [E] bf16
    case routerBias = "router.bias"
    /// W1 codes: [E, 2I, H/32, 16] u8
    case gateUpBlocks = "experts.gate_up_proj_blocks"
    /// W1 scales: [E, 2I, H/32] u8
    case gateUpScales = "experts.gate_up_proj_scales"
    /// b1: [E, 2I] bf16
    case gateUpBias = "experts.gate_up_proj_bias"
    /// W2 codes: [E, H, I/32, 16] u8
    case downBlocks = "experts.down_proj_blocks"
    /// W2 scales: [E, H, I/32] u8
    case downScales = "experts.down_proj_scales"
    /// b2: [E, H] bf16
    case downBias = "experts.down_proj_bias"

    /// The full tensor name for layer `layer`.
    public func name(layer: Int) -> String { "model.layers.\(layer).mlp.\(rawValue)" }

    /// True for the MXFP4 parts (u8); the others are bf16 values.
    public var isMXFP4: Bool {
        switch self {
        case .gateUpBlocks, .gateUpScales, .downBlocks, .downScales: true
        default: false
        }
    }

    /// The dtype the writer uses.
    public var storedDType: SafeTensorsDType { isMXFP4 ? .u8 : .bf16 }

    /// The dtypes the loader accepts: u8 for MXFP4; BF16, or F32 (rounded to bf16 on load, since the engine
    /// keeps router and biases in bf16 as gpt-oss does) for the others.
    public var acceptedDTypes: [SafeTensorsDType] { isMXFP4 ? [.u8] : [.bf16, .f32] }

    /// The shape `config` implies, with its symbolic form for error messages.
    public func shape(_ config: MoEConfig) -> (shape: [Int], symbolic: String) {
        let (E, H, I) = (config.experts, config.hidden, config.intermediate)
        let b = MXFP4.blockSize, bytes = MXFP4.bytesPerBlock
        let (shape, symbolic): ([Int], String) = switch self {
        case .routerWeight: ([E, H], "[E, H]")
        case .routerBias: ([E], "[E]")
        case .gateUpBlocks: ([E, 2 * I, H / b, bytes], "[E, 2I, H/32, 16]")
        case .gateUpScales: ([E, 2 * I, H / b], "[E, 2I, H/32]")
        case .gateUpBias: ([E, 2 * I], "[E, 2I]")
        case .downBlocks: ([E, H, I / b, bytes], "[E, H, I/32, 16]")
        case .downScales: ([E, H, I / b], "[E, H, I/32]")
        case .downBias: ([E, H], "[E, H]")
        }
        return (shape, "\(symbolic) with E=\(E) H=\(H) I=\(I)")
    }
}
