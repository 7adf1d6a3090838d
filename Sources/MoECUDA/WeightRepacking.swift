import Dispatch
import MoECore

/// The GPU layout of one MXFP4 expert stack, built at load time from the checkpoint layout
/// (blocks [E, N, K/32, 16] u8, scales [E, N, K/32] u8) so that each lane of a warp reads its MMA A fragments
/// with one coalesced 16-byte load per 64 k and decodes them with a few bit operations (moe_common.cuh).
///
/// Shapes (G = N/16 row groups, C = ceil(K/64) chunks, S = ceil(C/4) scale groups):
///   codes:  [E][G][C][32 lanes][4 words] u32
///   scales: [E][G][S][8 row pairs][4 chunks][4] u8
/// Lane l = 4·gid + t holds, for chunk c, word j: row gid + 8·(j & 1) of the group, MXFP4 block 2c + (j >> 1),
/// source bytes t, t+4, t+8, t+12 of that block (k = 2t + 8q and +1 within the block for byte q).
/// Its scale bytes for chunk c are those of the same four (row, block) pairs, in word order.
/// Blocks past K hold code 0 with scale 127 (exact zeros).
///
/// Row order inside a group: identity for GEMM 2; for GEMM 1 (rows interleaved gate/up in the checkpoint) row
/// position p < 8 is gate_i and p + 8 is up_i with i = 8·group + p, so SwiGLU needs no data exchange.
public struct RepackedExpertStack: Sendable {
    public let experts: Int
    public let rows: Int
    public let columns: Int
    public let gateUpInterleaved: Bool
    public var codes: [UInt32]
    public var scales: [UInt8]

    public var groups: Int { rows / 16 }
    public var chunks: Int { (columns + 63) / 64 }
    public var scaleGroups: Int { (chunks + 3) / 4 }

    /// - Parameter selection: the checkpoint experts to keep, in order (expert i of the result is selection[i]); all
    ///   of them when nil. An expert-parallel GPU rank keeps only its own.
    public init(_ stack: MXFP4ExpertStack, gateUpInterleaved: Bool, selection: [Int]? = nil) {
        precondition(stack.rows % 16 == 0, "rows must be a multiple of 16")
        let selected = selection ?? Array(0..<stack.experts)
        precondition(selected.allSatisfy { $0 >= 0 && $0 < stack.experts }, "selected experts must be in 0..<\(stack.experts)")
        experts = selected.count
        rows = stack.rows
        columns = stack.columns
        self.gateUpInterleaved = gateUpInterleaved
        let G = stack.rows / 16, C = (stack.columns + 63) / 64, S = (C + 3) / 4
        let blocksPerRow = stack.blocksPerRow
        var codes = [UInt32](repeating: 0, count: selected.count * G * C * 32 * 4)
        var scales = [UInt8](repeating: 127, count: selected.count * G * S * 8 * 4 * 4)
        let table = RepackedExpertStack.placementTable
        let interleaved = gateUpInterleaved
        stack.blocks.withUnsafeBufferPointer { blocks in
            stack.scales.withUnsafeBufferPointer { sourceScales in
                codes.withUnsafeMutableBufferPointer { codeOut in
                    scales.withUnsafeMutableBufferPointer { scaleOut in
                        nonisolated(unsafe) let b = blocks
                        nonisolated(unsafe) let s = sourceScales
                        nonisolated(unsafe) let co = codeOut
                        nonisolated(unsafe) let so = scaleOut
                        DispatchQueue.concurrentPerform(iterations: selected.count * G) { item in
                            let e = item / G, g = item % G
                            for position in 0..<16 {
                                let row = RepackedExpertStack.sourceRow(group: g, position: position, interleaved: interleaved)
                                let rowBlocks = (selected[e] * stack.rows + row) * blocksPerRow
                                let gid = position & 7, half = position >> 3
                                for c in 0..<C {
                                    for blockInChunk in 0..<2 {
                                        let block = 2 * c + blockInChunk
                                        let j = half + 2 * blockInChunk
                                        let scaleIndex = ((((e * G + g) * S + c / 4) * 8 + gid) * 4 + c % 4) * 4 + j
                                        guard block < blocksPerRow else { continue }  // padding stays zero / 127
                                        so[scaleIndex] = s[rowBlocks + block]
                                        let source = (rowBlocks + block) * 16
                                        for t in 0..<4 {
                                            var word: UInt32 = 0
                                            for q in 0..<4 { word |= table[q * 256 + Int(b[source + t + 4 * q])] }
                                            co[(((e * G + g) * C + c) * 32 + gid * 4 + t) * 4 + j] = word
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        self.codes = codes
        self.scales = scales
    }

    /// The checkpoint row held at `position` (0..<16) of row group `group`.
    @inline(__always)
    public static func sourceRow(group: Int, position: Int, interleaved: Bool) -> Int {
        interleaved ? 2 * (8 * group + (position & 7)) + (position >> 3) : 16 * group + position
    }

    /// Bit positions, inside a word, of output q's (mantissa, exponent low, exponent high, sign) for its low and
    /// high code. Matches mxfp4_unpack_word in moe_common.cuh.
    static let bitPositions: [(low: [Int], high: [Int])] = [
        ([6, 7, 8, 15], [22, 23, 24, 31]),    // w & M
        ([0, 1, 2, 9], [16, 17, 18, 25]),     // (w << 6) & M
        ([28, 29, 30, 5], [12, 13, 14, 21]),  // rotl(w, 10) & M
        ([10, 3, 4, 11], [26, 19, 20, 27]),   // (w << 4)&0x81808180 | (w >> 4)&0x00400040
    ]

    /// placementTable[q·256 + byte]: the bits that source byte `byte` (low nibble = even k, high = odd k)
    /// contributes when it is output q of its word.
    static let placementTable: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 4 * 256)
        for q in 0..<4 {
            for byte in 0..<256 {
                var word: UInt32 = 0
                for (nibble, positions) in [(byte & 15, bitPositions[q].low), (byte >> 4, bitPositions[q].high)] {
                    for bit in 0..<4 where nibble & (1 << bit) != 0 { word |= 1 << UInt32(positions[bit]) }
                }
                table[q * 256 + byte] = word
            }
        }
        return table
    }()

    /// Host model of the kernel's decode (mxfp4_unpack_word then the scale multiply, in bf16): the value the
    /// tensor cores see for expert e, checkpoint row `row`, column k. Used by tests to check layout + decode.
    public func decodedValue(expert e: Int, row: Int, column k: Int) -> Float {
        let g = row / 16
        let position = (0..<16).first { RepackedExpertStack.sourceRow(group: g, position: $0, interleaved: gateUpInterleaved) == row }!
        let gid = position & 7, half = position >> 3
        let c = k / 64, blockInChunk = (k % 64) / 32, inBlock = k % 32
        let byteInBlock = inBlock / 2, t = byteInBlock % 4, q = byteInBlock / 4
        let j = half + 2 * blockInChunk
        let word = codes[(((e * groups + g) * chunks + c) * 32 + gid * 4 + t) * 4 + j]
        let scale = scales[((((e * groups + g) * scaleGroups + c / 4) * 8 + gid) * 4 + c % 4) * 4 + j]
        let raw: UInt32
        switch q {
        case 0: raw = word & 0x81C0_81C0
        case 1: raw = (word << 6) & 0x81C0_81C0
        case 2: raw = ((word << 10) | (word >> 22)) & 0x81C0_81C0
        default: raw = ((word << 4) & 0x8180_8180) | ((word >> 4) & 0x0040_0040)
        }
        let half16 = inBlock % 2 == 0 ? UInt16(raw & 0xFFFF) : UInt16(raw >> 16)
        let unscaled = Double(BF16.float(half16))  // value · 2^-126, exact
        if scale == 255 { return .nan }
        return Float(unscaled * Double(sign: .plus, exponent: 126 + Int(scale) - 127, significand: 1))
    }
}

/// Everything the kernels read for one layer, in device-friendly form (still on the host).
public struct RepackedLayer: Sendable {
    public let config: MoEConfig
    /// Wr [E, H] as bf16 bits.
    public let routerWeight: [UInt16]
    /// br [E] f32.
    public let routerBias: [Float]
    public let gateUp: RepackedExpertStack
    /// b1 [E, 2I] f32, checkpoint order.
    public let gateUpBias: [Float]
    public let down: RepackedExpertStack
    /// b2 [E, H] f32.
    public let downBias: [Float]
    /// The checkpoint experts held, in order: the kernels' expert i is experts[i]. The router keeps all E.
    public let experts: [Int]

    /// The bytes the GPU holds for this layer.
    public var bytes: Int {
        routerWeight.count * 2 + (routerBias.count + gateUpBias.count + downBias.count) * 4
            + gateUp.codes.count * 4 + gateUp.scales.count + down.codes.count * 4 + down.scales.count
    }

    /// - Parameter selection: the experts whose weights the GPU holds (all when nil): an expert-parallel rank
    ///   uploads only its own, and its tiles name them by their index here (moe_ep_local_tiles).
    public init(_ weights: MoELayerWeights, selection: [Int]? = nil) {
        config = weights.config
        let selected = selection ?? Array(0..<weights.config.experts)
        experts = selected
        routerWeight = weights.routerWeight.map { BF16.bits($0) }
        routerBias = weights.routerBias
        gateUp = RepackedExpertStack(weights.gateUp, gateUpInterleaved: true, selection: selected)
        down = RepackedExpertStack(weights.down, gateUpInterleaved: false, selection: selected)
        func rows(_ bias: [Float], width: Int) -> [Float] {
            selection == nil ? bias : selected.flatMap { bias[($0 * width)..<(($0 + 1) * width)] }
        }
        gateUpBias = rows(weights.gateUpBias, width: 2 * weights.config.intermediate)
        downBias = rows(weights.downBias, width: weights.config.hidden)
    }
}
