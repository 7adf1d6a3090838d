#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import SafeTensors

/// A fresh directory under the system temp directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/safetensors-tests-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { try? FileSystem.removeFlatDirectory(path) }
}

/// Writes a file by hand: u64 LE `declaredLength` (default: the header's length), the header text, then `data`.
func writeRawFile(_ path: String, header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) throws {
    let json = Array(header.utf8)
    var bytes = [UInt8](repeating: 0, count: 8)
    let length = declaredLength ?? UInt64(json.count)
    for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(i))) }
    try FileSystem.writeFileAtomically(path, bytes: bytes + json + data)
}

/// Opens `path`, expecting a `SafeTensorsError`; returns it (nil when the file opened).
func openError(_ path: String) -> SafeTensorsError? {
    do {
        _ = try SafeTensorsFile(path: path)
        return nil
    } catch {
        return error
    }
}
