import MoECore
import SafeTensors

/// Writes model directories in exactly the layout `ModelDirectory` reads (DESIGN §2): `config.json`, the
/// gpt-oss MoE tensors of every layer (MXFP4 experts as u8 blocks and scales, bf16 router and biases), split
/// into one file (`model.safetensors`) or N shards (`model-0000i-of-0000N.safetensors` plus
/// `model.safetensors.index.json`).
///
/// Layers are produced one at a time and streamed to disk, so a model larger than memory can be written.
/// The whole directory is built under a temporary name and renamed into place at the end: `directory`
/// appears complete or not at all.
public enum ModelWriter {
    /// Writes layers 0..<config.layers, asking `layer(L)` for each in order. `directory` must not exist or be
    /// empty. Tensors are split into `shards` files of similar size, in layer order
    /// (1 ≤ shards ≤ 8 × layers; a layer may span two shards).
    public static func write(
        config: MoEConfig, to directory: String, shards: Int = 1, layer makeLayer: (Int) throws -> MoELayerWeights
    ) throws {
        do {
            try config.validate()
        } catch {
            throw CheckpointError(file: directory, .invalidConfig(reason: "\(error)"))
        }
        let tensors = (0..<config.layers).flatMap { l in GptOssTensor.allCases.map { (layer: l, tensor: $0) } }
        guard shards >= 1, shards <= tensors.count else {
            throw CheckpointError(
                file: directory,
                .invalidArgument("--shards \(shards) must be in 1...\(tensors.count) (8 tensors per layer × \(config.layers) layers)"))
        }
        try checkDestination(directory)

        let temporary = FileSystem.temporarySibling(of: directory)
        do {
            try FileSystem.makeDirectory(temporary)
        } catch {
            throw CheckpointError(error)
        }
        var committed = false
        defer { if !committed { try? FileSystem.removeFlatDirectory(temporary) } }

        let byteCounts = tensors.map { entry in
            TensorSpec(name: "", dtype: entry.tensor.storedDType, shape: entry.tensor.shape(config).shape).byteCount!
        }
        let groups = shardRanges(byteCounts: byteCounts, shards: shards)
        let names = shardNames(shards)
        var weightMap: [(String, JSONValue)] = []
        var current: (index: Int, weights: MoELayerWeights)?
        for (group, range) in groups.enumerated() {
            let specs = range.map { i in
                TensorSpec(
                    name: tensors[i].tensor.name(layer: tensors[i].layer), dtype: tensors[i].tensor.storedDType,
                    shape: tensors[i].tensor.shape(config).shape)
            }
            let path = temporary + "/" + names[group]
            let writer: SafeTensorsStreamWriter
            do {
                writer = try SafeTensorsStreamWriter(path: path, tensors: specs, metadata: ["format": "pt"])
            } catch {
                throw CheckpointError(error)
            }
            for (i, spec) in zip(range, specs) {
                let l = tensors[i].layer
                if current?.index != l {
                    current = nil  // release the previous layer before making the next
                    let weights = try makeLayer(l)
                    try checkLayer(weights, matches: config, layer: l, directory: directory)
                    current = (l, weights)
                }
                do {
                    try append(tensors[i].tensor, of: current!.weights, as: spec.name, to: writer)
                } catch {
                    throw CheckpointError(error)
                }
                weightMap.append((spec.name, .string(names[group])))
            }
            do {
                try writer.finish()
            } catch {
                throw CheckpointError(error)
            }
        }

        do {
            try FileSystem.writeFileAtomically(temporary + "/" + ConfigFile.name, bytes: Array(ConfigFile.serialized(config).utf8))
            if shards > 1 {
                let index = JSONValue.object(JSONObject([
                    ("metadata", .object(JSONObject([("total_size", .number(JSONNumber(byteCounts.reduce(0, +))))]))),
                    ("weight_map", .object(JSONObject(weightMap))),
                ]))
                try FileSystem.writeFileAtomically(
                    temporary + "/" + ModelDirectory.indexName, bytes: Array((index.serialized(indent: 2) + "\n").utf8))
            }
            try checkDestination(directory)
            if FileSystem.kind(of: directory) == .directory { try FileSystem.removeEmptyDirectory(directory) }
            try FileSystem.rename(temporary, to: directory)
        } catch let error as SystemCallError {
            throw CheckpointError(error)
        }
        committed = true
    }

    /// Writes `layers` (layer L = layers[L]); config.json gets `num_hidden_layers = layers.count`.
    public static func write(layers: [MoELayerWeights], to directory: String, shards: Int = 1) throws {
        guard var config = layers.first?.config else {
            throw CheckpointError(file: directory, .invalidArgument("no layers to write"))
        }
        config.layers = layers.count
        try write(config: config, to: directory, shards: shards) { layers[$0] }
    }

    /// A synthetic model (`SyntheticModel.layer(config:seed:layer:)` for every layer): the same config, seed and
    /// shard count always give byte-identical files. Used by `moe init`.
    public static func writeSynthetic(config: MoEConfig, seed: UInt64, to directory: String, shards: Int = 1) throws {
        try write(config: config, to: directory, shards: shards) { l in
            try SyntheticModel.layer(config: config, seed: seed, layer: l)
        }
    }

    /// Bytes of all tensors of all layers of `config` as stored (MXFP4 experts, bf16 router and biases).
    public static func weightBytes(_ config: MoEConfig) -> Int {
        config.layers * GptOssTensor.allCases.reduce(0) { total, tensor in
            total + TensorSpec(name: "", dtype: tensor.storedDType, shape: tensor.shape(config).shape).byteCount!
        }
    }

    /// "model.safetensors" for one file; "model-00001-of-00003.safetensors", ... for shards.
    public static func shardNames(_ shards: Int) -> [String] {
        if shards == 1 { return [ModelDirectory.singleFileName] }
        func five(_ n: Int) -> String { let s = String(n); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
        return (1...shards).map { "model-\(five($0))-of-\(five(shards)).safetensors" }
    }

    /// Splits tensors (in order) into `shards` contiguous, non-empty groups of roughly equal bytes: group g ends
    /// at the first tensor whose running total reaches (g+1)/shards of the whole.
    static func shardRanges(byteCounts: [Int], shards: Int) -> [Range<Int>] {
        precondition(shards >= 1 && shards <= byteCounts.count)
        let total = byteCounts.reduce(0, +)
        var ranges: [Range<Int>] = []
        var start = 0, running = 0, end = 0
        for g in 0..<shards {
            let remainingGroups = shards - g - 1
            if remainingGroups == 0 {
                end = byteCounts.count
            } else {
                let target = Int((Double(total) * Double(g + 1) / Double(shards)).rounded(.up))
                end = start + 1
                running += byteCounts[start]
                while end < byteCounts.count - remainingGroups && running < target {
                    running += byteCounts[end]
                    end += 1
                }
            }
            ranges.append(start..<end)
            start = end
        }
        return ranges
    }

    static func checkDestination(_ directory: String) throws(CheckpointError) {
        switch FileSystem.kind(of: directory) {
        case .missing: return
        case .directory:
            let entries: [String]
            do {
                entries = try FileSystem.listDirectory(directory)
            } catch {
                throw CheckpointError(error)
            }
            if !entries.isEmpty { throw CheckpointError(file: directory, .directoryNotEmpty) }
        case .file, .other:
            throw CheckpointError(file: directory, .invalidArgument("exists and is not a directory; choose a new path"))
        }
    }

    static func checkLayer(_ weights: MoELayerWeights, matches config: MoEConfig, layer: Int, directory: String) throws(CheckpointError) {
        var expected = config, found = weights.config
        expected.layers = 1
        found.layers = 1
        guard expected == found else {
            throw CheckpointError(
                file: directory, .invalidArgument("layer \(layer) has config \(weights.config), but the model's is \(config)"))
        }
    }

    /// Streams one tensor: MXFP4 parts as their bytes, the rest as bf16 little-endian.
    static func append(
        _ tensor: GptOssTensor, of weights: MoELayerWeights, as name: String, to writer: SafeTensorsStreamWriter
    ) throws(SafeTensorsError) {
        switch tensor {
        case .gateUpBlocks: try writer.append(name, bytes: weights.gateUp.blocks)
        case .gateUpScales: try writer.append(name, bytes: weights.gateUp.scales)
        case .downBlocks: try writer.append(name, bytes: weights.down.blocks)
        case .downScales: try writer.append(name, bytes: weights.down.scales)
        case .routerWeight: try writer.append(name, bytes: bf16Bytes(weights.routerWeight))
        case .routerBias: try writer.append(name, bytes: bf16Bytes(weights.routerBias))
        case .gateUpBias: try writer.append(name, bytes: bf16Bytes(weights.gateUpBias))
        case .downBias: try writer.append(name, bytes: bf16Bytes(weights.downBias))
        }
    }

    static func bf16Bytes(_ values: [Float]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: values.count * 2)
        for (i, value) in values.enumerated() {
            let bits = BF16.bits(value)
            bytes[2 * i] = UInt8(truncatingIfNeeded: bits)
            bytes[2 * i + 1] = UInt8(truncatingIfNeeded: bits >> 8)
        }
        return bytes
    }
}
