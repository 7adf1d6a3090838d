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
