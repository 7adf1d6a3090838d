#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif

/// A failed system call: which call, on which path, and the system's reason.
public struct SystemCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The C function's name ("open", "mmap", ...).
    public var call: String
    public var path: String
    public var errno: Int32

    public var reason: String { String(cString: strerror(errno)) }
    public var description: String { "\(call) '\(path)': \(reason)" }
}

/// The file operations the safetensors and checkpoint code needs. Every C call goes through here and throws a
/// `SystemCallError`; EINTR is retried.
public enum FileSystem {
    static func check(_ result: Int32, _ call: String, _ path: String) throws(SystemCallError) {
        if result == -1 { throw SystemCallError(call: call, path: path, errno: errno) }
    }

    static func openRead(_ path: String) throws(SystemCallError) -> Int32 {
        while true {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { return fd }
            if errno != EINTR { throw SystemCallError(call: "open", path: path, errno: errno) }
        }
    }

    public enum Kind: Sendable { case missing, file, directory, other }

    /// What is at `path` (following symbolic links).
    public static func kind(of path: String) -> Kind {
        var info = stat()
        guard stat(path, &info) == 0 else { return .missing }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .directory
        default: return .other
        }
    }

    /// The whole contents of a (small) file.
    public static func readFile(_ path: String) throws(SystemCallError) -> [UInt8] {
        let fd = try openRead(path)
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return result }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(call: "read", path: path, errno: errno)
            }
            result.append(contentsOf: chunk[0..<n])
        }
    }

    /// Names in a directory (not "." or ".."), sorted.
    public static func listDirectory(_ path: String) throws(SystemCallError) -> [String] {
        guard let dir = opendir(path) else { throw SystemCallError(call: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func makeDirectory(_ path: String) throws(SystemCallError) {
        try check(mkdir(path, 0o755), "mkdir", path)
    }

    public static func removeFile(_ path: String) throws(SystemCallError) {
        try check(unlink(path), "unlink", path)
    }

    public static func removeEmptyDirectory(_ path: String) throws(SystemCallError) {
        try check(rmdir(path), "rmdir", path)
    }

    /// Removes a directory holding only regular files (what this module writes); used to clean up after a
    /// failed write. Refuses to descend into subdirectories.
    public static func removeFlatDirectory(_ path: String) throws(SystemCallError) {
        for name in try listDirectory(path) { try removeFile(path + "/" + name) }
        try removeEmptyDirectory(path)
    }

    public static func rename(_ from: String, to: String) throws(SystemCallError) {
        #if canImport(Glibc)
        try check(Glibc.rename(from, to), "rename", from)
        #elseif canImport(Darwin)
        try check(Darwin.rename(from, to), "rename", from)
        #else
        try check(Musl.rename(from, to), "rename", from)
        #endif
    }

    /// A name for a temporary sibling of `path`, unique to this process and call.
    public static func temporarySibling(of path: String) -> String {
        "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old file or the whole
    /// new one, never a partial one.
    public static func writeFileAtomically(_ path: String, bytes: [UInt8]) throws(SystemCallError) {
        let file = try AtomicFile(path: path)
        try file.write(bytes)
        try file.commit()
    }
}

/// A file being written under a temporary name; `commit()` flushes it and renames it into place. If it is
/// dropped without a commit (an error part-way), the temporary file is removed: no half-written file remains.
public final class AtomicFile {
    public let path: String
    public let temporaryPath: String
    private var fd: Int32
    private var committed = false

    public init(path: String) throws(SystemCallError) {
        self.path = path
        temporaryPath = FileSystem.temporarySibling(of: path)
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemCallError(call: "open", path: temporaryPath, errno: errno) }
    }

    /// Writes all of `bytes` (retrying short writes and EINTR).
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemCallError) {
        precondition(!committed, "write after commit")
        var offset = 0
        while offset < bytes.count {
            #if canImport(Glibc)
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            #elseif canImport(Darwin)
            let n = Darwin.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            #else
            let n = Musl.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            #endif
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(call: "write", path: temporaryPath, errno: errno)
            }
            offset += n
        }
    }

    public func write(_ bytes: [UInt8]) throws(SystemCallError) {
        let failure = bytes.withUnsafeBytes { raw -> SystemCallError? in
            do throws(SystemCallError) { try write(raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// fsync, close, rename onto `path`.
    public func commit() throws(SystemCallError) {
        precondition(!committed, "commit twice")
        try FileSystem.check(fsync(fd), "fsync", temporaryPath)
        let result = close(fd)
        fd = -1
        try FileSystem.check(result, "close", temporaryPath)
        try FileSystem.rename(temporaryPath, to: path)
        committed = true
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !committed { unlink(temporaryPath) }
    }
}
