#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MoECore
import SafeTensors
@testable import MoECheckpoint

/// A fresh directory under /tmp, removed (recursively) by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/checkpoint-tests-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { Self.removeTree(path) }

    static func removeTree(_ path: String) {
        if FileSystem.kind(of: path) == .directory {
            for name in (try? FileSystem.listDirectory(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}

/// Small shapes that still have every structure: 2 layers, H and I of 2 and 1 MXFP4 blocks.
let smallConfig = MoEConfig(hidden: 64, intermediate: 32, experts: 4, topK: 2, layers: 2)

/// Rewrites a safetensors file, letting `change` replace (or drop, by returning nil) each tensor.
func rewrite(
    _ path: String,
    _ change: (TensorInfo, [UInt8]) -> (dtype: SafeTensorsDType, shape: [Int], bytes: [UInt8])?
) throws {
    let file = try SafeTensorsFile(path: path)
    var writer = SafeTensorsWriter(metadata: file.metadata)
    for info in file.tensors {
        if let replacement = change(info, try file.bytes(info.name)) {
            try writer.add(info.name, dtype: replacement.dtype, shape: replacement.shape, bytes: replacement.bytes)
        }
    }
    try writer.write(to: path)
}

/// Runs `body`, expecting a `CheckpointError`; returns it.
func checkpointError(_ body: () throws -> Void) -> CheckpointError? {
    do {
        try body()
        return nil
    } catch let error as CheckpointError {
        return error
    } catch {
        return nil
    }
}
