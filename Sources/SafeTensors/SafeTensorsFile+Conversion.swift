/// Typed copies of tensors. Each checks the dtype first and throws `wrongDType` naming what it accepts.
extension SafeTensorsFile {
    /// BF16, F16 or F32 → [Float] (exact: every value of those types is a Float).
    public func floats(_ name: String) throws(SafeTensorsError) -> [Float] {
        let tensor = try info(name, dtypes: [.bf16, .f16, .f32])
        let raw = rawBytes(tensor), count = tensor.elementCount
        switch tensor.dtype {
        case .f32: return ElementCodec.decode(raw, count: count) { Float(bitPattern: UInt32(littleEndian: $0)) }
        case .bf16: return ElementCodec.decode(raw, count: count) { ElementCodec.bf16ToFloat(UInt16(littleEndian: $0)) }
        default: return ElementCodec.decode(raw, count: count) { ElementCodec.f16ToFloat(UInt16(littleEndian: $0)) }
        }
    }

    /// F64 → [Double]; BF16, F16 and F32 are widened exactly.
    public func doubles(_ name: String) throws(SafeTensorsError) -> [Double] {
        let tensor = try info(name, dtypes: [.f64, .f32, .bf16, .f16])
        if tensor.dtype != .f64 { return try floats(name).map(Double.init) }
        return ElementCodec.decode(rawBytes(tensor), count: tensor.elementCount) {
            Double(bitPattern: UInt64(littleEndian: $0))
        }
    }

    /// I32 → [Int32].
    public func int32s(_ name: String) throws(SafeTensorsError) -> [Int32] {
        let tensor = try info(name, dtypes: [.i32])
        return ElementCodec.decode(rawBytes(tensor), count: tensor.elementCount) { Int32(bitPattern: UInt32(littleEndian: $0)) }
    }

    /// U8 → [UInt8] (for raw bytes of any dtype, use `bytes(_:)`).
    public func uint8s(_ name: String) throws(SafeTensorsError) -> [UInt8] {
        [UInt8](rawBytes(try info(name, dtypes: [.u8])))
    }
}

/// Element conversions shared by the reader and the writer.
enum ElementCodec {
    /// Reads `count` little-endian words of type `Word` from possibly unaligned bytes.
    @inline(__always)
    static func decode<Word: FixedWidthInteger, Element>(
        _ raw: UnsafeRawBufferPointer, count: Int, _ convert: (Word) -> Element
    ) -> [Element] {
        precondition(raw.count == count * MemoryLayout<Word>.size)
        guard let base = raw.baseAddress else { return [] }
        return [Element](unsafeUninitializedCapacity: count) { out, initialized in
            for i in 0..<count {
                (out.baseAddress! + i).initialize(to: convert(base.loadUnaligned(fromByteOffset: i * MemoryLayout<Word>.size, as: Word.self)))
            }
            initialized = count
        }
    }

    /// Little-endian bytes of `values` converted to words.
    static func encode<Word: FixedWidthInteger, Element>(_ values: [Element], _ convert: (Element) -> Word) -> [UInt8] {
        let size = MemoryLayout<Word>.size
        var bytes = [UInt8](repeating: 0, count: values.count * size)
        bytes.withUnsafeMutableBytes { raw in
            for (i, value) in values.enumerated() {
                raw.storeBytes(of: convert(value).littleEndian, toByteOffset: i * size, as: Word.self)
            }
        }
        return bytes
    }

    @inline(__always)
    static func bf16ToFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// Round to nearest, ties to even; NaN stays a (quiet) NaN, overflow becomes ±∞.
    @inline(__always)
    static func floatToBF16(_ value: Float) -> UInt16 {
        let raw = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: raw >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: (raw &+ 0x7FFF &+ ((raw >> 16) & 1)) >> 16)
    }

    /// IEEE half → float, exact (subnormals, ±∞ and NaN payloads included).
    @inline(__always)
    static func f16ToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F, mantissa = UInt32(h & 0x3FF)
        switch exponent {
        case 0:
            // ±0 or subnormal: mantissa × 2^-24, exact in float32.
            let magnitude = Float(mantissa) * 0x1p-24
            return Float(bitPattern: sign | magnitude.bitPattern)
        case 0x1F: return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13)
        default: return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
        }
    }
}
