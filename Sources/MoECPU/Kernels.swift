import MoECore

/// Small portable helpers (Swift SIMD; the compiler lowers them to the host's vector unit).
enum Kernels {
    /// Σ a[i]·b[i] in fp32 with 16 independent lanes, then a fixed-order horizontal sum: the same order for a
    /// given count on every call, so results are reproducible.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD16<Float>(repeating: 0)
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 16 <= count {
            let va = ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            let vb = rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            acc.addProduct(va, vb)
            i += 16
        }
        var sum = acc.sum()
        while i < count {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }
}
