/// The OCP MXFP4 format used by gpt-oss experts (DESIGN §2).
///
/// Along the reduction dimension every 32 values form a block: 16 bytes of 4-bit E2M1 codes and one E8M0
/// scale byte. Element 2i of a block is the low nibble of byte i, element 2i+1 the high nibble.
/// Code → value: 0...7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign. Value = code value × 2^(scale − 127);
/// scale 255 is NaN.
public enum MXFP4 {
    public static let blockSize = 32
    public static let bytesPerBlock = 16
    public static let nanScale: UInt8 = 255

    /// The 16 code values (unscaled).
    public static let codeValues: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]

    /// 2^(scale − 127) as a float32 (subnormal for scale 0), NaN for scale 255.
    @inlinable
    public static func scaleValue(_ scale: UInt8) -> Float {
        if scale == nanScale { return .nan }
        return Float(sign: .plus, exponent: Int(scale) - 127, significand: 1)
    }

    /// Decodes one code with its block scale, exactly.
    @inlinable
    public static func decode(code: UInt8, scale: UInt8) -> Float {
        codeValues[Int(code & 0xF)] * scaleValue(scale)
    }

    /// Decodes one block of 32 values (16 packed bytes + scale) into `output[0..<32]`.
    @inlinable
    public static func decodeBlock(
        _ packed: UnsafePointer<UInt8>, scale: UInt8, into output: UnsafeMutablePointer<Float>
    ) {
        let factor = scaleValue(scale)
        for i in 0..<bytesPerBlock {
            let byte = packed[i]
            output[2 * i] = codeValues[Int(byte & 0xF)] * factor
            output[2 * i + 1] = codeValues[Int(byte >> 4)] * factor
        }
    }

    /// The scale byte the quantiser picks for a block whose largest magnitude is `maxMagnitude`: the smallest
    /// power of two 2^e with maxMagnitude / 2^e ≤ 6 (the exponent rounded up), clamped to the E8M0 range.
    /// An all-zero block gets scale 127 (2^0).
    public static func quantizationScale(maxMagnitude: Float) -> UInt8 {
        precondition(maxMagnitude.isFinite && maxMagnitude >= 0, "quantising a non-finite block")
        if maxMagnitude == 0 { return 127 }
        // 6 = 1.5 × 2^2, so m/2^e ≤ 6 ⇔ e ≥ log2(m/6). Start from the binade and correct exactly.
        var e = Int(maxMagnitude.exponent) - 2
        while e > -127 && maxMagnitude <= 6 * Float(sign: .plus, exponent: e - 1, significand: 1) { e -= 1 }
        while maxMagnitude > 6 * Float(sign: .plus, exponent: e, significand: 1) { e += 1 }
        return UInt8(clamping: max(0, min(254, e + 127)))
    }

    /// Nearest E2M1 code of a value already divided by its block scale; ties go to the even code
    /// (the one whose mantissa bit is 0). Magnitudes past 6 saturate to 6. Zero and −0 give code 0.
    public static func nearestCode(_ scaled: Float) -> UInt8 {
        let magnitude = abs(scaled)
        // Midpoints between neighbouring magnitudes and which side a tie goes to (to the even code).
        let code: UInt8
        switch magnitude {
        case ...0.25: code = 0
        case ..<0.75: code = 1
        case ...1.25: code = 2
        case ..<1.75: code = 3
        case ...2.5: code = 4
        case ..<3.5: code = 5
        case ...5: code = 6
        default: code = 7
        }
        return (scaled < 0 && code != 0) ? code | 8 : code
    }

    /// Quantises one block of 32 values into 16 packed bytes, returning the scale byte.
    public static func quantizeBlock(_ values: UnsafePointer<Float>, into packed: UnsafeMutablePointer<UInt8>) -> UInt8 {
        var maxMagnitude: Float = 0
        for i in 0..<blockSize { maxMagnitude = max(maxMagnitude, abs(values[i])) }
        let scale = quantizationScale(maxMagnitude: maxMagnitude)
        let inverse = 1 / scaleValue(scale)
        for i in 0..<bytesPerBlock {
            let low = nearestCode(values[2 * i] * inverse)
            let high = nearestCode(values[2 * i + 1] * inverse)
            packed[i] = low | (high << 4)
        }
        return scale
    }
}

/// A row-major MXFP4 matrix, blocked along its columns (the reduction dimension).
///
/// blocks: [rows, cols/32, 16] u8; scales: [rows, cols/32] u8. A stack of E such matrices (one per expert)
/// is stored contiguously in `MoELayerWeights`.
public struct MXFP4Matrix: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    public var blocks: [UInt8]
    public var scales: [UInt8]

    public var blocksPerRow: Int { columns / MXFP4.blockSize }

    public init(rows: Int, columns: Int, blocks: [UInt8], scales: [UInt8]) {
        precondition(columns % MXFP4.blockSize == 0, "MXFP4 columns must be a multiple of 32")
        precondition(blocks.count == rows * columns / 2 && scales.count == rows * columns / MXFP4.blockSize)
        self.rows = rows
        self.columns = columns
        self.blocks = blocks
        self.scales = scales
    }

    /// Quantises a row-major float matrix [rows, columns].
    public init(quantizing values: [Float], rows: Int, columns: Int) {
        precondition(values.count == rows * columns && columns % MXFP4.blockSize == 0)
        let blockCount = rows * columns / MXFP4.blockSize
        var blocks = [UInt8](repeating: 0, count: blockCount * MXFP4.bytesPerBlock)
        var scales = [UInt8](repeating: 0, count: blockCount)
        values.withUnsafeBufferPointer { v in
            blocks.withUnsafeMutableBufferPointer { b in
                for block in 0..<blockCount {
                    scales[block] = MXFP4.quantizeBlock(
                        v.baseAddress! + block * MXFP4.blockSize, into: b.baseAddress! + block * MXFP4.bytesPerBlock)
                }
            }
        }
        self.init(rows: rows, columns: columns, blocks: blocks, scales: scales)
    }

    /// Decodes the whole matrix to float32, row-major.
    public func decoded() -> [Float] {
        var out = [Float](repeating: 0, count: rows * columns)
        let blockCount = rows * blocksPerRow
        blocks.withUnsafeBufferPointer { b in
            out.withUnsafeMutableBufferPointer { o in
                for block in 0..<blockCount {
                    MXFP4.decodeBlock(
                        b.baseAddress! + block * MXFP4.bytesPerBlock, scale: scales[block],
                        into: o.baseAddress! + block * MXFP4.blockSize)
                }
            }
        }
        return out
    }
}
