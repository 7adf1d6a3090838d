import CMoECPUKernels
import MoECore
import Testing

@testable import MoECPU

/// One tile call of every path this CPU supports against float64 arithmetic on the checkpoint layout, for every
/// token count a tile takes and block counts around the 4-block superblock; plus what a tile must not touch,
/// and E8M0's special scales (0 = 2^−127, 255 = NaN).
@Suite struct TileKernelTests {
    /// A tile's inputs: W [rows, K] MXFP4 (one expert), N tokens of bf16 activations, biases.
    struct Case {
        let rows: Int
        let columns: Int
        let tokens: Int
        let stack: MXFP4ExpertStack
        let activations: [UInt16]  // [N, K] bf16
        let bias: [Float]  // [rows]

        /// special: scale bytes to force; a block given scale 255 also gets all codes +1.0, so that a NaN can only
        /// come from the scale (never from inf·0 or inf − inf).
        init(rows: Int, columns: Int, tokens: Int, seed: UInt64, scaleBase: Int = 122, special: [(row: Int, block: Int, scale: UInt8)] = []) {
            self.rows = rows
            self.columns = columns
            self.tokens = tokens
            var rng = SeededGenerator(seed: seed)
            var blocks = [UInt8](repeating: 0, count: rows * columns / 2)
            rng.fill(&blocks)
            var scales = [UInt8](repeating: 0, count: rows * columns / 32)
            rng.fill(&scales)
            for i in scales.indices { scales[i] = UInt8(scaleBase + Int(scales[i] % 5)) }
            for s in special {
                scales[s.row * (columns / 32) + s.block] = s.scale
                if s.scale == 255 {
                    for i in 0..<16 { blocks[(s.row * (columns / 32) + s.block) * 16 + i] = 0x22 }
                }
            }
            stack = MXFP4ExpertStack(experts: 1, rows: rows, columns: columns, blocks: blocks, scales: scales)
            // Inputs of a NaN-scale block are positive, so its products share a sign (an inf scale would give inf).
            let positive = Set(special.filter { $0.scale == 255 }.map(\.block))
            activations = (0..<(tokens * columns)).map { i in
                let value = rng.normal()
                return BF16.bits(Float(positive.contains((i % columns) / 32) ? abs(value) + 0.01 : value))
            }
            bias = (0..<rows).map { _ in BF16.round(Float(rng.normal() * 0.1)) }
        }

        /// `other`'s first token `tokens` times (the same weights and biases).
        init(repeating other: Case, tokens: Int) {
            rows = other.rows
            columns = other.columns
            self.tokens = tokens
            stack = other.stack
            activations = Array(repeating: Array(other.activations[0..<other.columns]), count: tokens).flatMap { $0 }
            bias = other.bias
        }

        /// Σ_k W[row][k]·x[t][k] in float64.
        func dot(row: Int, token t: Int) -> Double {
            var sum = 0.0
            for k in 0..<columns {
                let block = row * (columns / 32) + k / 32
                let byte = stack.blocks[block * 16 + (k % 32) / 2]
                let code = k % 2 == 0 ? byte & 0xF : byte >> 4
                sum += Double(MXFP4.decode(code: code, scale: stack.scales[block])) * Double(BF16.float(activations[t * columns + k]))
            }
            return sum
        }

        /// The activations in a path's layout.
        func packed(_ layout: ActivationLayout) -> UnsafeMutablePointer<UInt8> {
            let rows = UnsafeMutablePointer<UnsafeMutablePointer<UInt16>?>.allocate(capacity: tokens)
            defer { rows.deallocate() }
            let copy = UnsafeMutablePointer<UInt16>.allocate(capacity: activations.count)
            defer { copy.deallocate() }
            copy.initialize(from: activations, count: activations.count)
            for t in 0..<tokens { rows[t] = copy + t * columns }
            let out = UnsafeMutablePointer<UInt8>.allocate(capacity: tokens * columns * layout.bytesPerValue)
            ActivationPacking.pack(rows: rows, count: tokens, columns: columns, layout: layout, into: out)
            return out
        }
    }

    /// One GEMM 2 tile call: `kernel` writes columns column ..< column + 16 of N output rows `width` wide, which start
    /// filled with `fill`; returns the rows.
    static func gemm2Rows(
        weights: UnsafePointer<UInt8>, activations: UnsafeRawPointer, bias: [Float], rowWeights: [Float], blocks: Int,
        tokens N: Int, width: Int = 16, column: Int = 0, fill: UInt16 = 0, kernel: (inout moekit_gemm2_tile) -> Void
    ) -> [UInt16] {
        var output = [UInt16](repeating: fill, count: N * width)
        output.withUnsafeMutableBufferPointer { out in
            let rows = (0..<N).map { Optional(out.baseAddress! + $0 * width) }
            rows.withUnsafeBufferPointer { rowPointers in
                bias.withUnsafeBufferPointer { bias in
                    rowWeights.withUnsafeBufferPointer { weights_ in
                        var tile = moekit_gemm2_tile(
                            weights: weights, bias: bias.baseAddress!, intermediate: activations,
                            row_weights: weights_.baseAddress!, output_rows: rowPointers.baseAddress!, column: Int32(column),
                            blocks: Int32(blocks), tokens: Int32(N))
                        kernel(&tile)
                    }
                }
            }
        }
        return output
    }

    /// The portable kernels' accumulators (one per test: tests run in parallel).
    static func makeScratch() -> UnsafeMutablePointer<SIMD16<Float>> {
        .allocate(capacity: PortableKernels.scratchVectors)
    }

    /// GEMM 2 on one row group: out[t][column + j] = bf16(w[t] · (W[j]·x[t] + b[j])), nothing else written.
    @Test(arguments: CPUKernelPath.supported, [1, 3, 4, 5, 9])
    func gemm2MatchesFloat64(path: CPUKernelPath, blocks: Int) {
        let scratch = Self.makeScratch()
        defer { scratch.deallocate() }
        Self.checkGEMM2(label: "\(path)", layout: path.activationLayout, blocks: blocks, tokens: 1...path.maxTileTokens) {
            path.gemm2(&$0, scratch: scratch)
        }
    }

    /// The AMX tile kernel at every tile size, with scales that fold into the weights and with one that does not
    /// (scale byte 1: each block's partial sums scaled in fp32).
    @Test(.enabled(if: CPUKernelPath.amxBF16.isSupported, "this CPU (or OS) has no AMX BF16"), arguments: [1, 3, 5, 9])
    func amxKernelAtEveryTileSize(blocks: Int) throws {
        Self.checkGEMM2(label: "amx tiles", layout: .bf16Rows, blocks: blocks, tokens: 1...Int(MOEKIT_AMX_TILE_TOKENS)) {
            moekit_amxbf16_gemm2(&$0)
        }
        Self.checkGEMM2(
            label: "amx tiles, scale 1", layout: .bf16Rows, blocks: blocks, tokens: 1...Int(MOEKIT_AMX_TILE_TOKENS),
            special: [(row: 5, block: blocks - 1, scale: 1)]
        ) { moekit_amxbf16_gemm2(&$0) }
    }

    /// The AMX kernel's fp32 sums (under the epilogue's bf16 rounding, which hides most one-ulp differences): every
    /// token's are the same bits in a tile of every size as alone, with scales that fold and with one that does not.
    @Test(.enabled(if: CPUKernelPath.amxBF16.isSupported, "this CPU (or OS) has no AMX BF16"))
    func amxSumsDoNotDependOnTheTileSize() throws {
        let blocks = 90, maxTokens = Int(MOEKIT_AMX_TILE_TOKENS), K = 32 * blocks  // K = gpt-oss's H
        for special in [[], [(row: 2, block: 3, scale: UInt8(1))]] {
            let c = Case(rows: 16, columns: K, tokens: maxTokens, seed: 78, special: special)
            let packed = PackedExpertStack.down(c.stack)  // kept alive: rowGroup points into it
            let weights = packed.rowGroup(expert: 0, group: 0)
            c.activations.withUnsafeBufferPointer { x in
                let alone = (0..<maxTokens).map { t -> [UInt32] in
                    var sums = [Float](repeating: .nan, count: 16)
                    moekit_amxbf16_row_group(weights, Int32(blocks), x.baseAddress! + t * K, 1, &sums)
                    return sums.map(\.bitPattern)
                }
                for N in 2...maxTokens {
                    var sums = [Float](repeating: .nan, count: N * 16)
                    moekit_amxbf16_row_group(weights, Int32(blocks), x.baseAddress!, Int32(N), &sums)
                    let differing = (0..<N).filter { t in sums[(16 * t)..<(16 * t + 16)].map(\.bitPattern) != alone[t] }
                    #expect(differing.isEmpty, "scales \(special.map(\.scale)), a tile of \(N): tokens \(differing) differ from alone")
                }
                // GEMM 1's gate and up row groups, taken together where both fold (rows 0–15 and 16–31 of a 32-row
                // expert; `special` makes the up group's scales not fold, so the pair goes one after the other).
                let gateUp = Case(rows: 32, columns: K, tokens: maxTokens, seed: 79, special: special.map { (row: 16 + $0.row, block: $0.block, scale: $0.scale) })
                let pairPacked = PackedExpertStack.down(gateUp.stack)
                let (gateWeights, upWeights) = (pairPacked.rowGroup(expert: 0, group: 0), pairPacked.rowGroup(expert: 0, group: 1))
                gateUp.activations.withUnsafeBufferPointer { x in
                    let pairAlone = (0..<maxTokens).map { t -> [UInt32] in
                        var gate = [Float](repeating: .nan, count: 16), up = gate
                        moekit_amxbf16_gate_up(gateWeights, upWeights, Int32(blocks), x.baseAddress! + t * K, 1, &gate, &up)
                        return (gate + up).map(\.bitPattern)
                    }
                    for N in 2...maxTokens {
                        var gate = [Float](repeating: .nan, count: N * 16), up = gate
                        moekit_amxbf16_gate_up(gateWeights, upWeights, Int32(blocks), x.baseAddress!, Int32(N), &gate, &up)
                        let differing = (0..<N).filter { t in
                            (Array(gate[(16 * t)..<(16 * t + 16)]) + Array(up[(16 * t)..<(16 * t + 16)])).map(\.bitPattern) != pairAlone[t]
                        }
                        #expect(differing.isEmpty, "gate/up, scales \(special.map(\.scale)), a tile of \(N): tokens \(differing) differ from alone")
                    }
                }
                withExtendedLifetime(pairPacked) {}
            }
            withExtendedLifetime(packed) {}
        }
    }

    /// A token's output bits do not depend on how many tokens share its tile, on any path (a served batch must equal
    /// its requests run alone): every row of a tile of every size the path takes must come out as the token does alone,
    /// with scales that fold and with one that does not (AMX). Outputs are bf16, which would hide the one-ulp
    /// differences of fp32 sums that another summation order gives, so every tile row holds the same token and the bias
    /// cancels its exact sum: what is left, and compared, is the fp32 sums' rounding.
    @Test(arguments: CPUKernelPath.supported)
    func aTokensBitsDoNotDependOnItsTileSize(path: CPUKernelPath) {
        let scratch = Self.makeScratch()
        defer { scratch.deallocate() }
        let blocks = 90, maxTokens = path.maxTileTokens
        for special in [[], [(row: 2, block: 3, scale: UInt8(1))]] {
            let c = Case(rows: 16, columns: 32 * blocks, tokens: 1, seed: 77, special: special)
            let packedWeights = PackedExpertStack.down(c.stack)
            let cancelling = (0..<16).map { Float(-c.dot(row: $0, token: 0)) }
            // The token in every row of a tile of N; returns the [N, 16] outputs.
            func outputs(_ N: Int) -> [UInt16] {
                let x = Case(repeating: c, tokens: N).packed(path.activationLayout)
                defer { x.deallocate() }
                return Self.gemm2Rows(
                    weights: packedWeights.rowGroup(expert: 0, group: 0), activations: UnsafeRawPointer(x), bias: cancelling,
                    rowWeights: [Float](repeating: 1, count: N), blocks: blocks, tokens: N
                ) { path.gemm2(&$0, scratch: scratch) }
            }
            let alone = outputs(1)
            for N in 2...maxTokens {
                let tile = outputs(N)
                let differing = (0..<N).filter { Array(tile[(16 * $0)..<(16 * $0 + 16)]) != alone }
                #expect(differing.isEmpty, "\(path) scales \(special.map(\.scale)): in a tile of \(N), rows \(differing) differ from the token alone")
            }
            withExtendedLifetime(packedWeights) {}
        }
    }

    /// Runs `kernel` on one GEMM 2 tile of each token count and compares with float64.
    static func checkGEMM2(
        label: String, layout: ActivationLayout, blocks: Int, tokens: ClosedRange<Int>,
        special: [(row: Int, block: Int, scale: UInt8)] = [], kernel: (inout moekit_gemm2_tile) -> Void
    ) {
        for N in tokens {
            let c = Case(rows: 16, columns: 32 * blocks, tokens: N, seed: UInt64(100 * blocks + N), special: special)
            let packedWeights = PackedExpertStack.down(c.stack)
            let x = c.packed(layout)
            defer { x.deallocate() }
            let width = 48, column = 16, sentinel: UInt16 = 0x7F81
            let rowWeights = (0..<N).map { Float($0 + 1) * 0.25 }
            let output = Self.gemm2Rows(
                weights: packedWeights.rowGroup(expert: 0, group: 0), activations: UnsafeRawPointer(x), bias: c.bias,
                rowWeights: rowWeights, blocks: blocks, tokens: N, width: width, column: column, fill: sentinel, kernel: kernel)
            var diff = 0.0, norm = 0.0
            for t in 0..<N {
                for h in 0..<width where h < column || h >= column + 16 {
                    #expect(output[t * width + h] == sentinel, "\(label) N=\(N): wrote column \(h) outside its tile")
                }
                for j in 0..<16 {
                    let expected = Double(rowWeights[t]) * (c.dot(row: j, token: t) + Double(c.bias[j]))
                    let got = Double(BF16.float(output[t * width + column + j]))
                    diff += (got - expected) * (got - expected)
                    norm += expected * expected
                    // bf16 rounding (2^-9 relative) plus fp32 sums over K.
                    #expect(abs(got - expected) <= 4e-3 * abs(expected) + 1e-4, "\(label) blocks=\(blocks) N=\(N) t=\(t) j=\(j): \(got) vs \(expected)")
                }
            }
            #expect((diff / norm).squareRoot() <= 3e-3, "\(label) blocks=\(blocks) N=\(N): rel L2 \((diff / norm).squareRoot())")
        }
    }

    /// GEMM 1 on one gate/up pair: a[t][j] = bf16(SwiGLU(gate_j·x + bg, up_j·x + bu)), written into the packed
    /// intermediate at inputs 16..31 of a 48-wide GEMM 2 input, nothing else.
    @Test(arguments: CPUKernelPath.supported, [1, 3, 5, 9])
    func gemm1MatchesFloat64(path: CPUKernelPath, blocks: Int) {
        let layout = path.activationLayout
        let scratch = Self.makeScratch()
        defer { scratch.deallocate() }
        for N in 1...path.maxTileTokens {
            // 32 checkpoint rows: gate_i = row 2i, up_i = row 2i+1 for i = 0..<16.
            let c = Case(rows: 32, columns: 32 * blocks, tokens: N, seed: UInt64(7000 + 100 * blocks + N), scaleBase: 123)
            let packedWeights = PackedExpertStack.gateUp(c.stack)
            let x = c.packed(layout)
            defer { x.deallocate() }
            let I = 48, i0 = 16
            let bytes = I * N * layout.bytesPerValue
            var intermediate = [UInt8](repeating: 0xA5, count: bytes)
            let gateBias = (0..<16).map { c.bias[2 * $0] }, upBias = (0..<16).map { c.bias[2 * $0 + 1] }
            let (alpha, limit) = (Float(1.702), Float(7))
            intermediate.withUnsafeMutableBytes { out in
                gateBias.withUnsafeBufferPointer { gb in
                    upBias.withUnsafeBufferPointer { ub in
                        var tile = moekit_gemm1_tile(
                            gate_weights: packedWeights.rowGroup(expert: 0, group: 0),
                            up_weights: packedWeights.rowGroup(expert: 0, group: 1),
                            gate_bias: gb.baseAddress!, up_bias: ub.baseAddress!, activations: UnsafeRawPointer(x),
                            intermediate: out.baseAddress! + layout.columnOffset(i0, tokens: N), blocks: Int32(blocks),
                            tokens: Int32(N), swiglu_alpha: alpha, swiglu_limit: limit, intermediate_stride: Int32(I))
                        path.gemm1(&tile, scratch: scratch)
                    }
                }
            }
            // Read a[t][i] back from the layout; bytes outside inputs 16..31 keep their fill.
            func value(_ t: Int, _ i: Int) -> Float {
                switch layout {
                case .bf16Pairs:
                    let offset = ((i / 2) * N + t) * 4 + (i % 2) * 2
                    return BF16.float(UInt16(intermediate[offset]) | UInt16(intermediate[offset + 1]) << 8)
                case .float32:
                    let offset = (i * N + t) * 4
                    let bits = (0..<4).reduce(UInt32(0)) { $0 | UInt32(intermediate[offset + $1]) << (8 * UInt32($1)) }
                    return Float(bitPattern: bits)
                case .bf16Rows:
                    let offset = (t * I + i) * 2
                    return BF16.float(UInt16(intermediate[offset]) | UInt16(intermediate[offset + 1]) << 8)
                }
            }
            // The bytes of inputs i0 ..< i0 + 16: a run per input (column layouts) or per token (rows).
            func inTile(_ offset: Int) -> Bool {
                switch layout {
                case .bf16Pairs, .float32:
                    return offset >= i0 * N * layout.bytesPerValue && offset < (i0 + 16) * N * layout.bytesPerValue
                case .bf16Rows:
                    return (i0 * 2..<(i0 + 16) * 2).contains(offset % (I * 2))
                }
            }
            for offset in 0..<bytes where !inTile(offset) {
                #expect(intermediate[offset] == 0xA5, "\(path) N=\(N): wrote byte \(offset) outside its tile")
            }
            for t in 0..<N {
                for j in 0..<16 {
                    let gate = c.dot(row: 2 * j, token: t) + Double(gateBias[j])
                    let up = c.dot(row: 2 * j + 1, token: t) + Double(upBias[j])
                    let expected = SwiGLU.apply(gate: gate, up: up, alpha: Double(alpha), limit: Double(limit))
                    let got = Double(value(t, i0 + j))
                    #expect(BF16.round(Float(got)) == Float(got), "\(path): a is not a bf16 value")
                    #expect(abs(got - expected) <= 5e-3 * abs(expected) + 2e-4, "\(path) blocks=\(blocks) N=\(N) t=\(t) j=\(j): \(got) vs \(expected)")
                }
            }
        }
    }

    /// Scale byte 255 (NaN) poisons exactly its row's outputs; scale 0 (2^−127) contributes its tiny value.
    @Test(arguments: CPUKernelPath.supported)
    func specialScales(path: CPUKernelPath) {
        let N = 3, blocks = 5
        let scratch = Self.makeScratch()
        defer { scratch.deallocate() }
        let c = Case(rows: 16, columns: 32 * blocks, tokens: N, seed: 5, special: [(row: 3, block: 4, scale: 255), (row: 7, block: 0, scale: 0), (row: 7, block: 1, scale: 0)])
        let packedWeights = PackedExpertStack.down(c.stack)
        let x = c.packed(path.activationLayout)
        defer { x.deallocate() }
        let output = Self.gemm2Rows(
            weights: packedWeights.rowGroup(expert: 0, group: 0), activations: UnsafeRawPointer(x), bias: c.bias,
            rowWeights: [Float](repeating: 1, count: N), blocks: blocks, tokens: N
        ) { path.gemm2(&$0, scratch: scratch) }
        for t in 0..<N {
            for j in 0..<16 {
                let got = BF16.float(output[t * 16 + j])
                if j == 3 {
                    #expect(got.isNaN, "\(path): a NaN scale must give NaN, got \(got)")
                } else {
                    let expected = c.dot(row: j, token: t) + Double(c.bias[j])
                    #expect(abs(Double(got) - expected) <= 4e-3 * abs(expected) + 1e-4, "\(path) t=\(t) j=\(j): \(got) vs \(expected)")
                }
            }
        }
    }
}
