import CMoECPUKernels
import MoECore

/// The portable path, in Swift SIMD with no instruction-set assumptions: the reference every vector path is
/// tested against, reading the same packed row groups (moekit_cpu.h) and the same tile structs.
///
/// A row group's 16 rows are the 16 lanes of a SIMD16<Float>. Codes are decoded arithmetically (no table:
/// Swift SIMD has no shuffle): an E2M1 code with magnitude bits m = 2e + f is 0, 0.5, or 2^(e−1)·(1 + f/2),
/// which is exact in fp32, as is its product with a bf16 activation; sums are fp32 per 32-input block, then
/// multiplied by the block's scale 2^(s−127) and added to the row's total.
enum PortableKernels {
    static let maxTileTokens = 8

    /// Nibble position p of a row's 4 code bytes holds input k0 + inputOfNibble[p].
    static let inputOfNibble: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 2, 4, 6, 1, 3, 5, 7)

    /// E2M1 code (low 4 bits of each lane) → its value.
    @inline(__always)
    static func decode(_ code: SIMD16<UInt32>) -> SIMD16<Float> {
        let magnitude = code & 7
        var bits = (((magnitude &>> 1) &+ 126) &<< 23) | ((magnitude & 1) &<< 22)
        bits.replace(with: 0x3F00_0000, where: magnitude .== 1)
        bits.replace(with: 0, where: magnitude .== 0)
        return unsafeBitCast(bits | ((code & 8) &<< 28), to: SIMD16<Float>.self)
    }

    /// 2^(s−127) for 16 E8M0 scales (s = 0 → 2^−127, s = 255 → NaN).
    @inline(__always)
    static func scales(_ bytes: UnsafePointer<UInt8>) -> SIMD16<Float> {
        let s = SIMD16<UInt32>(truncatingIfNeeded: UnsafeRawPointer(bytes).loadUnaligned(as: SIMD16<UInt8>.self))
        var bits = s &<< 23
        bits.replace(with: bits | 0x0040_0000, where: ((s &+ 1) & 255) .<= 1)
        return unsafeBitCast(bits, to: SIMD16<Float>.self)
    }

    /// acc[t] = Σ_k W[row j][k]·x[t][k] (lane j) for one packed row group; x: [K/2][N] bf16 pairs.
    /// partial: scratch of N vectors.
    static func rowGroupDot(
        _ weights: UnsafePointer<UInt8>, blocks: Int, x: UnsafePointer<UInt32>, tokens N: Int,
        acc: UnsafeMutablePointer<SIMD16<Float>>, partial: UnsafeMutablePointer<SIMD16<Float>>
    ) {
        for t in 0..<N { acc[t] = .zero }
        var w = weights
        var firstBlock = 0
        while firstBlock < blocks {
            let inSuperblock = min(4, blocks - firstBlock)
            let scaleBytes = w + inSuperblock * 256
            for b in 0..<inSuperblock {
                for t in 0..<N { partial[t] = .zero }
                for c in 0..<4 {
                    let words = UnsafeRawPointer(w + b * 256 + c * 64).loadUnaligned(as: SIMD16<UInt32>.self)
                    let k0 = (firstBlock + b) * 32 + c * 8
                    withUnsafeBytes(of: inputOfNibble) { order in
                        let order = order.assumingMemoryBound(to: Int.self)
                        for p in 0..<8 {
                            let value = decode((words &>> UInt32(4 * p)) & 15)
                            let k = k0 + order[p]
                            let pairs = x + (k >> 1) * N
                            let shift = UInt32(16 - 16 * (k & 1))  // even input: low half; odd: high half
                            for t in 0..<N {
                                let activation = Float(bitPattern: (pairs[t] &<< shift) & 0xFFFF_0000)
                                partial[t] += value * activation
                            }
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

    /// moekit_gemm1_tile on the portable path. scratch: 3·maxTileTokens vectors.
    static func gemm1(_ tile: moekit_gemm1_tile, scratch: UnsafeMutablePointer<SIMD16<Float>>) {
        let N = Int(tile.tokens)
        precondition(N >= 1 && N <= maxTileTokens)
        let gate = scratch, up = scratch + maxTileTokens, partial = scratch + 2 * maxTileTokens
        let x = tile.activations.assumingMemoryBound(to: UInt32.self)
        rowGroupDot(tile.gate_weights, blocks: Int(tile.blocks), x: x, tokens: N, acc: gate, partial: partial)
        rowGroupDot(tile.up_weights, blocks: Int(tile.blocks), x: x, tokens: N, acc: up, partial: partial)
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

    /// moekit_gemm2_tile on the portable path. scratch: 2·maxTileTokens vectors.
    static func gemm2(_ tile: moekit_gemm2_tile, scratch: UnsafeMutablePointer<SIMD16<Float>>) {
        let N = Int(tile.tokens)
        precondition(N >= 1 && N <= maxTileTokens)
        let acc = scratch, partial = scratch + maxTileTokens
        let a = tile.intermediate.assumingMemoryBound(to: UInt32.self)
        rowGroupDot(tile.weights, blocks: Int(tile.blocks), x: a, tokens: N, acc: acc, partial: partial)
        let column = Int(tile.column)
        for t in 0..<N {
            let row = tile.output_rows[t]!
            let weight = tile.row_weights[t]
            for j in 0..<16 { row[column + j] = BF16.bits(weight * (acc[t][j] + tile.bias[j])) }
        }
    }
}
