/// A tensor to be written: its name, dtype and shape (the byte count follows from them).
public struct TensorSpec: Sendable, Equatable {
    public var name: String
    public var dtype: SafeTensorsDType
    public var shape: [Int]

    public init(name: String, dtype: SafeTensorsDType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// product(shape) × dtype size, or nil when a dimension is negative or the count overflows.
    public var byteCount: Int? {
        var count = dtype.size
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            count = product
        }
        return count
    }
}

/// Writes a safetensors file tensor by tensor, so a file larger than memory can be produced one piece at a
/// time. The header (all specs, data laid out back to back in the given order) is written first; then
/// `append` must be called once per tensor, in that order, with exactly its bytes; then `finish()`.
///
/// The file is written under a temporary name and renamed into place by `finish()`; if anything fails, or the
/// writer is dropped before `finish()`, the temporary file is removed and no partial file is left at `path`.
public final class SafeTensorsStreamWriter {
    public let path: String
    public let specs: [TensorSpec]
    private let byteCounts: [Int]
    private var next = 0
    private let file: AtomicFile

    public init(path: String, tensors: [TensorSpec], metadata: [String: String] = [:]) throws(SafeTensorsError) {
        self.path = path
        specs = tensors
        byteCounts = try Self.validate(tensors, path: path)
        let header = Self.header(specs: tensors, byteCounts: byteCounts, metadata: metadata)
        do {
            file = try AtomicFile(path: path)
            try file.write(header)
        } catch {
            throw SafeTensorsError(file: path, .systemCall(name: error.call, reason: error.reason))
        }
    }

    /// Writes the next tensor's bytes; `name` must be the next spec's name and the byte count must match.
    public func append(_ name: String, bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard next < specs.count, specs[next].name == name else {
            let expected = next < specs.count ? "'\(specs[next].name)'" : "no more tensors"
            throw SafeTensorsError(
                file: path, tensor: name, .invalidTensor(reason: "written out of order: expected \(expected)"))
        }
        guard bytes.count == byteCounts[next] else {
            let spec = specs[next]
            throw SafeTensorsError(
                file: path, tensor: name,
                .invalidTensor(reason: "\(bytes.count) bytes given; shape \(spec.shape) × \(spec.dtype) needs \(byteCounts[next])"))
        }
        do {
            try file.write(bytes)
        } catch {
            throw SafeTensorsError(file: path, tensor: name, .systemCall(name: error.call, reason: error.reason))
        }
        next += 1
    }

    public func append(_ name: String, bytes: [UInt8]) throws(SafeTensorsError) {
        let failure = bytes.withUnsafeBytes { raw -> SafeTensorsError? in
            do throws(SafeTensorsError) { try append(name, bytes: raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// Checks every tensor was written, then flushes and renames the file into place.
    public func finish() throws(SafeTensorsError) {
        guard next == specs.count else {
            throw SafeTensorsError(
                file: path, tensor: specs[next].name, .invalidTensor(reason: "never written; the file was not created"))
        }
        do {
            try file.commit()
        } catch {
            throw SafeTensorsError(file: path, .systemCall(name: error.call, reason: error.reason))
        }
    }

    static func validate(_ specs: [TensorSpec], path: String) throws(SafeTensorsError) -> [Int] {
        var seen = Set<String>()
        var counts: [Int] = []
        for spec in specs {
            func fail(_ reason: String) -> SafeTensorsError {
                SafeTensorsError(file: path, tensor: spec.name, .invalidTensor(reason: reason))
            }
            guard spec.name != SafeTensorsHeader.metadataKey else { throw fail("'__metadata__' is reserved for metadata") }
            guard seen.insert(spec.name).inserted else { throw fail("named twice") }
            guard let count = spec.byteCount else { throw fail("shape \(spec.shape) has a negative dimension or is too large") }
            counts.append(count)
        }
        return counts
    }

    /// u64 LE length + JSON, padded with spaces so the data area starts at a multiple of 8 bytes.
    static func header(specs: [TensorSpec], byteCounts: [Int], metadata: [String: String]) -> [UInt8] {
        var object = JSONObject()
        if !metadata.isEmpty {
            object[SafeTensorsHeader.metadataKey] = .object(
                JSONObject(metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))
        }
        var offset = 0
        for (spec, count) in zip(specs, byteCounts) {
            object[spec.name] = .object(JSONObject([
                ("dtype", .string(spec.dtype.rawValue)),
                ("shape", .array(spec.shape.map { .number(JSONNumber($0)) })),
                ("data_offsets", .array([.number(JSONNumber(offset)), .number(JSONNumber(offset + count))])),
            ]))
            offset += count
        }
        var json = Array(JSONValue.object(object).serialized().utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var bytes = [UInt8](repeating: 0, count: 8)
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(json.count).littleEndian, as: UInt64.self) }
        return bytes + json
    }
}

/// Collects named tensors in memory and writes them as one safetensors file (atomically, see
/// `SafeTensorsStreamWriter`). Reading the file back gives exactly the same dtypes, shapes and bytes.
public struct SafeTensorsWriter {
    public var metadata: [String: String]
    public private(set) var specs: [TensorSpec] = []
    private var data: [[UInt8]] = []

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    /// Adds a tensor of any dtype from its little-endian bytes.
    public mutating func add(_ name: String, dtype: SafeTensorsDType, shape: [Int], bytes: [UInt8]) throws(SafeTensorsError) {
        let spec = TensorSpec(name: name, dtype: dtype, shape: shape)
        var all = specs
        all.append(spec)
        let counts = try SafeTensorsStreamWriter.validate(all, path: "(tensors being written)")
        guard counts.last == bytes.count else {
            throw SafeTensorsError(
                file: "(tensors being written)", tensor: name,
                .invalidTensor(reason: "\(bytes.count) bytes given; shape \(shape) × \(dtype) needs \(counts.last!)"))
        }
        specs = all
        data.append(bytes)
    }

    /// Adds float values as F32 or BF16 (rounded to nearest, ties to even).
    public mutating func add(_ name: String, floats: [Float], shape: [Int], dtype: SafeTensorsDType = .f32) throws(SafeTensorsError) {
        let bytes: [UInt8]
        switch dtype {
        case .f32: bytes = ElementCodec.encode(floats) { $0.bitPattern }
        case .bf16: bytes = ElementCodec.encode(floats) { ElementCodec.floatToBF16($0) }
        default:
            throw SafeTensorsError(
                file: "(tensors being written)", tensor: name,
                .invalidTensor(reason: "floats can be written as F32 or BF16, not \(dtype); pass raw bytes instead"))
        }
        try add(name, dtype: dtype, shape: shape, bytes: bytes)
    }

    /// Adds F64 values.
    public mutating func add(_ name: String, doubles: [Double], shape: [Int]) throws(SafeTensorsError) {
        try add(name, dtype: .f64, shape: shape, bytes: ElementCodec.encode(doubles) { $0.bitPattern })
    }

    /// Adds I32 values.
    public mutating func add(_ name: String, int32s: [Int32], shape: [Int]) throws(SafeTensorsError) {
        try add(name, dtype: .i32, shape: shape, bytes: ElementCodec.encode(int32s) { UInt32(bitPattern: $0) })
    }

    /// Writes the file atomically.
    public func write(to path: String) throws(SafeTensorsError) {
        let writer = try SafeTensorsStreamWriter(path: path, tensors: specs, metadata: metadata)
        for (spec, bytes) in zip(specs, data) { try writer.append(spec.name, bytes: bytes) }
        try writer.finish()
    }
}
