import MoECore
import SafeTensors
import Testing
@testable import MoECheckpoint

/// A bad model directory per validation rule; each checks the error names the right file, tensor and problem.
@Suite struct CheckpointErrorTests {
    let directory = TemporaryDirectory()
    var model: String { directory.file("model") }
    var routerWeight: String { "model.layers.1.mlp.router.weight" }

    /// A good sharded model (3 files + index) to break.
    func writeModel(shards: Int = 3) throws {
        try ModelWriter.writeSynthetic(config: smallConfig, seed: 4, to: model, shards: shards)
    }

    func shard(holding tensor: String) throws -> String {
        model + "/" + (try ModelDirectory(path: model).weightMap[tensor]!)
    }

    func loadError(layer: Int = 1) -> CheckpointError? {
        checkpointError { _ = try ModelDirectory(path: model).layer(layer) }
    }

    @Test func missingTensorIsNamed() throws {
        defer { directory.remove() }
        try writeModel(shards: 1)
        try rewrite(model + "/model.safetensors") { info, bytes in
            info.name == "model.layers.1.mlp.experts.down_proj_scales" ? nil : (info.dtype, info.shape, bytes)
        }
        let error = try #require(loadError())
        #expect(error.problem == .missingTensor)
        #expect(error.tensor == "model.layers.1.mlp.experts.down_proj_scales")
        #expect(error.file == model)
        #expect(try ModelDirectory(path: model).layer(0).config == smallConfig, "layer 0 is intact")
    }

    @Test func missingTensorInTheIndex() throws {
        defer { directory.remove() }
        try writeModel()
        let indexPath = model + "/" + ModelDirectory.indexName
        var index = try JSONValue.parse(FileSystem.readFile(indexPath)).objectValue!
        var map = index["weight_map"]!.objectValue!
        map["model.layers.1.mlp.router.bias"] = nil
        index["weight_map"] = .object(map)
        try FileSystem.writeFileAtomically(indexPath, bytes: Array(JSONValue.object(index).serialized().utf8))
        let error = try #require(loadError())
        #expect(error.problem == .missingTensor)
        #expect(error.file == indexPath)
        #expect(error.tensor == "model.layers.1.mlp.router.bias")
    }

    @Test func wrongShapeVersusConfig() throws {
        defer { directory.remove() }
        try writeModel()
        let file = try shard(holding: routerWeight)
        // [E, H] = [4, 64] stored as [8, 32]: same bytes, wrong shape.
        try rewrite(file) { info, bytes in (info.dtype, info.name == routerWeight ? [8, 32] : info.shape, bytes) }
        let error = try #require(loadError())
        #expect(error.file == file)
        #expect(error.tensor == routerWeight)
        guard case .wrongShape(let expected, let symbolic, let found) = error.problem else { Issue.record("\(error)"); return }
        #expect(expected == [4, 64] && found == [8, 32])
        #expect(symbolic.contains("[E, H]"))
        #expect(error.description.contains("expected [E, H] with E=4 H=64 I=32 = [4, 64]"))
    }

    @Test func wrongShapeOfExpertBlocks() throws {
        defer { directory.remove() }
        try writeModel(shards: 1)
        let tensor = "model.layers.1.mlp.experts.gate_up_proj_blocks"
        try rewrite(model + "/model.safetensors") { info, bytes in
            (info.dtype, info.name == tensor ? [4, 64, 4, 8] : info.shape, bytes)
        }
        let error = try #require(loadError())
        #expect(error.tensor == tensor)
        guard case .wrongShape([4, 64, 2, 16], _, [4, 64, 4, 8]) = error.problem else { Issue.record("\(error)"); return }
    }

    @Test func wrongDType() throws {
        defer { directory.remove() }
        try writeModel(shards: 1)
        let tensor = "model.layers.1.mlp.experts.down_proj_bias"
        try rewrite(model + "/model.safetensors") { info, bytes in (info.name == tensor ? .f16 : info.dtype, info.shape, bytes) }
        let error = try #require(loadError())
        #expect(error.tensor == tensor)
        #expect(error.problem == .wrongDType(expected: [.bf16, .f32], found: .f16))
        let blocks = "model.layers.0.mlp.experts.down_proj_blocks"
        try rewrite(model + "/model.safetensors") { info, bytes in
            info.name == blocks ? (.i8, info.shape, bytes) : (info.dtype, info.shape, bytes)
        }
        let blocksError = try #require(loadError(layer: 0))
        #expect(blocksError.problem == .wrongDType(expected: [.u8], found: .i8))
    }

    @Test func layerOutOfRange() throws {
        defer { directory.remove() }
        try writeModel()
        for layer in [2, -1, 100] {
            let error = try #require(loadError(layer: layer))
            #expect(error.problem == .layerOutOfRange(layer: layer, layers: 2))
            #expect(error.file == model + "/config.json")
            #expect(error.description.contains("0...1"))
        }
    }

    @Test func badConfigJSON() throws {
        defer { directory.remove() }
        try writeModel()
        let path = model + "/config.json"
        let good = try JSONValue.parse(FileSystem.readFile(path)).objectValue!
        func configError(_ change: (inout JSONObject) -> Void) throws -> CheckpointError? {
            var object = good
            change(&object)
            try FileSystem.writeFileAtomically(path, bytes: Array(JSONValue.object(object).serialized().utf8))
            return checkpointError { _ = try ModelDirectory(path: model) }
        }
        let missing = try #require(try configError { $0["num_local_experts"] = nil })
        #expect(missing.problem == .missingField("num_local_experts"))
        #expect(missing.file == path)
        let string = try #require(try configError { $0["hidden_size"] = .string("64") })
        #expect(string.problem == .wrongFieldType(field: "hidden_size", expected: "an integer", found: "a string (\"64\")"))
        let fraction = try #require(try configError { $0["intermediate_size"] = .number(JSONNumber(text: "32.5")) })
        guard case .wrongFieldType("intermediate_size", _, _) = fraction.problem else { Issue.record("\(fraction)"); return }
        let limit = try #require(try configError { $0["swiglu_limit"] = .null })
        guard case .wrongFieldType("swiglu_limit", "a number", _) = limit.problem else { Issue.record("\(limit)"); return }
        let invalid = try #require(try configError { $0["hidden_size"] = .number(JSONNumber(48)) })
        guard case .invalidConfig(let reason) = invalid.problem else { Issue.record("\(invalid)"); return }
        #expect(reason.contains("hidden_size 48"))
        let topK = try #require(try configError { $0["num_experts_per_tok"] = .number(JSONNumber(5)) })
        guard case .invalidConfig = topK.problem else { Issue.record("\(topK)"); return }

        try FileSystem.writeFileAtomically(path, bytes: Array("{\"hidden_size\": 64,".utf8))
        let json = try #require(checkpointError { _ = try ModelDirectory(path: model) })
        guard case .invalidJSON = json.problem else { Issue.record("\(json)"); return }
        try FileSystem.removeFile(path)
        let absent = try #require(checkpointError { _ = try ModelDirectory(path: model) })
        guard case .cannotRead = absent.problem else { Issue.record("\(absent)"); return }
        #expect(absent.file == path)
    }

    @Test func configWithDifferentShapeThanTheWeights() throws {
        defer { directory.remove() }
        try writeModel()
        var config = smallConfig
        config.intermediate = 64
        try FileSystem.writeFileAtomically(model + "/config.json", bytes: Array(ConfigFile.serialized(config).utf8))
        let error = try #require(loadError(layer: 0))
        #expect(error.tensor == "model.layers.0.mlp.experts.gate_up_proj_blocks")
        guard case .wrongShape([4, 128, 2, 16], _, [4, 64, 2, 16]) = error.problem else { Issue.record("\(error)"); return }
    }

    @Test func indexNamingAMissingShard() throws {
        defer { directory.remove() }
        try writeModel()
        let missing = ModelWriter.shardNames(3)[1]
        try FileSystem.removeFile(model + "/" + missing)
        let error = try #require(checkpointError { _ = try ModelDirectory(path: model) })
        #expect(error.problem == .missingShard(missing))
        #expect(error.file == model + "/" + ModelDirectory.indexName)
        #expect(error.description.contains(missing))
    }

    @Test func malformedIndex() throws {
        defer { directory.remove() }
        try writeModel()
        let indexPath = model + "/" + ModelDirectory.indexName
        for (text, expected) in [
            (#"{"metadata": {}}"#, "no \"weight_map\""),
            (#"{"weight_map": []}"#, "not an object"),
            (#"{"weight_map": {"a": 3}}"#, "not a file name"),
            (#"{"weight_map": {"a": "../model/config.json"}}"#, "not a plain file name"),
        ] {
            try FileSystem.writeFileAtomically(indexPath, bytes: Array(text.utf8))
            let error = try #require(checkpointError { _ = try ModelDirectory(path: model) })
            guard case .invalidIndex(let reason) = error.problem else { Issue.record("\(text): \(error)"); continue }
            #expect(reason.contains(expected), "\(reason)")
        }
    }

    @Test func indexPointingAtTheWrongShard() throws {
        defer { directory.remove() }
        try writeModel()
        let indexPath = model + "/" + ModelDirectory.indexName
        var index = try JSONValue.parse(FileSystem.readFile(indexPath)).objectValue!
        var map = index["weight_map"]!.objectValue!
        let wrong = ModelWriter.shardNames(3).first { $0 != map[routerWeight]!.stringValue! }!
        map[routerWeight] = .string(wrong)
        index["weight_map"] = .object(map)
        try FileSystem.writeFileAtomically(indexPath, bytes: Array(JSONValue.object(index).serialized().utf8))
        let error = try #require(loadError())
        #expect(error.problem == .tensorNotInShard(shard: wrong))
        #expect(error.tensor == routerWeight)
    }

    @Test func corruptShardIsReportedWithItsName() throws {
        defer { directory.remove() }
        try writeModel()
        let file = try shard(holding: routerWeight)
        var bytes = try FileSystem.readFile(file)
        bytes.removeLast(3)
        try FileSystem.writeFileAtomically(file, bytes: bytes)
        let error = try #require(loadError())
        guard case .safeTensors(let inner) = error.problem, case .outsideDataArea = inner.problem else { Issue.record("\(error)"); return }
        #expect(error.file == file)
        #expect(error.description.contains(file))
    }

    @Test func duplicateTensorsWithoutAnIndex() throws {
        defer { directory.remove() }
        try writeModel(shards: 2)
        let names = ModelWriter.shardNames(2)
        try FileSystem.removeFile(model + "/" + ModelDirectory.indexName)
        // A stray copy of shard 1 under another name.
        try FileSystem.writeFileAtomically(model + "/zz-copy.safetensors", bytes: FileSystem.readFile(model + "/" + names[0]))
        let error = try #require(checkpointError { _ = try ModelDirectory(path: model) })
        #expect(error.file == model + "/zz-copy.safetensors")
        #expect(error.problem == .duplicateTensor(otherFile: names[0]))
    }

    @Test func notADirectoryOrNoWeights() throws {
        defer { directory.remove() }
        let absent = try #require(checkpointError { _ = try ModelDirectory(path: directory.file("nope")) })
        #expect(absent.problem == .notADirectory)
        try FileSystem.makeDirectory(model)
        try FileSystem.writeFileAtomically(model + "/config.json", bytes: Array(ConfigFile.serialized(smallConfig).utf8))
        let empty = try #require(checkpointError { _ = try ModelDirectory(path: model) })
        #expect(empty.problem == .noWeightFiles)
    }

    @Test func weightsThatWouldMakeNaN() throws {
        defer { directory.remove() }
        try writeModel(shards: 1)
        let scales = "model.layers.1.mlp.experts.down_proj_scales"
        // down scales: [E, H, I/32] = [4, 64, 1]; element 70 is expert 1, row 6.
        try rewrite(model + "/model.safetensors") { info, bytes in
            var bytes = bytes
            if info.name == scales { bytes[70] = 255 }
            return (info.dtype, info.shape, bytes)
        }
        let error = try #require(loadError())
        #expect(error.tensor == scales)
        #expect(error.problem == .nonFiniteWeight(index: 70, detail: "the NaN scale 255 (expert 1, row 6, block 0)"))

        try writeModelAgain()
        let bias = "model.layers.1.mlp.router.bias"
        try rewrite(model + "/model.safetensors") { info, bytes in
            var bytes = bytes
            if info.name == bias { (bytes[4], bytes[5]) = (0xC0, 0x7F) }  // element 2 = NaN
            return (info.dtype, info.shape, bytes)
        }
        let nan = try #require(loadError())
        #expect(nan.tensor == bias)
        guard case .nonFiniteWeight(2, _) = nan.problem else { Issue.record("\(nan)"); return }
    }

    func writeModelAgain() throws {
        TemporaryDirectory.removeTree(model)
        try writeModel(shards: 1)
    }

    @Test func writerRefusesANonEmptyDestinationAndLeavesNothingOnFailure() throws {
        defer { directory.remove() }
        try writeModel()
        let error = try #require(checkpointError { try writeModel() })
        #expect(error.problem == .directoryNotEmpty)
        #expect(error.file == model)

        // A layer of the wrong shape fails part-way: no destination, no temporary directory left.
        let other = directory.file("other")
        let failing = checkpointError {
            try ModelWriter.write(config: smallConfig, to: other, shards: 2) { l in
                try SyntheticModel.layer(config: l == 0 ? smallConfig : MoEConfig(hidden: 32, intermediate: 32, experts: 4, topK: 2), seed: 1, layer: l)
            }
        }
        guard case .invalidArgument(let reason) = failing?.problem else { Issue.record("\(String(describing: failing))"); return }
        #expect(reason.contains("layer 1"))
        #expect(try FileSystem.listDirectory(directory.path) == ["model"])

        let shards = checkpointError { try ModelWriter.writeSynthetic(config: smallConfig, seed: 1, to: other, shards: 17) }
        guard case .invalidArgument = shards?.problem else { Issue.record("\(String(describing: shards))"); return }
    }
}
