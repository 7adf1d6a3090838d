#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Deterministic synthetic layers for `moe init`, benchmarks and tests: real MXFP4 bytes whose scales are
/// chosen so activations stay O(1) through both products (so SwiGLU's clamp is exercised but not saturated).
public enum SyntheticModel {
    /// Layer `layer` of a synthetic model for `seed`; the same (config, seed, layer) always gives the same bytes.
    public static func layer(config: MoEConfig, seed: UInt64, layer: Int = 0) throws -> MoELayerWeights {
        try config.validate()
        var rng = SeededGenerator(seed: seed &* 0x100_0000_01B3 &+ UInt64(layer) &+ 1)
        let (E, H, I) = (config.experts, config.hidden, config.intermediate)
        let routerWeight = rng.bf16Normals(E * H, std: 1 / Double(H).squareRoot())
        let routerBias = rng.bf16Normals(E, std: 0.1)
        let gateUp = randomStack(experts: E, rows: 2 * I, columns: H, outputStd: 2.5, rng: &rng)
        let gateUpBias = rng.bf16Normals(E * 2 * I, std: 0.2)
        let down = randomStack(experts: E, rows: H, columns: I, outputStd: 0.2, rng: &rng)
        let downBias = rng.bf16Normals(E * H, std: 0.05)
        return try MoELayerWeights(
            config: config, routerWeight: routerWeight, routerBias: routerBias, gateUp: gateUp,
            gateUpBias: gateUpBias, down: down, downBias: downBias)
    }

    /// Random hidden states [T, H], bf16 values, standard normal.
    public static func hiddenStates(tokens: Int, hidden: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed ^ 0x5EED_0F_1A7E57)
        return rng.bf16Normals(tokens * hidden, std: 1)
    }

    /// Uniform random codes; per-block scales around the exponent that gives a product with unit-variance
    /// inputs a standard deviation near `outputStd` (E[code²] ≈ 8.56 for uniform codes).
    static func randomStack(
        experts: Int, rows: Int, columns: Int, outputStd: Double, rng: inout SeededGenerator
    ) -> MXFP4ExpertStack {
        var blocks = [UInt8](repeating: 0, count: experts * rows * columns / 2)
        rng.fill(&blocks)
        let base = Int((log2(outputStd / (8.56.squareRoot() * Double(columns).squareRoot()))).rounded()) + 127
        var scales = [UInt8](repeating: 0, count: experts * rows * columns / MXFP4.blockSize)
        rng.fill(&scales)
        for i in scales.indices { scales[i] = UInt8(base - 1 + Int(scales[i] % 3)) }
        return MXFP4ExpertStack(experts: experts, rows: rows, columns: columns, blocks: blocks, scales: scales)
    }
}
