import CCUDA

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a shared library is looked for, in order: each folder of `$MOE_CUDA_LIBRARY_PATH`, the system
/// loader's own search (LD_LIBRARY_PATH, ldconfig cache), then the usual CUDA install folders.
public struct LibrarySearch: Sendable, Equatable {
    public static let environmentVariable = "MOE_CUDA_LIBRARY_PATH"

    /// File names to try, most specific first (e.g. "libnvrtc.so.13", "libnvrtc.so").
    public var names: [String]
    /// Folders from the environment variable.
    public var userDirectories: [String]
    /// Well-known install folders, tried after the system loader.
    public var fallbackDirectories: [String]

    public init(names: [String], userDirectories: [String], fallbackDirectories: [String]) {
        self.names = names
        self.userDirectories = userDirectories
        self.fallbackDirectories = fallbackDirectories
    }

    /// The search for `names` with folders from the environment (`environment` overrides the process's, for tests).
    public static func standard(names: [String], extraFallbacks: [String] = [], environment: String? = nil) -> LibrarySearch {
        let value = environment ?? currentEnvironment(environmentVariable) ?? ""
        let user = value.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        let fallbacks = [
            "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64",
            "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/cuda/targets/sbsa-linux/lib",
            "/usr/lib/wsl/lib",
        ] + extraFallbacks
        return LibrarySearch(names: names, userDirectories: user, fallbackDirectories: fallbacks)
    }

    /// Every path handed to dlopen, in order. Bare names go to the system loader.
    public var candidates: [String] {
        var list: [String] = []
        for directory in userDirectories { for name in names { list.append(join(directory, name)) } }
        list.append(contentsOf: names)
        for directory in fallbackDirectories { for name in names { list.append(join(directory, name)) } }
        var seen = Set<String>()
        return list.filter { seen.insert($0).inserted }
    }

    private func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

/// What one dlopen attempt gave: a handle, or the loader's reason.
public enum LibraryOpenResult {
    case opened(UnsafeMutableRawPointer)
    case failed(String)
}

/// An open shared library (never closed: the function tables point into it for the life of the process).
public struct LoadedLibrary: @unchecked Sendable {
    public let handle: UnsafeMutableRawPointer
    public let path: String
}

public enum LibraryLoader {
    /// Opens the first candidate that loads; otherwise throws `libraryNotFound` listing each attempt and why.
    /// `open` is the dlopen choke point (tests pass a fake).
    public static func load(
        _ library: String, search: LibrarySearch,
        open: (String) -> LibraryOpenResult = LibraryLoader.dlopenPath
    ) throws(CUDAError) -> LoadedLibrary {
        var attempts: [String] = []
        if search.userDirectories.isEmpty { attempts.append("$\(LibrarySearch.environmentVariable): not set") }
        for path in search.candidates {
            switch open(path) {
            case .opened(let handle): return LoadedLibrary(handle: handle, path: path)
            case .failed(let why):
                let shown = path.contains("/") ? path : "\(path) (system loader path)"
                attempts.append("\(shown): \(shortReason(why, path: path))")
            }
        }
        throw .libraryNotFound(library: library, attempts: attempts)
    }

    public static func dlopenPath(_ path: String) -> LibraryOpenResult {
        var error = [CChar](repeating: 0, count: 512)
        if let handle = ccuda_dlopen(path, &error, error.count) { return .opened(handle) }
        return .failed(cString(error))
    }

    /// dlerror repeats the path; keep only the reason.
    static func shortReason(_ why: String, path: String) -> String {
        var text = why
        if text.hasPrefix(path + ": ") { text.removeFirst(path.count + 2) }
        return text
    }
}

public func currentEnvironment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

/// Folders of NVIDIA's Python wheels (nvidia/<package>/lib) under a site-packages folder, if present: PyTorch
/// images ship cuBLAS and NVRTC this way.
public func pythonWheelLibraryFolders(under roots: [String]) -> [String] {
    var folders: [String] = []
    for root in roots {
        for package in listDirectory(root + "/nvidia") {
            folders.append(root + "/nvidia/" + package + "/lib")
        }
    }
    return folders
}

func listDirectory(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: UnsafePointer($0)) }
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// site-packages folders of the Python installs commonly found on GPU machines (used only to find cuBLAS).
public func commonSitePackages() -> [String] {
    var roots: [String] = []
    for base in ["/opt/torch/.venv/lib", "/usr/local/lib", "/usr/lib"] {
        for entry in listDirectory(base) where entry.hasPrefix("python3") {
            roots.append(base + "/" + entry + "/site-packages")
            roots.append(base + "/" + entry + "/dist-packages")
        }
    }
    return roots
}

/// A NUL-terminated C string held in an array.
public func cString(_ chars: [CChar]) -> String {
    let bytes = chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
