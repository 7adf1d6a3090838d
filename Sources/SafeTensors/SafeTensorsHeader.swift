/// One tensor's entry in a safetensors header, validated.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    /// Byte range within the data area (which starts right after the header).
    public let dataRange: Range<Int>

    public init(name: String, dtype: SafeTensorsDType, shape: [Int], dataRange: Range<Int>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataRange = dataRange
    }

    /// product(shape); 1 for a scalar (shape []).
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { dataRange.count }
}

/// The parsed and validated JSON header of a safetensors file:
///
///     [u64 LE header length N][N bytes of JSON, padded with spaces][data area]
///
/// The JSON maps tensor names to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the
/// data area) and may hold `"__metadata__": {string: string}`. Public so that bytes that are not a file (an
/// HTTP request body) are validated by the same rules.
public struct SafeTensorsHeader {
    /// The safetensors reference implementation's limit; anything larger is a corrupt or foreign file.
    public static let maximumLength = 100_000_000
    static let metadataKey = "__metadata__"

    public var metadata: [String: String]
    /// In header order.
    public var tensors: [TensorInfo]

    /// Validates every rule before any tensor is used: JSON object, metadata of strings, known dtypes,
    /// non-negative shapes, 0 ≤ begin ≤ end ≤ dataSize, end − begin = product(shape) × dtype size, no overlaps.
    public init(json header: UnsafeRawBufferPointer, dataSize: Int, file: String) throws(SafeTensorsError) {
        let root: JSONValue
        do {
            root = try JSONValue.parse(header)
        } catch {
            throw SafeTensorsError(file: file, .invalidJSON(offset: error.offset, reason: error.reason))
        }
        guard let object = root.objectValue else {
            throw SafeTensorsError(file: file, .headerNotObject(found: root.kindName))
        }
        metadata = [:]
        tensors = []
        for (name, value) in object.pairs {
            if name == Self.metadataKey {
                metadata = try Self.parseMetadata(value, file: file)
            } else {
                tensors.append(try Self.parseTensor(name: name, value, dataSize: dataSize, file: file))
            }
        }
        try Self.checkOverlaps(tensors, file: file)
    }

    static func parseMetadata(_ value: JSONValue, file: String) throws(SafeTensorsError) -> [String: String] {
        guard let object = value.objectValue else {
            throw SafeTensorsError(file: file, .invalidMetadata(reason: "is a \(value.kindName), not an object"))
        }
        var metadata: [String: String] = [:]
        for (key, entry) in object.pairs {
            guard let string = entry.stringValue else {
                throw SafeTensorsError(
                    file: file, .invalidMetadata(reason: "entry \"\(key)\" is a \(entry.kindName), not a string"))
            }
            metadata[key] = string
        }
        return metadata
    }

    static func parseTensor(
        name: String, _ value: JSONValue, dataSize: Int, file: String
    ) throws(SafeTensorsError) -> TensorInfo {
        func fail(_ problem: SafeTensorsError.Problem) -> SafeTensorsError {
            SafeTensorsError(file: file, tensor: name, problem)
        }
        guard let entry = value.objectValue else {
            throw fail(.invalidEntry(reason: "entry is a \(value.kindName), not an object"))
        }
        guard let dtypeValue = entry["dtype"] else { throw fail(.invalidEntry(reason: "entry has no \"dtype\"")) }
        guard let dtypeName = dtypeValue.stringValue else {
            throw fail(.invalidEntry(reason: "\"dtype\" is a \(dtypeValue.kindName), not a string"))
        }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else { throw fail(.unknownDType(dtypeName)) }

        guard let shapeValue = entry["shape"] else { throw fail(.invalidEntry(reason: "entry has no \"shape\"")) }
        guard let shapeArray = shapeValue.arrayValue else {
            throw fail(.invalidShape(reason: "\"shape\" is a \(shapeValue.kindName), not an array"))
        }
        var shape: [Int] = []
        var elements = 1
        for (axis, dimension) in shapeArray.enumerated() {
            guard let size = dimension.intValue, size >= 0 else {
                throw fail(.invalidShape(reason: "dimension \(axis) is \(dimension.serialized()), not an integer ≥ 0"))
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: size)
            guard !overflow else { throw fail(.invalidShape(reason: "element count of \(shapeArray.count)-D shape overflows")) }
            shape.append(size)
            elements = product
        }
        let (expectedBytes, overflow) = elements.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else { throw fail(.invalidShape(reason: "byte count of shape \(shape) overflows")) }

        guard let offsetsValue = entry["data_offsets"] else {
            throw fail(.invalidEntry(reason: "entry has no \"data_offsets\""))
        }
        guard let offsets = offsetsValue.arrayValue, offsets.count == 2 else {
            throw fail(.invalidOffsets(reason: "\(offsetsValue.serialized()) is not a [begin, end] pair"))
        }
        guard let begin = offsets[0].intValue, let end = offsets[1].intValue, begin >= 0, end >= 0 else {
            throw fail(.invalidOffsets(reason: "\(offsetsValue.serialized()) are not integers ≥ 0"))
        }
        guard begin <= end else { throw fail(.invalidOffsets(reason: "begin \(begin) > end \(end)")) }
        guard end - begin == expectedBytes else {
            throw fail(.byteCountMismatch(shape: shape, dtype: dtype, expected: expectedBytes, found: end - begin))
        }
        guard end <= dataSize else { throw fail(.outsideDataArea(begin: begin, end: end, dataSize: dataSize)) }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
    }

    /// Sorted by start, every non-empty range must start at or after the previous one's end.
    static func checkOverlaps(_ tensors: [TensorInfo], file: String) throws(SafeTensorsError) {
        let sorted = tensors.filter { !$0.dataRange.isEmpty }.sorted {
            ($0.dataRange.lowerBound, $0.name) < ($1.dataRange.lowerBound, $1.name)
        }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where next.dataRange.lowerBound < previous.dataRange.upperBound {
            throw SafeTensorsError(
                file: file, tensor: next.name,
                .overlap(with: previous.name, range: next.dataRange, otherRange: previous.dataRange))
        }
    }
}
