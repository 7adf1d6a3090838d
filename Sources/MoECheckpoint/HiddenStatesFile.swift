import MoECore
import SafeTensors

/// The files `moe forward` reads and writes.
///
/// Input: a safetensors file with `hidden_states` [T, H], BF16 or F32 (F32 values are rounded to bf16 by the
/// engine on entry, as every backend does). Output: `hidden_states` [T, H] F32, `topk_ids` [T, k] I32 (by
/// descending weight), `topk_weights` [T, k] F32.
public enum HiddenStatesFile {
    public static let hiddenStates = "hidden_states"
    public static let topkIds = "topk_ids"
    public static let topkWeights = "topk_weights"

    /// Reads and validates the input: the tensor is present, BF16 or F32, 2-D [T, H] with T ≥ 1 and H the model's,
    /// and finite (the first row holding a NaN or ±∞ is named). Returns the values [T, H] and T.
    public static func readInput(_ path: String, hidden: Int) throws(CheckpointError) -> (values: [Float], tokens: Int) {
        let file: SafeTensorsFile
        let info: TensorInfo
        do {
            file = try SafeTensorsFile(path: path)
            info = try file.info(hiddenStates)
        } catch {
            if error.problem == .tensorNotFound {
                throw CheckpointError(file: path, tensor: hiddenStates, .missingTensor)
            }
            throw CheckpointError(error)
        }
        guard info.dtype == .bf16 || info.dtype == .f32 else {
            throw CheckpointError(file: path, tensor: hiddenStates, .wrongDType(expected: [.bf16, .f32], found: info.dtype))
        }
        guard info.shape.count == 2, info.shape[1] == hidden else {
            let tokens = info.shape.count == 2 ? info.shape[0] : 1
            throw CheckpointError(
                file: path, tensor: hiddenStates,
                .wrongShape(expected: [tokens, hidden], symbolic: "[T, H] with H=\(hidden) (the model's hidden_size)", found: info.shape))
        }
        let tokens = info.shape[0]
        guard tokens >= 1 else { throw CheckpointError(file: path, tensor: hiddenStates, .noTokens) }
        let values: [Float]
        do {
            values = try file.floats(hiddenStates)
        } catch {
            throw CheckpointError(error)
        }
        if let bad = values.firstIndex(where: { !BF16.isFiniteAfterRounding($0) }) {
            throw CheckpointError(
                file: path, tensor: hiddenStates, .nonFiniteInput(row: bad / hidden, column: bad % hidden, value: values[bad]))
        }
        return (values, tokens)
    }

    /// Writes an input file: `hidden_states` [T, H] as BF16 (default) or F32.
    public static func writeInput(
        _ path: String, values: [Float], tokens: Int, hidden: Int, dtype: SafeTensorsDType = .bf16
    ) throws(CheckpointError) {
        guard values.count == tokens * hidden else {
            throw CheckpointError(file: path, tensor: hiddenStates, .invalidArgument("\(values.count) values for [T, H] = [\(tokens), \(hidden)]"))
        }
        var writer = SafeTensorsWriter()
        do {
            try writer.add(hiddenStates, floats: values, shape: [tokens, hidden], dtype: dtype)
            try writer.write(to: path)
        } catch {
            throw CheckpointError(error)
        }
    }

    /// Writes a forward result (atomically). `metadata` records provenance (model, layer, routing, backend).
    public static func writeOutput(
        _ path: String, result: MoEForwardResult, tokens: Int, config: MoEConfig, metadata: [String: String] = [:]
    ) throws(CheckpointError) {
        let (H, k) = (config.hidden, config.topK)
        guard result.hidden.count == tokens * H, result.topkIds.count == tokens * k, result.topkWeights.count == tokens * k else {
            throw CheckpointError(
                file: path,
                .invalidArgument("the backend returned \(result.hidden.count)/\(result.topkIds.count)/\(result.topkWeights.count) values for T=\(tokens), H=\(H), k=\(k)"))
        }
        var writer = SafeTensorsWriter(metadata: metadata)
        do {
            try writer.add(hiddenStates, floats: result.hidden, shape: [tokens, H])
            try writer.add(topkIds, int32s: result.topkIds, shape: [tokens, k])
            try writer.add(topkWeights, floats: result.topkWeights, shape: [tokens, k])
            try writer.write(to: path)
        } catch {
            throw CheckpointError(error)
        }
    }

    /// Reads an output file back (for tests and tools): hidden [T, H], ids [T, k], weights [T, k].
    public static func readOutput(_ path: String) throws(CheckpointError) -> MoEForwardResult {
        do {
            let file = try SafeTensorsFile(path: path)
            return MoEForwardResult(
                hidden: try file.floats(hiddenStates), topkIds: try file.int32s(topkIds), topkWeights: try file.floats(topkWeights))
        } catch {
            throw CheckpointError(error)
        }
    }
}
