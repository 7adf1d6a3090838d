/// Seeded, platform-independent random numbers (xoshiro256**, seeded through SplitMix64), so synthetic models
/// and test inputs are identical on every machine for a seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var s = seed
        func splitMix() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }

    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(unit(), 1e-300), u2 = unit()
        return (-2 * Double.logOf(u1)).squareRoot() * Double.cosOf(2 * .pi * u2)
    }

    /// Fills a byte array with random bytes, eight at a time.
    public mutating func fill(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { raw in
            let words = raw.count / 8
            let w = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
            for i in 0..<words { w[i] = next() }
            for i in (words * 8)..<raw.count { raw[i] = UInt8(truncatingIfNeeded: next()) }
        }
    }

    /// `count` bf16-representable normal values with standard deviation `std`.
    public mutating func bf16Normals(_ count: Int, std: Double) -> [Float] {
        (0..<count).map { _ in BF16.round(Float(normal() * std)) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif
extension Double {
    @usableFromInline static func logOf(_ x: Double) -> Double { log(x) }
    @usableFromInline static func cosOf(_ x: Double) -> Double { cos(x) }
}
