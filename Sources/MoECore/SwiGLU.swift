#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif

/// gpt-oss clamped SwiGLU (DESIGN §2). Rows of W1 are interleaved: h[2i] is gate_i, h[2i+1] is up_i.
///   g = min(gate, limit); u = clamp(up, −limit, limit); a = g · sigmoid(alpha · g) · (u + 1)
public enum SwiGLU {
    @inlinable @inline(__always)
    public static func apply(gate: Float, up: Float, alpha: Float, limit: Float) -> Float {
        let g = min(gate, limit)
        let u = min(max(up, -limit), limit)
        return g / (1 + expf(-alpha * g)) * (u + 1)
    }

    @inlinable @inline(__always)
    public static func apply(gate: Double, up: Double, alpha: Double, limit: Double) -> Double {
        let g = min(gate, limit)
        let u = min(max(up, -limit), limit)
        return g / (1 + exp(-alpha * g)) * (u + 1)
    }
}
