import MoECore
import Testing

@testable import MoEServer

/// The table-driven answer writer against its reference, `ForwardJSON.encode`: byte-identical on every result.
@Suite struct ForwardJSONAnswerTests {
    static func expectSame(_ result: MoEForwardResult, tokens: Int, hidden: Int, topK: Int, _ comment: String) {
        let fast = ForwardJSONAnswer.encode(result, tokens: tokens, hidden: hidden, topK: topK)
        let reference = Array(ForwardJSON.encode(result, tokens: tokens, hidden: hidden, topK: topK).utf8)
        #expect(fast == reference, "answers differ: \(comment)")
    }

    /// Every bf16 pattern's table entry is the reference text of the float it widens to (NaN and infinities: null).
    @Test func tableHoldsTheReferenceTextOfEveryPattern() {
        let table = BF16Text.table
        var wrong: [Int] = []
        for pattern in 0..<65536 {
            let value = Float(bitPattern: UInt32(pattern) << 16)
            let entry = Array(table.text[Int(table.starts[pattern])..<Int(table.starts[pattern + 1])])
            if entry != Array(ForwardJSON.floatText(value).utf8) { wrong.append(pattern) }
        }
        #expect(wrong.isEmpty, "\(wrong.count) patterns differ, first \(wrong.prefix(4))")
        #expect(String(decoding: table.text[Int(table.starts[0x3F80])..<Int(table.starts[0x3F81])], as: UTF8.self) == "1.0")
    }

    /// Random results: bf16 hidden states (the layer's outputs), router weights that are not bf16, and the awkward
    /// values — ±0, subnormals, the largest finite, and values one ulp off a bf16 (which take the reference path).
    @Test(arguments: [(1, 8, 1), (3, 16, 4), (7, 40, 2), (1, 1, 1), (0, 8, 4)])
    func matchesTheReference(tokens: Int, hidden: Int, topK: Int) {
        var rng = SeededGenerator(seed: UInt64(tokens * 1000 + hidden * 10 + topK))
        let awkward: [Float] = [0, -0.0, .leastNonzeroMagnitude, -.leastNormalMagnitude, .greatestFiniteMagnitude,
                                Float(bitPattern: 0x7F7F_0000), Float(bitPattern: 0x0001_0000), 1, -2.5, 1e-30,
                                Float(bitPattern: 0x3F80_0001), Float(bitPattern: 0xBF80_FFFF)]
        let states = (0..<(tokens * hidden)).map { i -> Float in
            if i % 5 == 0 { return awkward[Int.random(in: 0..<awkward.count, using: &rng)] }
            let value = Float.random(in: -100...100, using: &rng) * Float(sign: .plus, exponent: Int.random(in: -20...20, using: &rng), significand: 1)
            return Float(bitPattern: value.bitPattern & 0xFFFF_0000)
        }
        let ids = (0..<(tokens * topK)).map { _ in Int32.random(in: -1..<128, using: &rng) }
        let weights = (0..<(tokens * topK)).map { _ in Float.random(in: 0...1, using: &rng) }
        Self.expectSame(MoEForwardResult(hidden: states, topkIds: ids, topkWeights: weights), tokens: tokens, hidden: hidden, topK: topK,
                   "T=\(tokens) H=\(hidden) k=\(topK)")
    }
}
