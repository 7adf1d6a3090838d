import CCUDA

/// The arguments of one cuTensorMapEncodeTiled call for a 2D tensor: dimensions innermost first, the row pitch in
/// bytes, the box the kernel copies. Pure arithmetic, tested on CPU.
struct TensorMapEncoding: Hashable, Sendable {
    var dataType: Int32
    var elementBytes: Int
    var address: UInt64
    var dimensions: [UInt64]
    var rowPitch: UInt64
    var box: [UInt32]
    var swizzle: Int32

    // The driver's enum values (cuda.h: CUtensorMapDataType, CUtensorMapSwizzle, CUtensorMapL2promotion).
    static let uint64: Int32 = 4, bfloat16: Int32 = 9
    static let noSwizzle: Int32 = 0, swizzle128: Int32 = 3
    static let l2Promotion256: Int32 = 3

    /// What the driver would reject, checked first so the error says which map and why: a 16-byte-aligned address and
    /// pitch (under 2^40), boxes of 1…256 elements whose rows are a multiple of 16 bytes (at most 128 with the 128-byte
    /// swizzle), dimensions of 1…2^32.
    var problem: String? {
        if address % 16 != 0 { return "its address \(address) is not 16-byte aligned" }
        if rowPitch % 16 != 0 || rowPitch >= 1 << 40 { return "its row pitch of \(rowPitch) bytes is not a multiple of 16 below 2^40" }
        if dimensions.contains(where: { $0 == 0 || $0 > 1 << 32 }) { return "its dimensions \(dimensions) are not all in 1…2^32" }
        if box.contains(where: { $0 == 0 || $0 > 256 }) { return "its box \(box) is not within 1…256 elements a side" }
        let boxRow = Int(box[0]) * elementBytes
        if boxRow % 16 != 0 { return "its box rows of \(boxRow) bytes are not a multiple of 16" }
        if swizzle == Self.swizzle128 && boxRow > 128 { return "its box rows of \(boxRow) bytes exceed the 128-byte swizzle" }
        return nil
    }
}

/// The tensor maps of a registered GEMM with tensor copies (GemmVariant.usesTensorCopies, moe_experts.cu's
/// ChunkCopies::issue_tensor): MoEGemmTensorMaps in device memory, which MoEGemmParams.tensorMaps points at.
enum GemmTensorMaps {
    /// codes, scales and (for rows in sorted order, inputIndex 0) the input, for a GEMM with parameters `p` over
    /// `heldExperts` experts' weights and `inputRows` rows of input; `rowGroupsPerBlock` is the kernel's block height
    /// in 16-row groups, `boxRows` the rows of an activation box (GemmVariant.activationBoxRows).
    static func encodings(
        _ p: MoEGemmParams, heldExperts: Int, inputRows: Int, rowGroupsPerBlock: Int, boxRows: Int = 64
    ) -> [TensorMapEncoding?] {
        let rows = UInt64(heldExperts) * UInt64(p.groups)
        let groups = UInt32(rowGroupsPerBlock)
        // One row per 16-row group: its chunks' 512 code bytes, its scale groups' 128 bytes, as u64 elements.
        let codes = TensorMapEncoding(
            dataType: TensorMapEncoding.uint64, elementBytes: 8, address: p.codes, dimensions: [UInt64(p.chunks) * 64, rows],
            rowPitch: UInt64(p.chunks) * 512, box: [64, groups], swizzle: TensorMapEncoding.noSwizzle)
        let scales = TensorMapEncoding(
            dataType: TensorMapEncoding.uint64, elementBytes: 8, address: p.scales,
            dimensions: [UInt64(p.scaleGroups) * 16, rows], rowPitch: UInt64(p.scaleGroups) * 128, box: [16, groups],
            swizzle: TensorMapEncoding.noSwizzle)
        guard p.inputIndex == 0 else { return [codes, scales, nil] }
        let input = TensorMapEncoding(
            dataType: TensorMapEncoding.bfloat16, elementBytes: 2, address: p.input, dimensions: [UInt64(p.k), UInt64(inputRows)],
            rowPitch: UInt64(p.inputStride) * 2, box: [64, UInt32(boxRows)], swizzle: TensorMapEncoding.swizzle128)
        return [codes, scales, input]
    }

    /// The maps `variant` copies by (nil where it has none): its block height and activation box.
    static func encodings(_ p: MoEGemmParams, variant: GemmVariant, heldExperts: Int, inputRows: Int) -> [TensorMapEncoding?]? {
        guard variant.usesTensorCopies else { return nil }
        return encodings(
            p, heldExperts: heldExperts, inputRows: inputRows, rowGroupsPerBlock: variant.rowGroupsPerBlock,
            boxRows: variant.activationBoxRows)
    }

    /// Encodes the maps of `encodings` (nil: left zero, never read) and uploads them as one MoEGemmTensorMaps.
    static func upload(_ encodings: [TensorMapEncoding?], device: CUDADevice) throws(CUDAError) -> DeviceBuffer {
        let mapBytes = MemoryLayout<MoETensorMap>.stride
        precondition(encodings.count * mapBytes == MemoryLayout<MoEGemmTensorMaps>.stride, "codes, scales, input")
        var maps = [UInt64](repeating: 0, count: encodings.count * mapBytes / 8)
        let names = ["codes", "scales", "input"]
        for (index, encoding) in encodings.enumerated() {
            guard let e = encoding else { continue }
            if let problem = e.problem {
                throw .invalidArgument("the \(names[index]) tensor map cannot be encoded: \(problem)")
            }
            guard let encode = device.driver.api.cuTensorMapEncodeTiled else {
                throw .missingEntryPoint("cuTensorMapEncodeTiled (tensor copies need a CUDA 12 driver; choose another MOE_CUDA_GEMM)")
            }
            let strides: [UInt64] = [e.rowPitch]
            let elementStrides: [UInt32] = [1, 1]
            let result = maps.withUnsafeMutableBytes { raw in
                encode(
                    raw.baseAddress! + index * mapBytes, e.dataType, 2, UnsafeMutableRawPointer(bitPattern: UInt(e.address)),
                    e.dimensions, strides, e.box, elementStrides, 0, e.swizzle, TensorMapEncoding.l2Promotion256, 0)
            }
            try device.driver.call("cuTensorMapEncodeTiled", result)
        }
        let buffer = try DeviceBuffer(device: device, byteCount: maps.count * 8)
        try buffer.upload(maps)
        return buffer
    }
}

/// Device copies of tensor maps by what they encode, so a new layer's weights or a new buffer get their own.
final class TensorMapCache {
    private var made: [[TensorMapEncoding?]: DeviceBuffer] = [:]

    /// The maps of `encodings`, uploaded on first use: it allocates, so never first inside a graph capture.
    func maps(_ encodings: [TensorMapEncoding?], device: CUDADevice) throws(CUDAError) -> DeviceBuffer {
        if let maps = made[encodings] { return maps }
        let maps = try GemmTensorMaps.upload(encodings, device: device)
        made[encodings] = maps
        return maps
    }

    /// The maps of `encodings` if already made.
    func existing(_ encodings: [TensorMapEncoding?]) -> DeviceBuffer? { made[encodings] }
}
