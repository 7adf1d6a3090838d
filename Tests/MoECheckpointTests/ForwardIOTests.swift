import MoECPU
import MoECore
import SafeTensors
import Testing
@testable import MoECheckpoint

@Suite struct ForwardIOTests {
    let directory = TemporaryDirectory()

    func inputError(header: (inout SafeTensorsWriter) throws -> Void) throws -> CheckpointError? {
        var writer = SafeTensorsWriter()
        try header(&writer)
        let path = directory.file("in.safetensors")
        try writer.write(to: path)
        return checkpointError { _ = try HiddenStatesFile.readInput(path, hidden: 64) }
    }

    @Test func inputMustHoldHiddenStatesOfTheModelsWidth() throws {
        defer { directory.remove() }
        let path = directory.file("in.safetensors")
        let missing = try #require(try inputError { try $0.add("x", floats: [1], shape: [1]) })
        #expect(missing.problem == .missingTensor)
        #expect(missing.tensor == "hidden_states" && missing.file == path)

        let f64 = try #require(try inputError { try $0.add("hidden_states", doubles: .init(repeating: 1, count: 64), shape: [1, 64]) })
        #expect(f64.problem == .wrongDType(expected: [.bf16, .f32], found: .f64))

        let flat = try #require(try inputError { try $0.add("hidden_states", floats: .init(repeating: 1, count: 64), shape: [64]) })
        guard case .wrongShape(_, _, [64]) = flat.problem else { Issue.record("\(flat)"); return }

        let narrow = try #require(try inputError { try $0.add("hidden_states", floats: .init(repeating: 1, count: 96), shape: [3, 32]) })
        guard case .wrongShape([3, 64], _, [3, 32]) = narrow.problem else { Issue.record("\(narrow)"); return }
        #expect(narrow.description.contains("H=64"))

        let empty = try #require(try inputError { try $0.add("hidden_states", floats: [], shape: [0, 64]) })
        #expect(empty.problem == .noTokens)

        let corrupt = directory.file("corrupt.safetensors")
        try FileSystem.writeFileAtomically(corrupt, bytes: [1, 2, 3])
        let file = try #require(checkpointError { _ = try HiddenStatesFile.readInput(corrupt, hidden: 64) })
        guard case .safeTensors(let inner) = file.problem, inner.problem == .tooSmall(size: 3) else { Issue.record("\(file)"); return }
    }

    @Test(arguments: [SafeTensorsDType.bf16, .f32])
    func nonFiniteInputNamesTheFirstBadRow(dtype: SafeTensorsDType) throws {
        defer { directory.remove() }
        var values = SyntheticModel.hiddenStates(tokens: 7, hidden: 64, seed: 1)
        values[4 * 64 + 10] = .infinity
        values[5 * 64 + 3] = .nan
        let path = directory.file("in.safetensors")
        try HiddenStatesFile.writeInput(path, values: values, tokens: 7, hidden: 64, dtype: dtype)
        let error = try #require(checkpointError { _ = try HiddenStatesFile.readInput(path, hidden: 64) })
        #expect(error.problem == .nonFiniteInput(row: 4, column: 10, value: .infinity))
        #expect(error.description.contains("row 4"))
        #expect(error.file == path)
    }

    /// `moe forward`'s logic end to end: a written model, an input file, the CPU backend, the output file; equal
    /// to running the backend directly, for BF16 and F32 inputs, 1 and 7 tokens, both routing modes.
    @Test(arguments: [(1, RoutingMode.renormalize), (7, .softmaxFirst)])
    func forwardJobWritesTheBackendsResult(tokens: Int, routing: RoutingMode) throws {
        defer { directory.remove() }
        let model = directory.file("model")
        try ModelWriter.writeSynthetic(config: smallConfig, seed: 8, to: model, shards: 2)
        let weights = try SyntheticModel.layer(config: smallConfig, seed: 8, layer: 1)
        let input = SyntheticModel.hiddenStates(tokens: tokens, hidden: 64, seed: 2)
        let expected = try CPUBackend(weights: weights).forward(input, tokens: tokens, routing: routing, profiler: nil)
        for dtype in [SafeTensorsDType.bf16, .f32] {
            let inputPath = directory.file("in-\(dtype).safetensors"), outputPath = directory.file("out-\(dtype).safetensors")
            try HiddenStatesFile.writeInput(inputPath, values: input, tokens: tokens, hidden: 64, dtype: dtype)
            let summary = try ForwardJob.run(
                .init(model: model, layer: 1, input: inputPath, output: outputPath, routing: routing)
            ) { CPUBackend(weights: $0) }
            #expect(summary.tokens == tokens)
            let output = try SafeTensorsFile(path: outputPath)
            #expect(try output.info("hidden_states").shape == [tokens, 64] && output.info("hidden_states").dtype == .f32)
            #expect(try output.info("topk_ids").shape == [tokens, 2] && output.info("topk_ids").dtype == .i32)
            #expect(try output.info("topk_weights").shape == [tokens, 2] && output.info("topk_weights").dtype == .f32)
            #expect(output.metadata["routing"] == routing.rawValue && output.metadata["layer"] == "1")
            #expect(try HiddenStatesFile.readOutput(outputPath) == expected)
        }
    }

    @Test func forwardJobFailsBeforeRunningOnABadInput() throws {
        defer { directory.remove() }
        let model = directory.file("model")
        try ModelWriter.writeSynthetic(config: smallConfig, seed: 8, to: model)
        let inputPath = directory.file("in.safetensors")
        try HiddenStatesFile.writeInput(inputPath, values: .init(repeating: 0.5, count: 3 * 32), tokens: 3, hidden: 32)
        var built = false
        let error = checkpointError {
            _ = try ForwardJob.run(.init(model: model, layer: 0, input: inputPath, output: directory.file("out.safetensors"), routing: .renormalize)) {
                built = true
                return CPUBackend(weights: $0)
            }
        }
        guard case .wrongShape = error?.problem else { Issue.record("\(String(describing: error))"); return }
        #expect(!built)
        #expect(FileSystem.kind(of: directory.file("out.safetensors")) == .missing)
    }
}
