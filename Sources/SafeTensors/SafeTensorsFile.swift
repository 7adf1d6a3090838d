#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif

/// A safetensors file mapped read-only into memory. The whole header is validated in `init` (see
/// `SafeTensorsHeader`), so every tensor it lists lies inside the mapping; the mapping lives until the object is
/// released. Tensor bytes are only touched (paged in) when an accessor reads them.
///
/// Byte order: safetensors is little-endian; conversions read it as such on any host.
public final class SafeTensorsFile: @unchecked Sendable {
    /// The path as given.
    public let path: String
    public let fileSize: Int
    /// N, the JSON header's length in bytes (padding included).
    public let headerLength: Int
    public let metadata: [String: String]
    /// Every tensor, in header order.
    public let tensors: [TensorInfo]
    private let indexByName: [String: Int]
    /// Unsafe 1: the read-only mapping of the whole file; immutable, valid until `deinit`, so sharing the object
    /// across threads is safe (hence `@unchecked Sendable`).
    private let mapping: UnsafeRawPointer
    private var dataStart: Int { 8 + headerLength }

    public init(path: String) throws(SafeTensorsError) {
        self.path = path
        func systemFailure(_ error: SystemCallError) -> SafeTensorsError {
            SafeTensorsError(file: path, .systemCall(name: error.call, reason: error.reason))
        }
        let fd: Int32
        do {
            fd = try FileSystem.openRead(path)
        } catch {
            throw SafeTensorsError(file: path, .cannotOpen(reason: error.reason))
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw SafeTensorsError(file: path, .cannotOpen(reason: String(cString: strerror(errno)))) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw SafeTensorsError(file: path, .notRegularFile) }
        let size = Int(info.st_size)
        guard size >= 8 else { throw SafeTensorsError(file: path, .tooSmall(size: size)) }
        fileSize = size

        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw systemFailure(SystemCallError(call: "mmap", path: path, errno: errno))
        }
        let base = UnsafeRawPointer(mapped)
        do throws(SafeTensorsError) {
            let declared = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
            guard declared <= UInt64(size - 8) else {
                throw SafeTensorsError(file: path, .headerPastEnd(headerLength: declared, fileSize: size))
            }
            guard declared <= UInt64(SafeTensorsHeader.maximumLength) else {
                throw SafeTensorsError(file: path, .headerTooLarge(headerLength: declared, limit: SafeTensorsHeader.maximumLength))
            }
            let length = Int(declared)
            let header = try SafeTensorsHeader(
                json: UnsafeRawBufferPointer(start: base + 8, count: length), dataSize: size - 8 - length, file: path)
            headerLength = length
            metadata = header.metadata
            tensors = header.tensors
        } catch {
            munmap(mapped, size)
            throw error
        }
        mapping = base
        var index: [String: Int] = [:]
        for (i, tensor) in tensors.enumerated() { index[tensor.name] = i }
        indexByName = index
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: mapping), fileSize)
    }

    public var tensorNames: [String] { tensors.map(\.name) }

    public func contains(_ name: String) -> Bool { indexByName[name] != nil }

    /// The tensor's validated header entry; throws `tensorNotFound`.
    public func info(_ name: String) throws(SafeTensorsError) -> TensorInfo {
        guard let i = indexByName[name] else { throw SafeTensorsError(file: path, tensor: name, .tensorNotFound) }
        return tensors[i]
    }

    /// Calls `body` with the tensor's bytes inside the mapping (valid only during the call). Throws
    /// `tensorNotFound` or what `body` throws.
    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try body(rawBytes(try info(name)))
    }

    /// The tensor's raw bytes (any dtype), copied out of the mapping.
    public func bytes(_ name: String) throws(SafeTensorsError) -> [UInt8] {
        let tensor = try info(name)
        return [UInt8](rawBytes(tensor))
    }

    /// Throws `wrongDType` unless the tensor's dtype is one of `accepted`.
    @discardableResult
    public func info(_ name: String, dtypes accepted: [SafeTensorsDType]) throws(SafeTensorsError) -> TensorInfo {
        let tensor = try info(name)
        guard accepted.contains(tensor.dtype) else {
            throw SafeTensorsError(file: path, tensor: name, .wrongDType(expected: accepted, found: tensor.dtype))
        }
        return tensor
    }

    func rawBytes(_ tensor: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: mapping + dataStart + tensor.dataRange.lowerBound, count: tensor.byteCount)
    }
}
