import MoECore
import Testing

@testable import MoECUDA

/// A random stack with every code and a spread of scale bytes, including the edge cases of the decoder:
/// 0 (subnormal scale), 128 (last fast-path scale), 129 (first two-multiply scale) and 254.
private func randomStack(experts: Int, rows: Int, columns: Int, seed: UInt64) -> MXFP4ExpertStack {
    var rng = SeededGenerator(seed: seed)
    var blocks = [UInt8](repeating: 0, count: experts * rows * columns / 2)
    rng.fill(&blocks)
    var scales = [UInt8](repeating: 0, count: experts * rows * columns / 32)
    let special: [UInt8] = [0, 1, 120, 127, 128, 129, 130, 200, 254]
    for i in scales.indices { scales[i] = special[Int(rng.next() % UInt64(special.count))] }
    return MXFP4ExpertStack(experts: experts, rows: rows, columns: columns, blocks: blocks, scales: scales)
}

private func checkDecodes(_ stack: MXFP4ExpertStack, interleaved: Bool) {
    let packed = RepackedExpertStack(stack, gateUpInterleaved: interleaved)
    var mismatches = 0
    for e in 0..<stack.experts {
        let matrix = stack.matrix(expert: e).decoded()
        for row in 0..<stack.rows {
            for k in 0..<stack.columns {
                let expected = matrix[row * stack.columns + k]
                let got = packed.decodedValue(expert: e, row: row, column: k)
                if !(got == expected || (got.isNaN && expected.isNaN)) { mismatches += 1 }
            }
        }
    }
    #expect(mismatches == 0, "\(mismatches) values decode differently (interleaved: \(interleaved))")
}

@Test func repackedWeightsDecodeToTheCheckpointValues() {
    checkDecodes(randomStack(experts: 2, rows: 32, columns: 256, seed: 1), interleaved: false)
    checkDecodes(randomStack(experts: 2, rows: 64, columns: 128, seed: 2), interleaved: true)
}

@Test func reductionWidthsThatAreNotMultiplesOf64ArePaddedWithZeros() {
    // K = 96: one real block in the second chunk, then padding.
    let stack = randomStack(experts: 1, rows: 16, columns: 96, seed: 3)
    checkDecodes(stack, interleaved: false)
    let packed = RepackedExpertStack(stack, gateUpInterleaved: false)
    #expect(packed.chunks == 2)
    #expect(packed.scaleGroups == 1)
    for row in 0..<16 { for k in 96..<128 { #expect(packed.decodedValue(expert: 0, row: row, column: k) == 0) } }
}

@Test func nanScalesDecodeToNaN() {
    var stack = randomStack(experts: 1, rows: 16, columns: 64, seed: 4)
    stack.scales[5] = 255
    let packed = RepackedExpertStack(stack, gateUpInterleaved: false)
    let row = 5 / 2, block = 5 % 2
    #expect(packed.decodedValue(expert: 0, row: row, column: block * 32 + 3).isNaN)
}

@Test func gateAndUpRowsOfOnePairShareALane() {
    // Position p < 8 of group g is gate_(8g+p) = checkpoint row 2(8g+p); position p + 8 is up = row 2(8g+p)+1.
    for g in 0..<3 {
        for p in 0..<8 {
            #expect(RepackedExpertStack.sourceRow(group: g, position: p, interleaved: true) == 2 * (8 * g + p))
            #expect(RepackedExpertStack.sourceRow(group: g, position: p + 8, interleaved: true) == 2 * (8 * g + p) + 1)
        }
    }
    #expect(RepackedExpertStack.sourceRow(group: 2, position: 5, interleaved: false) == 37)
}

@Test func theBitPlacementUsesEveryBitOfAWordOnce() {
    var used: [Int] = []
    for q in 0..<4 { used += RepackedExpertStack.bitPositions[q].low + RepackedExpertStack.bitPositions[q].high }
    #expect(used.sorted() == Array(0..<32))
}

/// mxfp4_unpack_word (moe_common.cuh), written out again: output q of word w, as a bf16x2 bit pattern.
private func kernelUnpack(_ w: UInt32, _ q: Int) -> UInt32 {
    let m: UInt32 = 0x81C0_81C0
    switch q {
    case 0: return w & m
    case 1: return (w << 6) & m
    case 2: return ((w << 10) | (w >> 22)) & m  // __funnelshift_l(w, w, 10)
    default: return ((w << 4) & 0x8180_8180) | ((w >> 4) & 0x0040_0040)
    }
}

/// The bf16 pattern the kernel must produce for E2M1 code `code`: sign at bit 15, exponent bits at 8 and 7,
/// mantissa at 6 — which reads as (code value) · 2^-126.
private func expectedPattern(_ code: Int) -> UInt16 {
    UInt16((code >> 3) & 1) << 15 | UInt16((code >> 2) & 1) << 8 | UInt16((code >> 1) & 1) << 7 | UInt16(code & 1) << 6
}

@Test func theExpectedPatternsAreTheCodeValuesTimes2ToTheMinus126() {
    for code in 0..<16 {
        let value = Double(BF16.float(expectedPattern(code))) * 0x1p126
        #expect(value == Double(MXFP4.codeValues[code]) && value.sign == MXFP4.codeValues[code].sign, "code \(code)")
    }
}

/// Packs the four source bytes of a word (byte q = output q) through the placement table.
private func packWord(_ bytes: [Int]) -> UInt32 {
    var word: UInt32 = 0
    for q in 0..<4 { word |= RepackedExpertStack.placementTable[q * 256 + bytes[q]] }
    return word
}

@Test func theKernelUnpackInvertsThePlacementForEveryByte() {
    // Every byte value in every output position, next to random bytes in the other three, round trips:
    // bytes → placementTable → word → kernel unpack → the bf16 patterns of both nibbles, for all four outputs.
    var rng = SeededGenerator(seed: 11)
    var failures = 0
    for q in 0..<4 {
        for byte in 0..<256 {
            for _ in 0..<8 {
                var bytes = (0..<4).map { _ in Int(rng.next() % 256) }
                bytes[q] = byte
                let word = packWord(bytes)
                for output in 0..<4 {
                    let raw = kernelUnpack(word, output)
                    let expected = UInt32(expectedPattern(bytes[output] & 15)) | UInt32(expectedPattern(bytes[output] >> 4)) << 16
                    if raw != expected { failures += 1 }
                }
            }
        }
    }
    #expect(failures == 0, "\(failures) unpacked outputs differ from the packed codes")
}

@Test func everyWordIsAPackingAndUnpacksToItsCodes() {
    // The placement is a bijection between 4 bytes and 32 bits, so any word is some packing: read its codes
    // back from bitPositions, re-pack them to the same word, and check the kernel unpack against them.
    var rng = SeededGenerator(seed: 12)
    var failures = 0
    for trial in 0..<20_000 {
        let word = trial < 32 ? UInt32(1) << UInt32(trial) : UInt32(truncatingIfNeeded: rng.next())
        var bytes = [Int](repeating: 0, count: 4)
        for q in 0..<4 {
            let positions = RepackedExpertStack.bitPositions[q]
            for bit in 0..<4 {
                if word >> UInt32(positions.low[bit]) & 1 != 0 { bytes[q] |= 1 << bit }
                if word >> UInt32(positions.high[bit]) & 1 != 0 { bytes[q] |= 16 << bit }
            }
        }
        if packWord(bytes) != word { failures += 1 }
        for q in 0..<4 {
            let expected = UInt32(expectedPattern(bytes[q] & 15)) | UInt32(expectedPattern(bytes[q] >> 4)) << 16
            if kernelUnpack(word, q) != expected { failures += 1 }
        }
    }
    #expect(failures == 0, "\(failures) words do not round trip")
}

/// An expert-parallel rank repacks only its experts: expert i of the result must be the full repack's expert
/// selection[i], byte for byte, biases included, for a selection with gaps (as round-robin gives).
@Test func aSelectionOfExpertsRepacksExactlyThoseExperts() throws {
    let config = MoEConfig(hidden: 64, intermediate: 96, experts: 6, topK: 2)
    let weights = try SyntheticModel.layer(config: config, seed: 11)
    let full = RepackedLayer(weights)
    let selection = [1, 4, 5]
    let part = RepackedLayer(weights, selection: selection)
    #expect(full.experts == Array(0..<6))
    #expect(part.experts == selection)
    #expect(part.routerWeight == full.routerWeight, "the router scores every expert on every rank")
    #expect(part.routerBias == full.routerBias)
    for (stackPart, stackFull) in [(part.gateUp, full.gateUp), (part.down, full.down)] {
        #expect(stackPart.experts == selection.count)
        let codesPerExpert = stackFull.codes.count / 6, scalesPerExpert = stackFull.scales.count / 6
        #expect(stackPart.codes.count == selection.count * codesPerExpert)
        for (i, e) in selection.enumerated() {
            #expect(stackPart.codes[(i * codesPerExpert)..<((i + 1) * codesPerExpert)] == stackFull.codes[(e * codesPerExpert)..<((e + 1) * codesPerExpert)])
            #expect(stackPart.scales[(i * scalesPerExpert)..<((i + 1) * scalesPerExpert)] == stackFull.scales[(e * scalesPerExpert)..<((e + 1) * scalesPerExpert)])
        }
    }
    let (gateWidth, downWidth) = (2 * config.intermediate, config.hidden)
    #expect(part.gateUpBias == selection.flatMap { Array(weights.gateUpBias[($0 * gateWidth)..<(($0 + 1) * gateWidth)]) })
    #expect(part.downBias == selection.flatMap { Array(weights.downBias[($0 * downWidth)..<(($0 + 1) * downWidth)]) })
    // And the held experts decode to the checkpoint's values through the kernel's decode model.
    let matrix = weights.down.matrix(expert: 4).decoded()
    for row in stride(from: 0, to: config.hidden, by: 7) {
        for k in 0..<config.intermediate { #expect(part.down.decodedValue(expert: 1, row: row, column: k) == matrix[row * config.intermediate + k]) }
    }
    // A rank with no experts holds none (and uploads nothing).
    let none = RepackedLayer(weights, selection: [])
    #expect(none.gateUp.codes.isEmpty && none.down.scales.isEmpty && none.gateUpBias.isEmpty && none.downBias.isEmpty)
}
