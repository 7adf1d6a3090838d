import MoECore
import SafeTensors

/// Why a model directory, an input file or an output could not be used: the file (or directory), the tensor
/// when one is involved, and the problem with what was expected and found. `description` also says what to do.
public struct CheckpointError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var tensor: String?
    public var problem: Problem

    public enum Problem: Sendable, Equatable {
        /// The model path is missing or not a directory.
        case notADirectory
        case cannotRead(reason: String)
        case invalidJSON(reason: String)
        /// config.json lacks a required field.
        case missingField(String)
        /// config.json has the field with the wrong JSON type or value kind.
        case wrongFieldType(field: String, expected: String, found: String)
        /// The fields parse but describe an impossible layer (MoEConfig.validate's reason).
        case invalidConfig(reason: String)
        case invalidIndex(reason: String)
        /// The index names a shard file that is not in the directory.
        case missingShard(String)
        case noWeightFiles
        /// No file (or index entry) holds the tensor.
        case missingTensor
        /// The index says `shard` holds the tensor, but that file does not.
        case tensorNotInShard(shard: String)
        /// Two weight files both hold the tensor (and there is no index to choose).
        case duplicateTensor(otherFile: String)
        /// `expected` with its symbolic form (e.g. "[E, 2I, H/32, 16]") and the config it follows from.
        case wrongShape(expected: [Int], symbolic: String, found: [Int])
        case wrongDType(expected: [SafeTensorsDType], found: SafeTensorsDType)
        case layerOutOfRange(layer: Int, layers: Int)
        /// A weight that would make every result NaN: a non-finite bf16 value or an MXFP4 scale of 255.
        case nonFiniteWeight(index: Int, detail: String)
        case nonFiniteInput(row: Int, column: Int, value: Float)
        case noTokens
        /// The file itself is invalid (see the wrapped error).
        case safeTensors(SafeTensorsError)
        case systemCall(call: String, reason: String)
        /// The output directory exists and holds files.
        case directoryNotEmpty
        case invalidArgument(String)
    }

    public init(file: String, tensor: String? = nil, _ problem: Problem) {
        self.file = file
        self.tensor = tensor
        self.problem = problem
    }

    /// Wraps a file-level error, keeping its file and tensor.
    init(_ error: SafeTensorsError) {
        self.init(file: error.file, tensor: error.tensor, .safeTensors(error))
    }

    init(_ error: SystemCallError) {
        self.init(file: error.path, .systemCall(call: error.call, reason: error.reason))
    }

    public var description: String {
        if case .safeTensors(let inner) = problem { return inner.description }
        let subject = tensor.map { "\(file): tensor '\($0)'" } ?? file
        return "\(subject): \(problemDescription)"
    }

    var problemDescription: String {
        switch problem {
        case .notADirectory:
            "not a model directory; pass a directory holding config.json and .safetensors files (`moe init` writes one)"
        case .cannotRead(let reason): "cannot read: \(reason); check the path and its permissions"
        case .invalidJSON(let reason): "not valid JSON (\(reason)); fix or re-export the file"
        case .missingField(let field): "missing required field \"\(field)\"; add it (gpt-oss configs have it)"
        case .wrongFieldType(let field, let expected, let found):
            "field \"\(field)\" must be \(expected), found \(found); fix config.json"
        case .invalidConfig(let reason): "\(reason); fix config.json"
        case .invalidIndex(let reason): "\(reason); fix or regenerate the index"
        case .missingShard(let shard):
            "names shard file '\(shard)', which is not in the directory; copy the missing shard or regenerate the index"
        case .noWeightFiles: "holds no .safetensors files; a model directory needs its weights"
        case .missingTensor:
            "not found in the model's weight files; the checkpoint is incomplete or not in the gpt-oss layout (model.layers.L.mlp.*)"
        case .tensorNotInShard(let shard):
            "the index places it in '\(shard)', but that file does not hold it; regenerate the index or the shard"
        case .duplicateTensor(let other):
            "also held by '\(other)'; remove the stray file or add model.safetensors.index.json to say which one to use"
        case .wrongShape(let expected, let symbolic, let found):
            "shape \(found) does not match config.json: expected \(symbolic) = \(expected); the weights and config.json disagree, check config.json or re-export"
        case .wrongDType(let expected, let found):
            "dtype is \(found), expected \(expected.map(\.rawValue).joined(separator: " or ")); convert the tensor"
        case .layerOutOfRange(let layer, let layers):
            "layer \(layer) is out of range: the model has \(layers) layer\(layers == 1 ? "" : "s") (0...\(layers - 1)); pick a layer in range"
        case .nonFiniteWeight(let index, let detail):
            "element \(index) is \(detail), which makes results NaN; the checkpoint is corrupt, re-export it"
        case .nonFiniteInput(let row, let column, let value):
            "row \(row) holds a non-finite value (\(BF16.nonFiniteReason(value)) at column \(column)); every hidden state must be finite, fix the input"
        case .noTokens: "holds no tokens (T = 0); give at least one row"
        case .safeTensors(let inner): inner.description
        case .systemCall(let call, let reason): "\(call) failed: \(reason)"
        case .directoryNotEmpty: "already exists and is not empty; choose a new directory or remove this one"
        case .invalidArgument(let why): why
        }
    }
}
