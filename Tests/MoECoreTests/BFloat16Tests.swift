import Testing

@testable import MoECore

@Suite struct BFloat16Tests {
    /// Independent oracle: round by comparing the two bf16 neighbours in float64.
    static func oracle(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let down = UInt16(bits >> 16)
        let lower = Double(Float(bitPattern: UInt32(down) << 16))
        let upper = Double(Float(bitPattern: UInt32(down &+ 1) << 16))
        let value = Double(x)
        let dLower = abs(value - lower), dUpper = abs(upper - value)
        if dLower < dUpper { return down }
        if dUpper < dLower { return down &+ 1 }
        return down & 1 == 0 ? down : down &+ 1
    }

    @Test func roundsToNearestEvenOnRandomFloats() {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<200_000 {
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            guard x.isFinite, abs(x) < Float.greatestFiniteMagnitude / 2 else { continue }
            #expect(BF16.bits(x) == Self.oracle(x), "x=\(x) bits=\(String(x.bitPattern, radix: 16))")
        }
    }

    @Test func tiesGoToEven() {
        // 1 + 2^-8 lies exactly between 1 and 1 + 2^-7: the even neighbour is 1.
        #expect(BF16.float(BF16.bits(1 + 0x1p-8)) == 1)
        // 1 + 3·2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
        #expect(BF16.float(BF16.bits(1 + 3 * 0x1p-8)) == 1 + 0x1p-6)
        #expect(BF16.float(BF16.bits(-(1 + 0x1p-8))) == -1)
    }

    @Test func specialValuesArePreserved() {
        #expect(BF16.float(BF16.bits(.infinity)) == .infinity)
        #expect(BF16.float(BF16.bits(-.infinity)) == -.infinity)
        #expect(BF16.float(BF16.bits(.nan)).isNaN)
        #expect(BF16.float(BF16.bits(-Float.nan)).isNaN)
        // A signalling NaN whose payload sits only in the low half must stay NaN, not become Inf.
        #expect(BF16.float(BF16.bits(Float(bitPattern: 0x7F80_0001))).isNaN)
        #expect(BF16.bits(-0.0) == 0x8000)
        // The largest float rounds past the largest bf16: IEEE gives +Inf.
        #expect(BF16.float(BF16.bits(.greatestFiniteMagnitude)) == .infinity)
    }

    @Test func everyBF16RoundTrips() {
        for bits in UInt16.min...UInt16.max {
            let f = BF16.float(bits)
            if f.isNaN { #expect(BF16.float(BF16.bits(f)).isNaN) } else { #expect(BF16.bits(f) == bits) }
        }
    }
}
