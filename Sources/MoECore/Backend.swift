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
        for (index, value) in input.enumerated() where !value.isFinite {
            throw MoEError.nonFiniteInput(row: index / hidden, column: index % hidden, value: value)
        }
    }
}
