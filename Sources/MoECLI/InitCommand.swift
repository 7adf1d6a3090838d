import ArgumentParser
import MoECheckpoint
import MoECore

/// `moe init`: a synthetic model directory in the Hugging Face gpt-oss layout, so everything runs with no
/// download. The work is `ModelWriter.writeSynthetic` (MoECheckpoint).
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a synthetic model directory in the Hugging Face gpt-oss layout.",
        discussion: "config.json plus .safetensors with MXFP4 experts (u8 blocks and scales) and bf16 router and biases, sharded with model.safetensors.index.json when --shards > 1. The same preset, layers, seed and shards always give byte-identical files. The directory is written under a temporary name and renamed into place; it must not exist or be empty.")

    @Option(help: "Shape: \(MoEPreset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: MoEPreset

    @Option(help: "The model directory to create.")
    var out: String

    @Option(help: "Number of layers (the real gpt-oss-20b has 24, gpt-oss-120b 36; each 120b layer is about 1.7 GB).")
    var layers: Int = 1

    @Option(help: "Seed of the synthetic weights.")
    var seed: UInt64 = 1

    @Option(help: "Number of .safetensors files to split the tensors into (1 gives model.safetensors and no index).")
    var shards: Int = 1

    func validate() throws {
        if layers < 1 { throw ValidationError("--layers must be ≥ 1") }
        if shards < 1 { throw ValidationError("--shards must be ≥ 1") }
        if shards > 8 * layers { throw ValidationError("--shards must be ≤ 8 × --layers (8 tensors per layer)") }
    }

    func run() throws {
        var config = preset.config
        config.layers = layers
        try ModelWriter.writeSynthetic(config: config, seed: seed, to: out, shards: shards)
        let bytes = ModelWriter.weightBytes(config)
        print("wrote \(out): \(preset.rawValue) \(config), \(layers) layer\(layers == 1 ? "" : "s"), seed \(seed), \(shards) file\(shards == 1 ? "" : "s"), \(bytes) weight bytes")
    }
}
