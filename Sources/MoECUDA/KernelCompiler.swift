import CCUDA
import Dispatch
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A CUDA source file embedded in the binary (Package.swift: `.embedInCode` for each file in Kernels/).
public struct KernelSource: Sendable, Equatable {
    public var name: String
    public var bytes: [UInt8]

    public init(name: String, bytes: [UInt8]) {
        self.name = name
        self.bytes = bytes
    }

    public init(name: String, text: String) { self.init(name: name, bytes: Array(text.utf8)) }

    /// The kernels as built into this binary.
    public static let routing = KernelSource(name: "moe_routing.cu", bytes: PackageResources.moe_routing_cu)
    public static let experts = KernelSource(name: "moe_experts.cu", bytes: PackageResources.moe_experts_cu)
    public static let ceilings = KernelSource(name: "moe_ceilings.cu", bytes: PackageResources.moe_ceilings_cu)
    /// Headers every kernel may include, by the name used in `#include "..."`.
    public static let headers = [
        KernelSource(name: "moe_common.cuh", bytes: PackageResources.moe_common_cuh),
        KernelSource(name: "moe_params.h", bytes: PackageResources.moe_params_h),
    ]
}

/// Kernel build switches chosen by the environment, for A/B runs of code not yet measured on a GPU: the same binary
/// compiles both builds (each cached under its own key, which includes the options). A switch is on when its variable
/// is exactly "1".
public enum KernelBuildSwitches {
    /// (environment variable, preprocessor symbol defined to 1):
    /// - `MOE_CUDA_RESIDENT_BULK`: every resident GEMM's weight rings are filled by the copy engine (one
    ///   `cp.async.bulk` per row group's codes and one per its scales, completing on an mbarrier per slot) instead of
    ///   each lane's 16-byte `cp.async` copies (`resident_1_1_4_1_4` always is).
    /// - `MOE_CUDA_RING_WHOLE`: a resident GEMM warp whose K share fits its weight ring (at most S groups: GEMM 2's
    ///   `resident_1_1_2_4_3` at 1 token) asks for all of it before its wait, where the ring asks for S − 1 groups and
    ///   the last one in its loop; so GEMM 2's early blocks hold their whole share when GEMM 1's tile lands.
    /// - `MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS`: the wide router (128 experts a block) in blocks of 8 warps of 32 tokens × 32
    ///   experts, two an SM, instead of 16 warps of 16 × 32, one an SM (the same sums in the same order).
    /// - `MOE_CUDA_ROUTER_TOPK`: the unsplit wide router does moe_topk's work for its tile (ids, weights, the token
    ///   blocks' histograms) and no moe_topk is launched (LaunchPlan.routerFusesTopK).
    /// - `MOE_CUDA_ALIAS_EXPERTS`: a measurement build — every resident GEMM reads expert 0's weights whatever its
    ///   tile's expert, so a decode step's weights come from L2 and a trace shows the layer without its DRAM stream.
    ///   Outputs are wrong by design: the backend's description says so, and every path that produces or times outputs
    ///   refuses it (refuseAliasedExperts).
    /// Each is defined only for the module whose kernels read it (`module`, a kernel file's name), so turning one on
    /// recompiles that module alone: the others keep their cache keys.
    public static let all: [(variable: String, symbol: String, module: String)] = [
        ("MOE_CUDA_RESIDENT_BULK", "MOE_RESIDENT_BULK", KernelSource.experts.name),
        ("MOE_CUDA_ALIAS_EXPERTS", "MOE_ALIAS_EXPERTS", KernelSource.experts.name),
        ("MOE_CUDA_RING_WHOLE", "MOE_RING_WHOLE", KernelSource.experts.name),
        ("MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS", "MOE_WIDE_ROUTER_HALF", KernelSource.routing.name),
        ("MOE_CUDA_ROUTER_TOPK", "MOE_ROUTER_TOPK", KernelSource.routing.name),
    ]

    /// Whether this process's kernels were built with the switch whose preprocessor symbol is `symbol`.
    static func isOn(_ symbol: String) -> Bool { current.contains("-D\(symbol)=1") }

    /// Whether this process's wide router runs in half blocks (MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS=1): its launch shape follows.
    public static var wideRouterHalfBlocks: Bool { isOn("MOE_WIDE_ROUTER_HALF") }

    /// Whether this process's wide router does the top-k of its tiles (MOE_CUDA_ROUTER_TOPK=1).
    public static var routerTopK: Bool { isOn("MOE_ROUTER_TOPK") }

    /// Whether this process's kernels read expert 0's weights for every expert (MOE_CUDA_ALIAS_EXPERTS=1).
    public static var aliasesExperts: Bool { isOn("MOE_ALIAS_EXPERTS") }

    /// Refuses to produce `what` (outputs, timings of outputs) from the aliased build, whose outputs are wrong by
    /// design; traces (`cuda-debug --trace`) do not call this.
    static func refuseAliasedExperts(_ what: String, aliased: Bool = aliasesExperts) throws {
        guard aliased else { return }
        throw MoEError.invalidArgument(
            "MOE_CUDA_ALIAS_EXPERTS=1 makes every expert read expert 0's weights (a measurement build for `moe cuda-debug --trace`), so \(what) would be wrong: unset it")
    }

    /// The switches the environment turned on, for the module named `module` (every module's when nil).
    public static func options(_ environment: (String) -> String? = currentEnvironment, module: String? = nil) -> [String] {
        all.filter { environment($0.variable) == "1" && (module == nil || $0.module == module) }.map { "-D\($0.symbol)=1" }
    }
    static let current = options()

    /// A module's options: the MOE_TRACE build when `traced` (kernels marking their spans, KernelTrace), then the
    /// switches the environment turned on for that module.
    static func options(traced: Bool, module: KernelSource) -> [String] {
        (traced ? ["-DMOE_TRACE=1"] : []) + options(module: module.name)
    }
}

/// Everything that determines a compiled kernel image.
public struct KernelCompileRequest: Sendable, Equatable {
    public var source: KernelSource
    public var headers: [KernelSource]
    public var options: [String]
    /// NVRTC --gpu-architecture value, e.g. "sm_90a".
    public var architecture: String

    public init(source: KernelSource, headers: [KernelSource] = KernelSource.headers, options: [String] = [], architecture: String) {
        self.source = source
        self.headers = headers
        self.options = options
        self.architecture = architecture
    }

    /// The full NVRTC option list.
    public var compilerOptions: [String] {
        ["--gpu-architecture=\(architecture)", "-std=c++17", "-lineinfo"] + options
    }

    /// SHA-256 over the source, the headers (sorted by name), the options, the architecture and NVRTC's version,
    /// each length-prefixed so that no two different requests hash the same bytes.
    public func cacheKey(compilerVersion: String) -> String {
        var hash = SHA256()
        func field(_ bytes: [UInt8]) {
            hash.update(Array(String(bytes.count).utf8) + [0x3A])
            hash.update(bytes)
        }
        field(Array("moekit-kernel-v1".utf8))
        field(Array(source.name.utf8))
        field(source.bytes)
        for header in headers.sorted(by: { $0.name < $1.name }) {
            field(Array(header.name.utf8))
            field(header.bytes)
        }
        for option in compilerOptions { field(Array(option.utf8)) }
        field(Array(architecture.utf8))
        field(Array(compilerVersion.utf8))
        return SHA256.hex(hash.finalize())
    }
}

/// Compiled kernel images on disk, one file per cache key: `$MOE_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/moekit/kernels`, else `~/.cache/moekit/kernels`. Writes are atomic (temp file + rename);
/// an unwritable cache only costs recompiling.
public struct KernelCache: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public static func defaultDirectory(environment: (String) -> String? = currentEnvironment) -> String? {
        if let explicit = environment("MOE_KERNEL_CACHE"), !explicit.isEmpty { return explicit }
        if let xdg = environment("XDG_CACHE_HOME"), !xdg.isEmpty { return xdg + "/moekit/kernels" }
        if let home = environment("HOME"), !home.isEmpty { return home + "/.cache/moekit/kernels" }
        return nil
    }

    public func path(for key: String) -> String { directory + "/" + key + ".cubin" }

    public func load(key: String) -> [UInt8]? {
        guard let bytes = readWholeFile(path(for: key)), !bytes.isEmpty else { return nil }
        return bytes
    }

    /// Stores the image; returns false (and leaves no partial file) when the folder cannot be written.
    @discardableResult
    public func store(key: String, image: [UInt8]) -> Bool {
        guard makeDirectories(directory) else { return false }
        let temporary = path(for: key) + ".tmp\(getpid())"
        guard writeWholeFile(temporary, image) else {
            unlink(temporary)
            return false
        }
        if rename(temporary, path(for: key)) != 0 {
            unlink(temporary)
            return false
        }
        return true
    }

    public func remove(key: String) { unlink(path(for: key)) }
}

/// NVRTC front end: compile (or fetch from the cache) a kernel image for the device's architecture.
public final class KernelCompiler: @unchecked Sendable {
    public let nvrtc: NVRTCLibrary
    public let cache: KernelCache?
    public let compilerVersion: String
    /// How many images were compiled and how many came from the cache (for `moe info` and tests).
    public private(set) var compiled = 0
    public private(set) var cacheHits = 0
    private let lock = DispatchSemaphore(value: 1)

    public init(nvrtc: NVRTCLibrary, cache: KernelCache?) throws(CUDAError) {
        self.nvrtc = nvrtc
        self.cache = cache
        self.compilerVersion = try nvrtc.version()
    }

    public func image(for request: KernelCompileRequest) throws(CUDAError) -> (image: [UInt8], key: String) {
        lock.wait()
        defer { lock.signal() }
        let key = request.cacheKey(compilerVersion: compilerVersion)
        if let cached = cache?.load(key: key) {
            cacheHits += 1
            return (cached, key)
        }
        let image = try compile(request)
        compiled += 1
        cache?.store(key: key, image: image)
        return (image, key)
    }

    /// Runs NVRTC; a failed compilation throws `CUDAError.compilation` carrying NVRTC's log.
    public func compile(_ request: KernelCompileRequest) throws(CUDAError) -> [UInt8] { try compileWithLog(request).image }

    /// `compile`, with NVRTC's log of a successful compilation too (its warnings; ptxas's per-kernel report when the
    /// request asks for `--ptxas-options=-v`, where ptxas says which kernels' wgmma it serialised).
    public func compileWithLog(_ request: KernelCompileRequest) throws(CUDAError) -> (image: [UInt8], log: String) {
        let api = nvrtc.api
        var program: nvrtcProgramHandle?
        let sourceText = request.source.bytes + [0]
        let headerTexts = request.headers.map { $0.bytes + [0] }
        let headerNames = request.headers.map { Array($0.name.utf8CString) }
        let created: Int32? = withCStringArray(headerTexts) { texts in
            withCStringArray(headerNames.map { $0.map { UInt8(bitPattern: $0) } }) { names in
                sourceText.withUnsafeBufferPointer { source in
                    source.withMemoryRebound(to: CChar.self) { src in
                        api.nvrtcCreateProgram?(
                            &program, src.baseAddress, request.source.name, Int32(request.headers.count), texts, names)
                    }
                }
            }
        }
        try nvrtc.call("nvrtcCreateProgram", created)
        defer { _ = api.nvrtcDestroyProgram?(&program) }
        let options = request.compilerOptions
        let status: Int32? = withCStringArray(options.map { Array($0.utf8) + [0] }) { list in
            api.nvrtcCompileProgram?(program, Int32(options.count), list)
        }
        guard let status else { throw .missingEntryPoint("nvrtcCompileProgram") }
        if status != 0 {
            throw .compilation(kernel: request.source.name, options: options, log: programLog(program))
        }
        var size = 0
        try nvrtc.call("nvrtcGetCUBINSize", api.nvrtcGetCUBINSize?(program, &size))
        var image = [UInt8](repeating: 0, count: size)
        let fetched = image.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { api.nvrtcGetCUBIN?(program, $0.baseAddress) }
        }
        try nvrtc.call("nvrtcGetCUBIN", fetched)
        return (image, programLog(program))
    }

    /// The compile log (warnings, ptxas resource report when asked for with --ptxas-options=-v).
    func programLog(_ program: nvrtcProgramHandle?) -> String {
        var size = 0
        guard nvrtc.api.nvrtcGetProgramLogSize?(program, &size) == 0, size > 1 else { return "(no log)" }
        var text = [CChar](repeating: 0, count: size)
        _ = nvrtc.api.nvrtcGetProgramLog?(program, &text)
        return cString(text)
    }
}

typealias nvrtcProgramHandle = OpaquePointer

/// Calls `body` with a C array of pointers to the NUL-terminated byte strings `strings`.
private func withCStringArray<R>(_ strings: [[UInt8]], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>] = strings.map { bytes in
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
        return p
    }
    defer { pointers.forEach { $0.deallocate() } }
    let list: [UnsafePointer<CChar>?] = pointers.map { UnsafePointer($0) }
    return list.withUnsafeBufferPointer { body($0.baseAddress) }
}

// MARK: small file helpers (no Foundation)

func readWholeFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return ferror(file) == 0 ? bytes : nil
}

func writeWholeFile(_ path: String, _ bytes: [UInt8]) -> Bool {
    guard let file = fopen(path, "wb") else { return false }
    let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, bytes.count, file) }
    return fclose(file) == 0 && written == bytes.count
}

/// mkdir -p; true when the folder exists afterwards.
func makeDirectories(_ path: String) -> Bool {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        mkdir(current, 0o755)
    }
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
}
