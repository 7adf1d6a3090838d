import Testing

@testable import MoECore

@Suite struct MXFP4Tests {
    /// Every code × every scale, against the format's definition written out independently.
    @Test func decodesEveryCodeAndScale() {
        let magnitudes: [Double] = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
        for scale in 0...255 {
            for code in 0..<16 {
                let value = MXFP4.decode(code: UInt8(code), scale: UInt8(scale))
                if scale == 255 {
                    #expect(value.isNaN, "scale 255 must decode to NaN (code \(code))")
                    continue
                }
                var expected = magnitudes[code & 7]
                for _ in 0..<abs(scale - 127) { expected = scale > 127 ? expected * 2 : expected / 2 }
                if code & 8 != 0 { expected = -expected }
                // Past float32's range (scale ≥ 254 with large codes) the float32 decode is ±Inf.
                #expect(value == Float(expected), "code \(code) scale \(scale): \(value) vs \(expected)")
                #expect((code & 8 != 0) == (value.sign == .minus), "sign of code \(code)")
            }
        }
    }

    @Test func blockNibbleOrderIsLowThenHigh() {
        var packed = [UInt8](repeating: 0, count: 16)
        packed[0] = 0x72  // element 0 = code 2 (1.0), element 1 = code 7 (6.0)
        packed[15] = 0x9F  // element 30 = code 15 (−6), element 31 = code 9 (−0.5)
        var out = [Float](repeating: .nan, count: 32)
        packed.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { MXFP4.decodeBlock(p.baseAddress!, scale: 128, into: $0.baseAddress!) }
        }
        #expect(out[0] == 2 && out[1] == 12 && out[30] == -12 && out[31] == -1)
        #expect(out[2..<30].allSatisfy { $0 == 0 })
    }

    @Test func quantiserRoundsTheScaleExponentUp() {
        #expect(MXFP4.quantizationScale(maxMagnitude: 6) == 127)       // 6/2^0 = 6 fits
        #expect(MXFP4.quantizationScale(maxMagnitude: 6.0001) == 128)  // needs 2^1
        #expect(MXFP4.quantizationScale(maxMagnitude: 3) == 126)       // 3/2^-1 = 6
        #expect(MXFP4.quantizationScale(maxMagnitude: 12) == 128)
        #expect(MXFP4.quantizationScale(maxMagnitude: 0.75) == 124)    // 0.75/2^-3 = 6
        #expect(MXFP4.quantizationScale(maxMagnitude: 0) == 127)
        #expect(MXFP4.quantizationScale(maxMagnitude: 1e38) == 251)    // 1e38/6 ≈ 2^123.6 → 2^124
        #expect(MXFP4.quantizationScale(maxMagnitude: 1e-45) == 0)
        // Property: the chosen scale brings max to ≤ 6 and the next smaller one would not.
        var rng = SeededGenerator(seed: 3)
        for _ in 0..<10_000 {
            let m = Float(rng.unit() * 1000 + 1e-6)
            let s = MXFP4.quantizationScale(maxMagnitude: m)
            #expect(m / MXFP4.scaleValue(s) <= 6)
            #expect(m / MXFP4.scaleValue(s - 1) > 6)
        }
    }

    @Test func nearestCodeTiesToEven() {
        let cases: [(Float, UInt8)] = [
            (0, 0), (0.25, 0), (0.26, 1), (0.75, 2), (0.74, 1), (1.25, 2), (1.26, 3), (1.75, 4), (2.5, 4),
            (2.51, 5), (3.5, 6), (3.49, 5), (5, 6), (5.01, 7), (7, 7), (100, 7), (-0.25, 0), (-0.75, 10), (-5, 14),
            (-6, 15), (-0.1, 0),
        ]
        for (value, code) in cases { #expect(MXFP4.nearestCode(value) == code, "value \(value)") }
    }

    @Test func quantiseThenDecodeIsTheNearestRepresentable() {
        var rng = SeededGenerator(seed: 11)
        let values = (0..<(32 * 64)).map { _ in Float(rng.normal() * 3) }
        let matrix = MXFP4Matrix(quantizing: values, rows: 64, columns: 32)
        let decoded = matrix.decoded()
        for row in 0..<64 {
            let scale = MXFP4.scaleValue(matrix.scales[row])
            for i in 0..<32 {
                let v = values[row * 32 + i]
                // No representable value in this block is strictly closer than the decoded one.
                let best = MXFP4.codeValues.map { abs($0 * scale - v) }.min()!
                #expect(abs(decoded[row * 32 + i] - v) == best, "row \(row) element \(i)")
            }
        }
        // Decoding what was encoded and encoding again is stable.
        let again = MXFP4Matrix(quantizing: decoded, rows: 64, columns: 32)
        #expect(again.decoded() == decoded)
    }
}
