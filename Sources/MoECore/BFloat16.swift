/// bfloat16 stored as its bit pattern (`UInt16`): the top half of an IEEE float32.
public enum BF16 {
    /// float32 → bf16 bits, round to nearest, ties to even. NaN stays NaN (quiet, sign kept); ±Inf stays ±Inf;
    /// finite values that round past the largest bf16 become ±Inf, as IEEE rounding does.
    @inlinable @inline(__always)
    public static func bits(_ value: Float) -> UInt16 {
        let raw = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: raw >> 16) | 0x0040 }
        let lsb = (raw >> 16) & 1
        return UInt16(truncatingIfNeeded: (raw &+ 0x7FFF &+ lsb) >> 16)
    }

    /// Whether `value` stays finite when rounded to bf16: false for ±Inf and NaN, and for finite float32 values
    /// beyond bf16's largest (about ±3.39e38), which round to ±Inf. Inputs are rounded to bf16 on entry, so this is
    /// what "finite" means for a hidden state.
    @inlinable @inline(__always)
    public static func isFiniteAfterRounding(_ value: Float) -> Bool { bits(value) & 0x7F80 != 0x7F80 }

    /// The message part that explains why `value` counts as non-finite (it may be a finite float32).
    public static func nonFiniteReason(_ value: Float) -> String {
        value.isFinite ? "\(value), beyond bf16's largest value ±3.39e38, rounds to infinity" : "\(value)"
    }

    /// bf16 bits → float32 (exact).
    @inlinable @inline(__always)
    public static func float(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Rounds a float32 to the nearest bf16 value, returned as float32.
    @inlinable @inline(__always)
    public static func round(_ value: Float) -> Float { float(bits(value)) }

    /// Rounds every element in place.
    @inlinable
    public static func roundAll(_ values: inout [Float]) {
        for i in values.indices { values[i] = round(values[i]) }
    }
}
