import CCUDA
import Dispatch

/// The CUDA driver API as a function table (`CCUDADriverAPI`), with one choke point through which every call's
/// result passes: `call(_:_:)` maps a non-zero CUresult to `CUDAError.driver` with the driver's own error name,
/// and latches sticky faults so that later calls fail at once instead of hanging or returning garbage.
///
/// Tests build one from a fake table; `CUDADriver.load()` resolves the real one from libcuda with dlopen.
public final class CUDADriver: @unchecked Sendable {
    public let api: CCUDADriverAPI
    /// Where the library was loaded from ("fake" in tests).
    public let libraryPath: String
    private let lock = DispatchSemaphore(value: 1)
    private var fault: CUDAError?

    public init(api: CCUDADriverAPI, libraryPath: String) {
        self.api = api
        self.libraryPath = libraryPath
    }

    /// Opens libcuda and resolves the table (versioned symbols such as cuMemAlloc_v2; see ccuda.c).
    public static func load(search: LibrarySearch = .standard(names: ["libcuda.so.1", "libcuda.so"])) throws(CUDAError)
        -> CUDADriver
    {
        let library = try LibraryLoader.load("libcuda.so.1 (the NVIDIA driver)", search: search)
        var api = CCUDADriverAPI()
        var missing = [CChar](repeating: 0, count: 1024)
        if ccuda_resolve_driver(library.handle, &api, &missing, missing.count) != 0 {
            throw .missingSymbols(library: "libcuda", path: library.path, symbols: cString(missing))
        }
        return CUDADriver(api: api, libraryPath: library.path)
    }

    /// The CUDA devices this process sees (initialising the driver first).
    public func deviceCount() throws(CUDAError) -> Int {
        try call("cuInit", api.cuInit?(0))
        var count: Int32 = 0
        try call("cuDeviceGetCount", api.cuDeviceGetCount?(&count))
        return Int(count)
    }

    /// Whether `device` can access `peer`'s memory; nil when the driver lacks the query.
    public func canAccessPeer(device: CUdevice, peer: CUdevice) throws(CUDAError) -> Bool? {
        guard let canAccess = api.cuDeviceCanAccessPeer else { return nil }
        var can: Int32 = 0
        try call("cuDeviceCanAccessPeer", canAccess(&can, device, peer))
        return can != 0
    }

    /// The device of this process's ordinal `ordinal`.
    public func device(ordinal: Int) throws(CUDAError) -> CUdevice {
        var device = CUdevice()
        try call("cuDeviceGet", api.cuDeviceGet?(&device, Int32(ordinal)))
        return device
    }

    /// The device at PCI address `busID` ("0000:1b:00.0") among those this process sees; nil when it does not see it
    /// (CUDA_VISIBLE_DEVICES) or the driver lacks the query.
    public func device(pciBusID busID: String) -> CUdevice? {
        guard let get = api.cuDeviceGetByPCIBusId else { return nil }
        var device = CUdevice()
        return busID.withCString { get(&device, $0) } == 0 ? device : nil
    }

    /// The choke point. `result` is nil when the table lacks the entry point.
    @inline(__always)
    public func call(_ name: StaticString, _ result: Int32?) throws(CUDAError) {
        guard let result else { throw .missingEntryPoint("\(name)") }
        if result == 0 { return }
        try fail("\(name)", result)
    }

    /// Throws the latched sticky fault, if any, before a call that would touch the context.
    public func checkHealthy(_ name: StaticString) throws(CUDAError) {
        lock.wait()
        let latched = fault
        lock.signal()
        if let latched { throw .deviceFaulted(call: "\(name)", fault: latched.description) }
    }

    private func fail(_ name: String, _ code: Int32) throws(CUDAError) {
        let error = CUDAError.driver(call: name, code: code, name: errorName(code), message: errorString(code))
        if CUDAError.stickyCodes.contains(code) {
            lock.wait()
            if fault == nil { fault = error }
            lock.signal()
        }
        throw error
    }

    /// cuGetErrorName, or "CUDA_ERROR_<code>" when the driver does not know the code.
    public func errorName(_ code: Int32) -> String {
        var text: UnsafePointer<CChar>?
        if let get = api.cuGetErrorName, get(code, &text) == 0, let text { return String(cString: text) }
        return "CUDA_ERROR_\(code)"
    }

    public func errorString(_ code: Int32) -> String {
        var text: UnsafePointer<CChar>?
        if let get = api.cuGetErrorString, get(code, &text) == 0, let text { return String(cString: text) }
        return "unknown error"
    }

    /// cuDriverGetVersion as "13.0".
    public func version() throws(CUDAError) -> String {
        var value: Int32 = 0
        try call("cuDriverGetVersion", api.cuDriverGetVersion?(&value))
        return "\(value / 1000).\(value % 1000 / 10)"
    }
}

/// NVRTC as a function table, with its own choke point.
public final class NVRTCLibrary: @unchecked Sendable {
    public let api: CCUDANVRTCAPI
    public let libraryPath: String

    public init(api: CCUDANVRTCAPI, libraryPath: String) {
        self.api = api
        self.libraryPath = libraryPath
    }

    public static func load(
        search: LibrarySearch = .standard(
            names: ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
            extraFallbacks: pythonWheelLibraryFolders(under: commonSitePackages()))
    ) throws(CUDAError) -> NVRTCLibrary {
        let library = try LibraryLoader.load("libnvrtc (NVRTC, the CUDA run-time compiler)", search: search)
        var api = CCUDANVRTCAPI()
        var missing = [CChar](repeating: 0, count: 512)
        if ccuda_resolve_nvrtc(library.handle, &api, &missing, missing.count) != 0 {
            throw .missingSymbols(library: "libnvrtc", path: library.path, symbols: cString(missing))
        }
        let nvrtc = NVRTCLibrary(api: api, libraryPath: library.path)
        // NVRTC dlopens libnvrtc-builtins.so.<major>.<minor> by name at compile time; when libnvrtc came from a
        // folder the system loader does not search, load the builtins from that folder first so the name resolves.
        if let slash = library.path.lastIndex(of: "/"), let version = try? nvrtc.version() {
            let folder = library.path[..<slash]
            _ = LibraryLoader.dlopenPath("\(folder)/libnvrtc-builtins.so.\(version)")
        }
        return nvrtc
    }

    @inline(__always)
    public func call(_ name: StaticString, _ result: Int32?) throws(CUDAError) {
        guard let result else { throw .missingEntryPoint("\(name)") }
        if result == 0 { return }
        var message = "NVRTC error"
        if let get = api.nvrtcGetErrorString, let text = get(result) { message = String(cString: text) }
        throw .nvrtc(call: "\(name)", code: result, message: message)
    }

    /// nvrtcVersion as "13.0" (part of every kernel cache key).
    public func version() throws(CUDAError) -> String {
        var major: Int32 = 0, minor: Int32 = 0
        try call("nvrtcVersion", api.nvrtcVersion?(&major, &minor))
        return "\(major).\(minor)"
    }
}

/// cuBLAS, loaded only to measure the bf16 matrix peak.
public final class CuBLASLibrary: @unchecked Sendable {
    public let api: CCUDACuBLASAPI
    public let libraryPath: String

    init(api: CCUDACuBLASAPI, libraryPath: String) {
        self.api = api
        self.libraryPath = libraryPath
    }

    public static func load() throws(CUDAError) -> CuBLASLibrary {
        let search = LibrarySearch.standard(
            names: ["libcublas.so.13", "libcublas.so.12", "libcublas.so"],
            extraFallbacks: pythonWheelLibraryFolders(under: commonSitePackages()))
        let library = try LibraryLoader.load("libcublas", search: search)
        var api = CCUDACuBLASAPI()
        var missing = [CChar](repeating: 0, count: 256)
        if ccuda_resolve_cublas(library.handle, &api, &missing, missing.count) != 0 {
            throw .missingSymbols(library: "libcublas", path: library.path, symbols: cString(missing))
        }
        return CuBLASLibrary(api: api, libraryPath: library.path)
    }

    @inline(__always)
    public func call(_ name: StaticString, _ status: Int32?) throws(CUDAError) {
        guard let status else { throw .missingEntryPoint("\(name)") }
        if status != 0 { throw .cublas(call: "\(name)", status: status) }
    }
}

/// NCCL (libnccl.so.2) for expert parallelism across GPUs, with its choke point.
public final class NCCLLibrary: @unchecked Sendable {
    public let api: CCUDANCCLAPI
    public let libraryPath: String

    public init(api: CCUDANCCLAPI, libraryPath: String) {
        self.api = api
        self.libraryPath = libraryPath
    }

    public static func load(search: LibrarySearch = .standard(names: ["libnccl.so.2", "libnccl.so"])) throws(CUDAError)
        -> NCCLLibrary
    {
        let library = try LibraryLoader.load("libnccl.so.2 (NCCL)", search: search)
        var api = CCUDANCCLAPI()
        var missing = [CChar](repeating: 0, count: 512)
        if ccuda_resolve_nccl(library.handle, &api, &missing, missing.count) != 0 {
            throw .missingSymbols(library: "libnccl", path: library.path, symbols: cString(missing))
        }
        return NCCLLibrary(api: api, libraryPath: library.path)
    }

    @inline(__always)
    public func call(_ name: StaticString, _ result: Int32?) throws(CUDAError) {
        guard let result else { throw .missingEntryPoint("\(name)") }
        if result == 0 { return }
        var message = "NCCL error"
        if let get = api.ncclGetErrorString, let text = get(result) { message = String(cString: text) }
        throw .nccl(call: "\(name)", code: result, message: message)
    }

    /// ncclGetVersion as "2.28.3".
    public func version() throws(CUDAError) -> String {
        let code = try versionCode()
        return "\(code / 10000).\(code % 10000 / 100).\(code % 100)"
    }

    /// ncclGetVersion's code: major·10000 + minor·100 + patch (NCCL ≥ 2.9).
    public func versionCode() throws(CUDAError) -> Int {
        var code: Int32 = 0
        try call("ncclGetVersion", api.ncclGetVersion?(&code))
        return Int(code)
    }

    /// From NCCL 2.26 on, ncclCommAbort does not finish until every CUDA graph holding work of the communicator
    /// is destroyed; before, it frees the communicator at once, and destroying such a graph afterwards touches
    /// freed memory. Unknown versions count as the newer behaviour.
    public var abortWaitsForGraphs: Bool { ((try? versionCode()) ?? 22600) >= 22600 }
}
