import MoECPU
import MoECore
import SafeTensors
import Testing
@testable import MoECheckpoint

/// The golden cases in ../shared/testdata/gpt-oss-moe: model directories and expected outputs written by an
/// independent float64 implementation of the gpt-oss MoE block (see its README).
enum GoldenData {
    /// <repository root>/../shared/testdata/gpt-oss-moe, found from this file's path.
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Tests/MoECheckpointTests/GoldenTests.swift
        return parts.joined(separator: "/") + "/../shared/testdata/gpt-oss-moe"
    }()

    static let cases = ["tiny-e8", "small-e16"]

    static var available: Bool { cases.allSatisfy { FileSystem.kind(of: root + "/" + $0 + "/config.json") == .file } }

    struct Case {
        let model: ModelDirectory
        let input: [Float]
        let tokens: Int
        let expected: SafeTensorsFile
    }

    static func load(_ name: String) throws -> Case {
        let path = root + "/" + name
        let model = try ModelDirectory(path: path)
        let (input, tokens) = try HiddenStatesFile.readInput(path + "/input.safetensors", hidden: model.config.hidden)
        return Case(model: model, input: input, tokens: tokens, expected: try SafeTensorsFile(path: path + "/expected.safetensors"))
    }
}

@Suite(.enabled(if: GoldenData.available, "golden data not found at ../shared/testdata/gpt-oss-moe"))
struct GoldenTests {
    static let modes = RoutingMode.allCases

    /// The float64 reference on the loaded weights reproduces the independent implementation to ~1e-9: this pins
    /// the semantics (interleaved gate/up rows, nibble order, scale bias, clamp, bias inside the weighted sum,
    /// routing and slot order) and that the loader hands over the checkpoint's exact values.
    @Test(arguments: GoldenData.cases, modes)
    func referenceMatchesTheIndependentImplementation(name: String, mode: RoutingMode) throws {
        let golden = try GoldenData.load(name)
        let config = golden.model.config
        for layer in 0..<config.layers {
            let prefix = "layer\(layer).\(mode.rawValue)."
            let weights = try golden.model.layer(layer)
            let output = try ReferenceMoE.forward(weights: weights, input: golden.input, tokens: golden.tokens, mode: mode)
            let expectedHidden = try golden.expected.doubles(prefix + "hidden_states")
            #expect(try golden.expected.info(prefix + "hidden_states").shape == [golden.tokens, config.hidden])
            #expect(output.topkIds == (try golden.expected.int32s(prefix + "topk_ids")), "\(name) layer \(layer)")
            let hiddenError = Self.relativeL2(output.hidden, expectedHidden)
            let weightError = Self.relativeL2(output.topkWeights, try golden.expected.doubles(prefix + "topk_weights"))
            #expect(hiddenError <= 1e-9, "\(name) layer \(layer) \(mode): hidden rel L2 \(hiddenError)")
            #expect(weightError <= 1e-9, "\(name) layer \(layer) \(mode): weights rel L2 \(weightError)")
            let worst = Self.worstElement(output.hidden, expectedHidden)
            #expect(worst <= 1e-9, "\(name) layer \(layer) \(mode): worst element error \(worst) of the largest magnitude")
        }
    }

    /// The CPU backend (bf16 between stages, fp32 accumulation) agrees to rel L2 ≤ 1e-2 and picks the same
    /// experts wherever the k-th and (k+1)-th logits are more than 1e-3 apart.
    @Test(arguments: GoldenData.cases, modes)
    func cpuBackendMatchesWithinBF16Tolerance(name: String, mode: RoutingMode) throws {
        let golden = try GoldenData.load(name)
        let config = golden.model.config
        for layer in 0..<config.layers {
            let prefix = "layer\(layer).\(mode.rawValue)."
            let weights = try golden.model.layer(layer)
            let result = try CPUBackend(weights: weights).forward(golden.input, tokens: golden.tokens, routing: mode, profiler: nil)
            let expected = try golden.expected.doubles(prefix + "hidden_states")
            let error = Accuracy.relativeL2(result.hidden, expected)
            #expect(error <= 1e-2, "\(name) layer \(layer) \(mode): rel L2 \(error)")
            #expect(error > 0, "bf16 rounding between stages must show")
            let reference = try ReferenceMoE.forward(weights: weights, input: golden.input, tokens: golden.tokens, mode: mode)
            let mismatches = Accuracy.routingMismatches(
                ids: result.topkIds, reference: reference, tokens: golden.tokens, experts: config.experts, k: config.topK)
            #expect(mismatches.isEmpty, "\(name) layer \(layer) \(mode): tokens \(mismatches) chose other experts")
            #expect(result.topkIds.count == golden.tokens * config.topK)
        }
    }

    static func relativeL2(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(a, b) {
            difference += (x - y) * (x - y)
            norm += y * y
        }
        return (difference / norm).squareRoot()
    }

    /// max |a − b| / max |b|.
    static func worstElement(_ a: [Double], _ b: [Double]) -> Double {
        let scale = b.map(abs).max() ?? 1
        return zip(a, b).map { abs($0 - $1) }.max()! / scale
    }
}
