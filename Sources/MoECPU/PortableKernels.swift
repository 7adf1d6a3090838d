import CMoECPUKernels
import MoECore

/// The portable path, in Swift SIMD with no instruction-set assumptions: the reference every vector path is
/// tested against, reading the same packed row groups (moekit_cpu.h) and the same tile structs.
///
/// A row group's 16 rows are the 16 lanes of a SIMD16<Float>. Each 64-byte chunk (16 rows × 8 inputs) is decoded
/// through a 16-entry table into an 8 × 16 float tile, then every token does one SIMD16 multiply-add per input.
/// Code values are exact in fp32, as are their products with bf16 activations; sums are fp32 per 32-input block,
/// then multiplied by the block's scale 2^(s−127) and added to the row's total.
enum PortableKernels {
    static let maxTileTokens = 8
    /// SIMD16 vectors of scratch a tile call needs: accumulators, partial sums and the decoded tile.
    static let scratchVectors = 3 * maxTileTokens + 8

    /// The 16 E2M1 code values.
    nonisolated(unsafe) static let codeValues: UnsafeMutablePointer<Float> = {
        let table = UnsafeMutablePointer<Float>.allocate(capacity: 16)
        for code in 0..<16 { table[code] = MXFP4.codeValues[code] }
        return table
    }()

    /// 2^(s−127) for 16 E8M0 scales (s = 0 → 2^−127, s = 255 → NaN).
    @inline(__always)
    static func scales(_ bytes: UnsafePointer<UInt8>) -> SIMD16<Float> {
        var values = SIMD16<Float>()
        for j in 0..<16 { values[j] = MXFP4.scaleValue(bytes[j]) }
        return values
    }

    /// acc[t] = Σ_k W[row j][k]·x[t][k] (lane j) for one packed row group; x: [K/2][N] bf16 pairs.
    /// partial: N vectors; decoded: 8 vectors of scratch.
    static func rowGroupDot(
        _ weights: UnsafePointer<UInt8>, blocks: Int, x: UnsafePointer<UInt32>, tokens N: Int,
        acc: UnsafeMutablePointer<SIMD16<Float>>, partial: UnsafeMutablePointer<SIMD16<Float>>,
        decoded: UnsafeMutablePointer<SIMD16<Float>>
    ) {
        let table = codeValues
        let lanes = UnsafeMutableRawPointer(decoded).assumingMemoryBound(to: Float.self)
        for t in 0..<N { acc[t] = .zero }
        var w = weights
        var firstBlock = 0
        while firstBlock < blocks {
            let inSuperblock = min(4, blocks - firstBlock)
            let scaleBytes = w + inSuperblock * 256
            for b in 0..<inSuperblock {
                for t in 0..<N { partial[t] = .zero }
                for c in 0..<4 {
                    // Row j's 4 bytes: nibble position p holds input order(p) = 2·(p % 4) + p / 4 of the chunk.
                    let chunk = w + b * 256 + c * 64
                    for j in 0..<16 {
                        let word = UnsafeRawPointer(chunk + 4 * j).loadUnaligned(as: UInt32.self)
                        for p in 0..<8 {
                            lanes[(2 * (p & 3) + (p >> 2)) * 16 + j] = table[Int((word >> UInt32(4 * p)) & 15)]
                        }
                    }
                    let k0 = (firstBlock + b) * 32 + c * 8
                    for i in 0..<8 {
                        let value = decoded[i]
                        let pairs = x + ((k0 + i) >> 1) * N
                        let shift = UInt32(16 - 16 * (i & 1))  // even input: low half of the pair; odd: high half
                        for t in 0..<N {
                            partial[t] += value * Float(bitPattern: (pairs[t] &<< shift) & 0xFFFF_0000)
                        }
                    }
                }
                let scale = scales(scaleBytes + b * 16)
                for t in 0..<N { acc[t] += partial[t] * scale }
            }
            w += inSuperblock * 256 + 64
            firstBlock += 4
        }
    }

    /// moekit_gemm1_tile on the portable path. scratch: `scratchVectors` vectors.
    static func gemm1(_ tile: moekit_gemm1_tile, scratch: UnsafeMutablePointer<SIMD16<Float>>) {
        let N = Int(tile.tokens)
        precondition(N >= 1 && N <= maxTileTokens)
        let gate = scratch, up = scratch + maxTileTokens, partial = scratch + 2 * maxTileTokens
        let decoded = scratch + 3 * maxTileTokens
        let x = tile.activations.assumingMemoryBound(to: UInt32.self)
        rowGroupDot(tile.gate_weights, blocks: Int(tile.blocks), x: x, tokens: N, acc: gate, partial: partial, decoded: decoded)
        rowGroupDot(tile.up_weights, blocks: Int(tile.blocks), x: x, tokens: N, acc: up, partial: partial, decoded: decoded)
        let out = tile.intermediate.assumingMemoryBound(to: UInt32.self)
        for t in 0..<N {
            for m in 0..<8 {
                var pair: UInt32 = 0
                for half in 0..<2 {
                    let j = 2 * m + half
                    let g = gate[t][j] + tile.gate_bias[j], u = up[t][j] + tile.up_bias[j]
                    let a = SwiGLU.apply(gate: g, up: u, alpha: tile.swiglu_alpha, limit: tile.swiglu_limit)
                    pair |= UInt32(BF16.bits(a)) << (16 * UInt32(half))
                }
                out[m * N + t] = pair
            }
        }
    }

    /// moekit_gemm2_tile on the portable path. scratch: `scratchVectors` vectors.
    static func gemm2(_ tile: moekit_gemm2_tile, scratch: UnsafeMutablePointer<SIMD16<Float>>) {
        let N = Int(tile.tokens)
        precondition(N >= 1 && N <= maxTileTokens)
        let acc = scratch, partial = scratch + maxTileTokens, decoded = scratch + 3 * maxTileTokens
        let a = tile.intermediate.assumingMemoryBound(to: UInt32.self)
        rowGroupDot(tile.weights, blocks: Int(tile.blocks), x: a, tokens: N, acc: acc, partial: partial, decoded: decoded)
        let column = Int(tile.column)
        for t in 0..<N {
            let row = tile.output_rows[t]!
            let weight = tile.row_weights[t]
            for j in 0..<16 { row[column + j] = BF16.bits(weight * (acc[t][j] + tile.bias[j])) }
        }
    }
}
