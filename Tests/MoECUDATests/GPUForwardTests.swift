import MoECore
import Testing

@testable import MoECUDA

/// These need a CUDA GPU; on machines without one they are skipped (CUDABackend.availability() says why).
enum GPU {
    static let available = CUDABackend.availability().available
}

private func relativeL2(_ a: [Float], _ b: [Double]) -> Double {
    var num = 0.0, den = 0.0
    for i in a.indices {
        let d = Double(a[i]) - b[i]
        num += d * d
        den += b[i] * b[i]
    }
    return (num / max(den, 1e-300)).squareRoot()
}

@Test(.enabled(if: GPU.available, "needs a CUDA GPU"), arguments: [1, 7, 33, 100])
func cudaMatchesTheReferenceOnSmallShapes(tokens: Int) throws {
    let config = MoEConfig(hidden: 128, intermediate: 96, experts: 8, topK: 4)
    let weights = try SyntheticModel.layer(config: config, seed: 5)
    let input = SyntheticModel.hiddenStates(tokens: tokens, hidden: config.hidden, seed: UInt64(tokens))
    let hopper = (try? CUDARuntime.shared())?.device.architecture == "sm_90a"
    for variant in GemmVariant.allCases where hopper || !variant.needsHopper {
        let backend = try CUDABackend(weights: weights, options: .init(gemmVariant: variant, poisonOutputs: true))
        for mode in RoutingMode.allCases {
            let result = try backend.forward(input, tokens: tokens, routing: mode, profiler: nil)
            let reference = try ReferenceMoE.forward(weights: weights, input: input, tokens: tokens, mode: mode)
            let finite = result.hidden.allSatisfy { $0.isFinite }
            #expect(finite, "\(variant) \(mode): unwritten or non-finite output")
            #expect(relativeL2(result.hidden, reference.hidden) <= 1e-2, "\(variant) \(mode)")
        }
    }
}
