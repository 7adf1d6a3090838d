import MoECore
import SafeTensors

/// `config.json` of a Hugging Face gpt-oss model directory ⇄ `MoEConfig`.
///
/// Read: `hidden_size`, `intermediate_size`, `num_local_experts`, `num_experts_per_tok`, `num_hidden_layers`
/// (integers), `swiglu_limit` (a number), and optionally `swiglu_alpha` (not in gpt-oss configs, where it is fixed
/// at 1.702). Every other field is ignored.
public enum ConfigFile {
    public static let name = "config.json"

    /// Reads and validates `directory/config.json`.
    public static func read(directory: String) throws(CheckpointError) -> MoEConfig {
        let path = directory + "/" + name
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(path)
        } catch {
            throw CheckpointError(file: path, .cannotRead(reason: error.reason))
        }
        return try parse(bytes, path: path)
    }

    /// Parses config.json text; `path` is for error messages.
    public static func parse(_ bytes: [UInt8], path: String) throws(CheckpointError) -> MoEConfig {
        let root: JSONValue
        do {
            root = try JSONValue.parse(bytes)
        } catch {
            throw CheckpointError(file: path, .invalidJSON(reason: error.description))
        }
        guard let object = root.objectValue else {
            throw CheckpointError(file: path, .invalidJSON(reason: "the top level is a \(root.kindName), not an object"))
        }
        func field(_ key: String) throws(CheckpointError) -> JSONValue {
            guard let value = object[key] else { throw CheckpointError(file: path, .missingField(key)) }
            return value
        }
        func integer(_ key: String) throws(CheckpointError) -> Int {
            let value = try field(key)
            guard let int = value.intValue else {
                let found = value.doubleValue != nil ? "the non-integer \(value.serialized())" : "a \(value.kindName) (\(value.serialized()))"
                throw CheckpointError(file: path, .wrongFieldType(field: key, expected: "an integer", found: found))
            }
            return int
        }
        func number(_ value: JSONValue, _ key: String) throws(CheckpointError) -> Double {
            guard let double = value.doubleValue else {
                throw CheckpointError(
                    file: path, .wrongFieldType(field: key, expected: "a number", found: "a \(value.kindName) (\(value.serialized()))"))
            }
            return double
        }
        var config = MoEConfig(
            hidden: try integer("hidden_size"),
            intermediate: try integer("intermediate_size"),
            experts: try integer("num_local_experts"),
            topK: try integer("num_experts_per_tok"),
            swigluLimit: try number(try field("swiglu_limit"), "swiglu_limit"),
            layers: try integer("num_hidden_layers"))
        if let alpha = object["swiglu_alpha"] { config.swigluAlpha = try number(alpha, "swiglu_alpha") }
        do {
            try config.validate()
        } catch {
            throw CheckpointError(file: path, .invalidConfig(reason: "\(error)"))
        }
        return config
    }

    /// config.json text for `config`, in the gpt-oss layout (plus `swiglu_alpha` when it is not gpt-oss's 1.702).
    public static func serialized(_ config: MoEConfig) -> String {
        var object = JSONObject([
            ("architectures", .array([.string("GptOssForCausalLM")])),
            ("model_type", .string("gpt_oss")),
            ("hidden_size", .number(JSONNumber(config.hidden))),
            ("intermediate_size", .number(JSONNumber(config.intermediate))),
            ("num_local_experts", .number(JSONNumber(config.experts))),
            ("num_experts_per_tok", .number(JSONNumber(config.topK))),
            ("swiglu_limit", .number(JSONNumber(text: config.swigluLimit.description))),
            ("num_hidden_layers", .number(JSONNumber(config.layers))),
            ("torch_dtype", .string("bfloat16")),
        ])
        if config.swigluAlpha != MoEConfig(hidden: 32, intermediate: 32, experts: 1, topK: 1).swigluAlpha {
            object["swiglu_alpha"] = .number(JSONNumber(text: config.swigluAlpha.description))
        }
        return JSONValue.object(object).serialized(indent: 2) + "\n"
    }
}
