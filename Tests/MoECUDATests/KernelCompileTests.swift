import Testing

@testable import MoECUDA

/// NVRTC compiles on a machine without a GPU; these run wherever libnvrtc loads (set MOE_CUDA_LIBRARY_PATH
/// to its folder) and are skipped elsewhere.
enum LocalNVRTC {
    static let library: NVRTCLibrary? = try? NVRTCLibrary.load()
}

@Test(.enabled(if: LocalNVRTC.library != nil, "needs libnvrtc (set MOE_CUDA_LIBRARY_PATH)"))
func everyKernelFileCompilesForHopper() throws {
    let compiler = try KernelCompiler(nvrtc: LocalNVRTC.library!, cache: nil)
    let requests = [KernelSource.routing, .experts, .ceilings].map { KernelCompileRequest(source: $0, architecture: "sm_90a") }
        + [CUDAExpertParallelLayer.kernelRequest(architecture: "sm_90a")]
    for request in requests {
        let image = try compiler.compile(request)
        #expect(image.count > 1000, "\(request.source.name)")
        #expect(Array(image.prefix(4)) == [0x7F, 0x45, 0x4C, 0x46])  // an ELF cubin
    }
}

/// The tracing build (`moe cuda-debug --trace`) compiles too, and differs from the plain one (so it is cached apart).
@Test(.enabled(if: LocalNVRTC.library != nil, "needs libnvrtc (set MOE_CUDA_LIBRARY_PATH)"))
func theTracingBuildCompilesAndDiffersFromThePlainOne() throws {
    let compiler = try KernelCompiler(nvrtc: LocalNVRTC.library!, cache: nil)
    for source in [KernelSource.routing, .experts] {
        let plain = KernelCompileRequest(source: source, architecture: "sm_90a")
        let traced = KernelCompileRequest(source: source, options: ["-DMOE_TRACE=1"], architecture: "sm_90a")
        #expect(plain.cacheKey(compilerVersion: "13.0") != traced.cacheKey(compilerVersion: "13.0"))
        #expect(try compiler.compile(traced) != compiler.compile(plain), "\(source.name)")
    }
    // The expert-parallel module (`MOE_CUDA_EP_TRACE=1`): its own kernels mark spans through the 8-byte trace fields.
    let plain = CUDAExpertParallelLayer.kernelRequest(architecture: "sm_90a", traced: false)
    let traced = CUDAExpertParallelLayer.kernelRequest(architecture: "sm_90a", traced: true)
    #expect(traced.options.contains("-DMOE_TRACE=1") && !plain.options.contains("-DMOE_TRACE=1"))
    #expect(try compiler.compile(traced) != compiler.compile(plain))
}

/// Each kernel build switch compiles, alone and together, and changes the module it is defined for (today's four, the
/// resident and registered GEMMs', the expert module). Defined for another module, it would change nothing there (checked too), so
/// scoping them saves a recompile without changing a kernel.
@Test(.enabled(if: LocalNVRTC.library != nil, "needs libnvrtc (set MOE_CUDA_LIBRARY_PATH)"))
func theKernelBuildSwitchesCompileAndChangeOnlyTheirModule() throws {
    let compiler = try KernelCompiler(nvrtc: LocalNVRTC.library!, cache: nil)
    let variables = KernelBuildSwitches.all.map(\.variable)
    for on in variables.map({ [$0] }) + [variables] {
        let environment: (String) -> String? = { on.contains($0) ? "1" : nil }
        #expect(KernelBuildSwitches.options(environment).count == on.count)
        for source in [KernelSource.experts, .routing] {
            let plain = KernelCompileRequest(source: source, architecture: "sm_90a")
            let own = KernelBuildSwitches.options(environment, module: source.name)
            var switched = plain, everyModules = plain
            switched.options += own
            everyModules.options += KernelBuildSwitches.options(environment)
            #expect(try (compiler.compile(switched) != compiler.compile(plain)) == !own.isEmpty, "\(source.name) \(on)")
            #expect(try compiler.compile(everyModules) == compiler.compile(switched), "\(source.name) \(on)")
        }
    }
}

@Test(.enabled(if: LocalNVRTC.library != nil, "needs libnvrtc (set MOE_CUDA_LIBRARY_PATH)"))
func aCompileErrorCarriesNVRTCsLog() throws {
    let compiler = try KernelCompiler(nvrtc: LocalNVRTC.library!, cache: nil)
    let broken = KernelSource(name: "broken.cu", text: "extern \"C\" __global__ void k() { undeclared_thing(); }")
    do {
        _ = try compiler.compile(KernelCompileRequest(source: broken, architecture: "sm_90a"))
        Issue.record("a broken kernel must not compile")
    } catch {
        guard case .compilation(let kernel, let options, let log) = error else { Issue.record("\(error)"); return }
        #expect(kernel == "broken.cu")
        #expect(options.contains("--gpu-architecture=sm_90a"))
        #expect(log.contains("undeclared_thing"))
    }
}

@Test(.enabled(if: LocalNVRTC.library != nil, "needs libnvrtc (set MOE_CUDA_LIBRARY_PATH)"))
func compiledImagesAreServedFromTheCacheTheSecondTime() throws {
    let cache = KernelCache(directory: "/tmp/moekit-compile-cache-\(UInt32.random(in: 0...UInt32.max))")
    let compiler = try KernelCompiler(nvrtc: LocalNVRTC.library!, cache: cache)
    let request = KernelCompileRequest(source: .ceilings, architecture: "sm_90a")
    let first = try compiler.image(for: request)
    let second = try compiler.image(for: request)
    #expect(first.image == second.image)
    #expect(compiler.compiled == 1)
    #expect(compiler.cacheHits == 1)
    #expect(cache.load(key: first.key) == first.image)
}

/// Of the wgmma kernels GemmVariant.choose picks on Hopper, ptxas serialises the wgmma (C7511 / C7512 / C7515 in its
/// verbose report) of none. Session 19 found the narrow-tile default serialised (three widths in one kernel: n32, n64,
/// n128); session 20's 64-token form with two widths replaced it; session 22's 64-token tiles with three consumer
/// warpgroups in 64 registers serialise with two A-fragment buffers (C7512), as session 23's 96-token tiles with five
/// consumer warpgroups at 88 do. A kernel change that serialises a default's wgmma fails here, before any GPU run.
@Test(.enabled(if: LocalNVRTC.library != nil, "needs libnvrtc (set MOE_CUDA_LIBRARY_PATH)"))
func noDefaultHasItsWgmmaSerialised() throws {
    let compiler = try KernelCompiler(nvrtc: LocalNVRTC.library!, cache: nil)
    let request = KernelCompileRequest(source: .experts, options: ["--ptxas-options=-v"], architecture: "sm_90a")
    let log = try compiler.compileWithLog(request).log
    let serialised = Set(log.split(separator: "\n").filter { $0.contains("(C7511)") || $0.contains("(C7512)") || $0.contains("(C7515)") }.compactMap { line in
        line.split(separator: "'").dropFirst().first.map(String.init)
    })
    #expect(!serialised.isEmpty == log.contains("C751"))
    // Every wgmma kernel choose picks for 120b or 20b at any size (32-, 48-, 64-, 96-, 128- and 192-token tiles; the
    // plain 192-token form is chosen nowhere since session 26): a sweep, so that a moved crossover cannot leave a
    // default out.
    var defaults: Set<String> = []
    for experts in [128, 32] {
        for t in 1...40000 {
            let chosen = GemmVariant.choose(tokens: t, experts: experts, topK: 4)
            for variant in [chosen.gemm1, chosen.gemm2] where variant.usesWarpgroups { defaults.insert(variant.kernelName) }
        }
    }
    #expect(defaults.count == 6, "\(defaults.sorted())")
    #expect(serialised.isEmpty, "\(serialised)")
}

/// The 8-warp resident kernels (the 1-token GEMMs: 360 blocks of 256 threads for gpt-oss-120b's GEMM 1) keep three
/// blocks an SM: at most 80 registers a thread (65536 / 768, allocated by eights). More would leave two blocks an SM and
/// put GEMM 1 at 1 token into a second wave; session 31's late scales took 82 in a first draft, and a spelled-out
/// minimum of one block in the launch bounds took 110.
@Test(.enabled(if: LocalNVRTC.library != nil, "needs libnvrtc (set MOE_CUDA_LIBRARY_PATH)"))
func theOneTokenResidentKernelsKeepThreeBlocksAnSM() throws {
    let compiler = try KernelCompiler(nvrtc: LocalNVRTC.library!, cache: nil)
    let request = KernelCompileRequest(source: .experts, options: ["--ptxas-options=-v"], architecture: "sm_90a")
    let lines = try compiler.compileWithLog(request).log.split(separator: "\n").map(String.init)
    for variant in [GemmVariant.resident_1_1_4_2_3, .resident_1_1_2_4_3, .resident_1_1_8_1_3] {
        #expect(variant.warps == 8)
        guard let at = lines.firstIndex(where: { $0.contains("Compiling entry function '\(variant.kernelName)'") }),
              let used = lines[at...].first(where: { $0.contains("Used ") && $0.contains(" registers") }),
              let registers = used.split(separator: " ").drop(while: { $0 != "Used" }).dropFirst().first.flatMap({ Int($0) })
        else {
            Issue.record("no ptxas register count for \(variant.kernelName)")
            continue
        }
        #expect(registers <= 80, "\(variant.kernelName): \(registers) registers")
    }
}
