/// Failures of the CUDA layer. Each names the call or library involved and, where there is one, what to do.
public enum CUDAError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A shared library could not be opened; `attempts` lists every path tried with the loader's reason.
    case libraryNotFound(library: String, attempts: [String])
    /// The library opened but lacks entry points MoEKit needs (too old a driver or toolkit).
    case missingSymbols(library: String, path: String, symbols: String)
    /// A call whose entry point is absent from the loaded table.
    case missingEntryPoint(String)
    /// A driver call returned an error: the call, the CUresult, cuGetErrorName and cuGetErrorString.
    case driver(call: String, code: Int32, name: String, message: String)
    /// An earlier sticky fault (illegal address, launch failure…) left the context unusable.
    case deviceFaulted(call: String, fault: String)
    case noDevice(String)
    case unsupportedDevice(String)
    /// NVRTC rejected a kernel: its compile log.
    case compilation(kernel: String, options: [String], log: String)
    case nvrtc(call: String, code: Int32, message: String)
    case cublas(call: String, status: Int32)
    case nccl(call: String, code: Int32, message: String)
    case invalidArgument(String)
    /// The GPU ran out of memory for `what` (`bytes` of it, where known), with the device's free and total memory
    /// at that moment and what to do.
    case outOfMemory(what: String, bytes: Int?, free: Int?, total: Int, advice: String)

    public var description: String {
        switch self {
        case .libraryNotFound(let library, let attempts):
            CUDAError.describeSearch(library: library, attempts: attempts)
        case .missingSymbols(let library, let path, let symbols):
            "\(library) at \(path) lacks \(symbols); a newer driver or toolkit is needed"
        case .missingEntryPoint(let name): "the loaded CUDA library has no entry point \(name)"
        case .driver(let call, let code, let name, let message): "\(call) failed: \(name) (\(code)): \(message)"
        case .deviceFaulted(let call, let fault):
            "\(call) refused: the GPU context faulted earlier (\(fault)); create a new backend (the process's context is unusable)"
        case .noDevice(let why): "no CUDA device: \(why)"
        case .unsupportedDevice(let why): "unsupported CUDA device: \(why)"
        case .compilation(let kernel, let options, let log):
            "NVRTC could not compile \(kernel) (options: \(options.joined(separator: " "))):\n\(log)"
        case .nvrtc(let call, let code, let message): "\(call) failed: \(message) (\(code))"
        case .cublas(let call, let status): "\(call) failed with cuBLAS status \(status)"
        case .nccl(let call, let code, let message): "\(call) failed: \(message) (\(code))"
        case .invalidArgument(let why): why
        case .outOfMemory(let what, let bytes, let free, let total, let advice):
            "the GPU is out of memory for \(what)\(bytes.map { " (\(CUDAError.mebibytes($0)))" } ?? ""): "
                + "\(free.map { "\(CUDAError.mebibytes($0)) free" } ?? "free memory unknown") of \(CUDAError.mebibytes(total)). \(advice)"
        }
    }

    /// "1234.5 MiB".
    static func mebibytes(_ bytes: Int) -> String {
        let tenths = (bytes * 10 + 524_288) / 1_048_576
        return "\(tenths / 10).\(tenths % 10) MiB"
    }

    /// The driver's out-of-memory result (CUDA_ERROR_OUT_OF_MEMORY).
    var isOutOfMemory: Bool {
        if case .driver(_, 2, _, _) = self { return true }
        return false
    }

    /// One line: the places tried (in order) and the distinct reasons the loader gave.
    static func describeSearch(library: String, attempts: [String]) -> String {
        var places: [String] = [], reasons: [String] = []
        for attempt in attempts {
            let parts = attempt.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: " ") }
            places.append(parts[0])
            if parts.count > 1, !reasons.contains(parts[1]) { reasons.append(parts[1]) }
        }
        return "\(library) not found; looked in \(places.joined(separator: ", ")) (\(reasons.joined(separator: "; "))). "
            + "Set \(LibrarySearch.environmentVariable) to the folder(s) holding it (colon-separated)."
    }

    /// Driver error codes after which the context cannot be used again (CUDA's "sticky" errors).
    static let stickyCodes: Set<Int32> = [700, 714, 715, 716, 717, 718, 719]
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = self
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}

/// Runs `make`; when it fails because the device is out of memory, `evict` frees something (false: nothing left) and
/// `make` runs again; with nothing left to free, the error `exhausted` gives. Other errors pass through. (The backends'
/// caches of token-count buckets and graphs: a server keeps many sizes.)
func retryingOutOfMemory<T>(
    _ make: () throws(CUDAError) -> T, evict: () -> Bool, exhausted: () -> CUDAError
) throws(CUDAError) -> T {
    while true {
        do {
            return try make()
        } catch {
            guard error.isOutOfMemory else { throw error }
            guard evict() else { throw exhausted() }
        }
    }
}
