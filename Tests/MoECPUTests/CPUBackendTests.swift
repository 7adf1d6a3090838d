import MoECore
import Testing

@testable import MoECPU

/// Every kernel path this CPU supports against the float64 reference: relative L2 ≤ 1e-2 and the same experts
/// away from near-ties, with 1 and 2 workers giving identical bits.
@Suite struct CPUBackendTests {
    static let shapes: [(name: String, config: MoEConfig, tokens: [Int])] = [
        ("tiny", MoEPreset.tiny.config, [1, 7, 33]),
        ("awkward H=96 I=160 E=5 k=3", MoEConfig(hidden: 96, intermediate: 160, experts: 5, topK: 3), [1, 2, 13, 70]),
        ("k = E", MoEConfig(hidden: 64, intermediate: 64, experts: 4, topK: 4), [3, 9]),
        ("k = 1", MoEConfig(hidden: 32, intermediate: 32, experts: 6, topK: 1), [1, 17]),
    ]

    @Test(arguments: CPUKernelPath.supported, 0..<shapes.count)
    func matchesReference(path: CPUKernelPath, shapeIndex: Int) throws {
        let shape = Self.shapes[shapeIndex]
        for mode in RoutingMode.allCases {
            for (i, T) in shape.tokens.enumerated() {
                let seed = UInt64(1000 * shapeIndex + i)
                let weights = try SyntheticModel.layer(config: shape.config, seed: seed)
                let x = SyntheticModel.hiddenStates(tokens: T, hidden: shape.config.hidden, seed: seed)
                let reference = try ReferenceMoE.forward(weights: weights, input: x, tokens: T, mode: mode)
                var outputs: [MoEForwardResult] = []
                for workers in [1, 2] {
                    let backend = try CPUBackend(weights: weights, workers: workers, kernels: path)
                    let out = try backend.forward(x, tokens: T, routing: mode, profiler: nil)
                    let error = Accuracy.relativeL2(out.hidden, reference.hidden)
                    #expect(error <= 1e-2, "\(path) \(shape.name) T=\(T) seed=\(seed) workers=\(workers): rel L2 \(error)")
                    let mismatches = Accuracy.routingMismatches(
                        ids: out.topkIds, reference: reference, tokens: T, experts: shape.config.experts, k: shape.config.topK)
                    #expect(mismatches.isEmpty, "\(path) \(shape.name) T=\(T) seed=\(seed): tokens \(mismatches) chose other experts")
                    outputs.append(out)
                }
                #expect(outputs[0].hidden.map(\.bitPattern) == outputs[1].hidden.map(\.bitPattern),
                        "\(path) \(shape.name) T=\(T) seed=\(seed): 1 and 2 workers differ")
            }
        }
    }
}
