/// Why reading or writing a safetensors file failed: the file, the tensor (when one is involved), the problem,
/// and (in `description`) what to do about it.
public struct SafeTensorsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The path as given by the caller.
    public var file: String
    /// The tensor the problem is about, if any.
    public var tensor: String?
    public var problem: Problem

    public enum Problem: Sendable, Equatable {
        /// `open`/`stat` failed (missing file, permissions); `reason` is the system's message.
        case cannotOpen(reason: String)
        case notRegularFile
        /// Fewer than the 8 bytes of the header length.
        case tooSmall(size: Int)
        /// The header length (first 8 bytes, u64 little-endian) runs past the end of the file.
        case headerPastEnd(headerLength: UInt64, fileSize: Int)
        /// The header length is larger than any real header (a corrupt or foreign file).
        case headerTooLarge(headerLength: UInt64, limit: Int)
        case invalidJSON(offset: Int, reason: String)
        /// The header parsed, but is not a JSON object (`found` names what it is).
        case headerNotObject(found: String)
        /// `__metadata__` is not an object of strings.
        case invalidMetadata(reason: String)
        /// A tensor entry is not an object with `dtype`, `shape`, `data_offsets` of the right JSON types.
        case invalidEntry(reason: String)
        case unknownDType(String)
        case invalidShape(reason: String)
        /// `data_offsets` is not [begin, end] with 0 ≤ begin ≤ end.
        case invalidOffsets(reason: String)
        /// end − begin ≠ product(shape) × dtype size.
        case byteCountMismatch(shape: [Int], dtype: SafeTensorsDType, expected: Int, found: Int)
        /// The byte range ends past the data area (file size − 8 − header length).
        case outsideDataArea(begin: Int, end: Int, dataSize: Int)
        case overlap(with: String, range: Range<Int>, otherRange: Range<Int>)
        case tensorNotFound
        case wrongDType(expected: [SafeTensorsDType], found: SafeTensorsDType)
        /// A system call failed while mapping or writing the file.
        case systemCall(name: String, reason: String)
        /// The writer was given inconsistent tensors (its caller's data, not a file problem).
        case invalidTensor(reason: String)
    }

    public init(file: String, tensor: String? = nil, _ problem: Problem) {
        self.file = file
        self.tensor = tensor
        self.problem = problem
    }

    public var description: String {
        let subject = tensor.map { "\(file): tensor '\($0)'" } ?? file
        return "\(subject): \(problemDescription)"
    }

    private static let corrupt = "the file is corrupt or was not written as safetensors; re-export or re-download it"

    var problemDescription: String {
        switch problem {
        case .cannotOpen(let reason): "cannot open: \(reason); check the path and its permissions"
        case .notRegularFile: "not a regular file; pass the path of a .safetensors file"
        case .tooSmall(let size):
            "only \(size) bytes, less than the 8-byte header length; the file is truncated, re-export or re-download it"
        case .headerPastEnd(let length, let size):
            "header length \(length) runs past the end of the \(size)-byte file; the file is truncated or corrupt, re-export or re-download it"
        case .headerTooLarge(let length, let limit):
            "header length \(length) exceeds the \(limit)-byte limit; \(Self.corrupt)"
        case .invalidJSON(let offset, let reason):
            "header is not valid JSON (\(reason) at header byte \(offset)); \(Self.corrupt)"
        case .headerNotObject(let found): "header is a JSON \(found), not an object; \(Self.corrupt)"
        case .invalidMetadata(let reason): "__metadata__ \(reason); it must map strings to strings, fix the writer"
        case .invalidEntry(let reason): "\(reason); \(Self.corrupt)"
        case .unknownDType(let name):
            "unknown dtype \"\(name)\"; supported: \(SafeTensorsDType.supportedNames). Convert the tensor to one of them"
        case .invalidShape(let reason): "invalid shape: \(reason); \(Self.corrupt)"
        case .invalidOffsets(let reason): "invalid data_offsets: \(reason); \(Self.corrupt)"
        case .byteCountMismatch(let shape, let dtype, let expected, let found):
            "shape \(shape) × \(dtype) (\(dtype.size) bytes) needs \(expected) bytes but data_offsets span \(found); \(Self.corrupt)"
        case .outsideDataArea(let begin, let end, let dataSize):
            "data_offsets [\(begin), \(end)] run past the \(dataSize)-byte data area; the file is truncated or corrupt, re-export or re-download it"
        case .overlap(let other, let range, let otherRange):
            "bytes [\(range.lowerBound), \(range.upperBound)) overlap tensor '\(other)' at [\(otherRange.lowerBound), \(otherRange.upperBound)); \(Self.corrupt)"
        case .tensorNotFound: "no such tensor in the file; check the tensor name (and which file should hold it)"
        case .wrongDType(let expected, let found):
            "dtype is \(found), expected \(expected.map(\.rawValue).joined(separator: " or ")); convert the tensor"
        case .systemCall(let name, let reason): "\(name) failed: \(reason)"
        case .invalidTensor(let reason): reason
        }
    }
}
