import MoECore
import SafeTensors
import Testing
@testable import MoECheckpoint

@Suite struct ModelRoundTripTests {
    let directory = TemporaryDirectory()

    /// The writer's model, loaded back, gives identical weights for every layer, for one file and for shards.
    @Test(arguments: [1, 3, 16])
    func writtenModelLoadsBackIdentical(shards: Int) throws {
        defer { directory.remove() }
        let layers = try (0..<smallConfig.layers).map { try SyntheticModel.layer(config: smallConfig, seed: 11, layer: $0) }
        let path = directory.file("model")
        try ModelWriter.write(layers: layers, to: path, shards: shards)

        let model = try ModelDirectory(path: path)
        #expect(model.config == smallConfig)
        #expect(model.hasIndex == (shards > 1))
        #expect(model.weightFiles == ModelWriter.shardNames(shards))
        for l in 0..<smallConfig.layers {
            #expect(try model.layer(l) == layers[l], "layer \(l)")
        }
        #expect(layers[0] != layers[1], "layers differ, so a layer mix-up would show")
        let expectedFiles = ["config.json"] + ModelWriter.shardNames(shards) + (shards > 1 ? [ModelDirectory.indexName] : [])
        #expect(try FileSystem.listDirectory(path) == expectedFiles.sorted())
    }

    /// The layout is exactly gpt-oss's: names, dtypes and shapes; bf16 router and biases.
    @Test func layoutMatchesGptOss() throws {
        defer { directory.remove() }
        let path = directory.file("model")
        try ModelWriter.writeSynthetic(config: smallConfig, seed: 3, to: path)
        let file = try SafeTensorsFile(path: path + "/model.safetensors")
        let (E, H, I) = (4, 64, 32)
        let expected: [String: (SafeTensorsDType, [Int])] = [
            "router.weight": (.bf16, [E, H]), "router.bias": (.bf16, [E]),
            "experts.gate_up_proj_blocks": (.u8, [E, 2 * I, H / 32, 16]), "experts.gate_up_proj_scales": (.u8, [E, 2 * I, H / 32]),
            "experts.gate_up_proj_bias": (.bf16, [E, 2 * I]), "experts.down_proj_blocks": (.u8, [E, H, I / 32, 16]),
            "experts.down_proj_scales": (.u8, [E, H, I / 32]), "experts.down_proj_bias": (.bf16, [E, H]),
        ]
        #expect(file.tensors.count == 16)
        for l in 0..<2 {
            for (suffix, (dtype, shape)) in expected {
                let info = try file.info("model.layers.\(l).mlp.\(suffix)")
                #expect(info.dtype == dtype && info.shape == shape, "\(suffix)")
            }
        }
        let config = try JSONValue.parse(FileSystem.readFile(path + "/config.json")).objectValue!
        #expect(config["hidden_size"]?.intValue == 64)
        #expect(config["num_local_experts"]?.intValue == 4)
        #expect(config["swiglu_limit"]?.doubleValue == 7)
        #expect(config["model_type"]?.stringValue == "gpt_oss")
    }

    /// `moe init` is deterministic: the same seed gives byte-identical files, another seed different weights.
    @Test func syntheticModelsAreDeterministicPerSeed() throws {
        defer { directory.remove() }
        for name in ["a", "b"] { try ModelWriter.writeSynthetic(config: smallConfig, seed: 5, to: directory.file(name), shards: 2) }
        try ModelWriter.writeSynthetic(config: smallConfig, seed: 6, to: directory.file("c"), shards: 2)
        for file in try FileSystem.listDirectory(directory.file("a")) {
            #expect(try FileSystem.readFile(directory.file("a/" + file)) == FileSystem.readFile(directory.file("b/" + file)), "\(file)")
        }
        #expect(try ModelDirectory(path: directory.file("a")).layer(1) != ModelDirectory(path: directory.file("c")).layer(1))
    }

    /// config.json round-trips every field, including a non-default limit and alpha; integer limits are numbers too.
    @Test func configRoundTrips() throws {
        let config = MoEConfig(hidden: 96, intermediate: 64, experts: 5, topK: 3, swigluLimit: 6.5, swigluAlpha: 1.5, layers: 3)
        #expect(try ConfigFile.parse(Array(ConfigFile.serialized(config).utf8), path: "c") == config)
        #expect(!ConfigFile.serialized(smallConfig).contains("swiglu_alpha"))
        let text = #"{"hidden_size": 64, "intermediate_size": 32, "num_local_experts": 4, "num_experts_per_tok": 2, "swiglu_limit": 7, "num_hidden_layers": 2, "rope_scaling": {"factor": 32.0}}"#
        #expect(try ConfigFile.parse(Array(text.utf8), path: "c") == smallConfig)
    }

    /// Shards split tensors in layer order into non-empty groups of similar size.
    @Test func shardRangesCoverEverythingInOrder() {
        for (counts, shards) in [([5, 1, 1, 1], 2), ([1, 1, 1, 100], 4), ([3, 3, 3, 3, 3, 3], 3), ([7], 1), ([1, 100, 1, 1], 3)] {
            let ranges = ModelWriter.shardRanges(byteCounts: counts, shards: shards)
            #expect(ranges.count == shards)
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == counts.count)
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            #expect(ranges.allSatisfy { !$0.isEmpty }, "\(counts) / \(shards): \(ranges)")
        }
        #expect(ModelWriter.shardRanges(byteCounts: [3, 3, 3, 3, 3, 3], shards: 3) == [0..<2, 2..<4, 4..<6])
    }

    /// Directories from other tools: no index and one `model.safetensors`, or no index and several files.
    @Test func loadsDirectoriesWithoutAnIndex() throws {
        defer { directory.remove() }
        let path = directory.file("model")
        try ModelWriter.writeSynthetic(config: smallConfig, seed: 9, to: path, shards: 2)
        let reference = try ModelDirectory(path: path)
        try FileSystem.removeFile(path + "/" + ModelDirectory.indexName)
        let unindexed = try ModelDirectory(path: path)
        #expect(!unindexed.hasIndex)
        #expect(unindexed.weightFiles.count == 2)
        #expect(try unindexed.layer(0) == reference.layer(0))
        #expect(try unindexed.layer(1) == reference.layer(1))
    }

    /// An F32 router (as some exporters write) loads, rounded to the engine's bf16.
    @Test func acceptsF32RouterAndBiases() throws {
        defer { directory.remove() }
        let path = directory.file("model")
        try ModelWriter.writeSynthetic(config: smallConfig, seed: 2, to: path)
        let original = try ModelDirectory(path: path).layer(0)
        try rewrite(path + "/model.safetensors") { info, bytes in
            guard info.name == "model.layers.0.mlp.router.weight" else { return (info.dtype, info.shape, bytes) }
            // bf16 → f32 (the same values), plus a small offset below bf16 resolution that rounding removes.
            var f32: [UInt8] = []
            for i in stride(from: 0, to: bytes.count, by: 2) {
                let bits = (UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8) << 16 | (i % 4 == 0 ? 0x0100 : 0)
                f32 += [UInt8(bits & 0xFF), UInt8(bits >> 8 & 0xFF), UInt8(bits >> 16 & 0xFF), UInt8(bits >> 24)]
            }
            return (.f32, info.shape, f32)
        }
        #expect(try SafeTensorsFile(path: path + "/model.safetensors").info("model.layers.0.mlp.router.weight").dtype == .f32)
        #expect(try ModelDirectory(path: path).layer(0) == original)
    }
}
