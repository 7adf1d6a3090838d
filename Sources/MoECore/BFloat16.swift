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
