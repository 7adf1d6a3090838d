/// Runtime failures of the engine: each names what was wrong and what to do about it.
/// Programmer errors (violated preconditions) trap instead.
public enum MoEError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidConfig(String)
    case shapeMismatch(String)
    case nonFiniteInput(row: Int, column: Int, value: Float)
    case invalidArgument(String)
    case backendUnavailable(backend: String, reason: String)
    case io(String)

    public var description: String {
        switch self {
        case .invalidConfig(let why): "invalid MoE config: \(why)"
        case .shapeMismatch(let why): "shape mismatch: \(why)"
        case .nonFiniteInput(let row, let column, let value):
            "input row \(row) holds a non-finite value (\(BF16.nonFiniteReason(value)) at column \(column)); every hidden state must be finite"
        case .invalidArgument(let why): why
        case .backendUnavailable(let backend, let reason): "backend '\(backend)' is not available here: \(reason)"
        case .io(let why): why
        }
    }
}
