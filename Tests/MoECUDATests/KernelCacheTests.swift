import Testing

@testable import MoECUDA

#if canImport(Glibc)
import Glibc
#endif

private func request(
    source: String = "k", header: String = "h", options: [String] = [], architecture: String = "sm_90a"
) -> KernelCompileRequest {
    KernelCompileRequest(
        source: KernelSource(name: "a.cu", text: source), headers: [KernelSource(name: "b.h", text: header)],
        options: options, architecture: architecture)
}

@Test func theCacheKeyChangesWithEveryInput() {
    let base = request().cacheKey(compilerVersion: "13.0")
    #expect(base.count == 64)
    #expect(request().cacheKey(compilerVersion: "13.0") == base)
    #expect(request(source: "k2").cacheKey(compilerVersion: "13.0") != base)
    #expect(request(header: "h2").cacheKey(compilerVersion: "13.0") != base)
    #expect(request(options: ["-DX=1"]).cacheKey(compilerVersion: "13.0") != base)
    #expect(request(architecture: "sm_80").cacheKey(compilerVersion: "13.0") != base)
    #expect(request().cacheKey(compilerVersion: "13.1") != base)
    // Field boundaries are unambiguous: moving bytes between source and header changes the key.
    #expect(request(source: "kh", header: "").cacheKey(compilerVersion: "13.0") != base)
}

@Test func theCacheKeyIgnoresHeaderOrder() {
    let a = KernelSource(name: "a.h", text: "1"), b = KernelSource(name: "b.h", text: "2")
    let source = KernelSource(name: "k.cu", text: "x")
    let one = KernelCompileRequest(source: source, headers: [a, b], architecture: "sm_90a")
    let two = KernelCompileRequest(source: source, headers: [b, a], architecture: "sm_90a")
    #expect(one.cacheKey(compilerVersion: "13.0") == two.cacheKey(compilerVersion: "13.0"))
}

@Test func theCacheStoresAndLoadsImagesAtomically() throws {
    let directory = "/tmp/moekit-cache-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))/nested/dir"
    let cache = KernelCache(directory: directory)
    #expect(cache.load(key: "abc") == nil)
    #expect(cache.store(key: "abc", image: [1, 2, 3, 4]))
    #expect(cache.load(key: "abc") == [1, 2, 3, 4])
    cache.remove(key: "abc")
    #expect(cache.load(key: "abc") == nil)
}

@Test func anUnwritableCacheIsNotAnError() {
    let cache = KernelCache(directory: "/proc/moekit-cannot-write-here")
    #expect(!cache.store(key: "abc", image: [1]))
    #expect(cache.load(key: "abc") == nil)
}

@Test func theCacheFolderFollowsTheEnvironment() {
    #expect(KernelCache.defaultDirectory { $0 == "MOE_KERNEL_CACHE" ? "/x" : nil } == "/x")
    #expect(KernelCache.defaultDirectory { $0 == "XDG_CACHE_HOME" ? "/y" : ($0 == "HOME" ? "/h" : nil) } == "/y/moekit/kernels")
    #expect(KernelCache.defaultDirectory { $0 == "HOME" ? "/h" : nil } == "/h/.cache/moekit/kernels")
    #expect(KernelCache.defaultDirectory { _ in nil } == nil)
}

@Test func theEmbeddedKernelsDefineEveryKernelTheHostLaunches() {
    let experts = String(decoding: KernelSource.experts.bytes, as: UTF8.self)
    for variant in GemmVariant.allCases {
        let parts = variant.rawValue.split(separator: "_")
        let arguments = parts.dropFirst().joined(separator: ", ")
        if variant.kind == .warpgroup { #expect(variant.tileRows == 64 || variant.tileRows == 128) }
        // Registered kernels: MOE_REGISTERED_KERNEL(NAME, every number…), the name spelling a prefix of the numbers
        // (trailing defaults left out); the others: MOE_KIND(numbers…), whose leading arguments name the kernel and later
        // ones (launch bounds, register split) do not.
        let instantiated = variant.kind == .registered
            ? experts.contains("MOE_REGISTERED_KERNEL(\(variant.kernelName), \(arguments), ")
            : experts.contains("MOE_\(parts[0].uppercased())(\(arguments))") || experts.contains("MOE_\(parts[0].uppercased())(\(arguments), ")
        #expect(instantiated, "\(variant) is not instantiated")
    }
    #expect(experts.contains("moe_reduce(") && experts.contains("moe_gather_rows("))
    // Every registered kernel has its hand-over entry point beside it (CUDAKernels looks each one up).
    #expect(experts.contains("void __launch_bounds__(128 * (C + 1), K) NAME##_handover(MoEGemmParams p)"))
    #expect(GemmVariant.registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1.handOverKernelName
        == "moe_gemm_registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1_handover")
    let routing = String(decoding: KernelSource.routing.bytes, as: UTF8.self)
    for name in ["moe_route_small_##N(", "MOE_ROUTE_SMALL(8)", "moe_router_mma(", "moe_router_mma_wide(", "moe_route_finish(", "moe_topk(", "moe_plan_scan(", "moe_plan_scatter(", "moe_plan_place("] {
        #expect(routing.contains(name))
    }
    #expect(KernelSource.headers.map(\.name).sorted() == ["moe_common.cuh", "moe_params.h"])
}

/// The kernel build switches follow the environment exactly: only "1" turns one on, each defines its own symbol, and
/// the builds are cached under different keys (the options are part of it).
@Test func kernelBuildSwitchesFollowTheEnvironmentAndKeyTheCache() {
    #expect(KernelBuildSwitches.options { _ in nil } == [])
    for (variable, symbol, _) in KernelBuildSwitches.all {
        for (value, on) in [("1", true), ("0", false), ("2", false), ("yes", false), ("", false)] {
            let environment: (String) -> String? = { $0 == variable ? value : nil }
            #expect(KernelBuildSwitches.options(environment) == (on ? ["-D\(symbol)=1"] : []), "\(variable)=\(value)")
        }
    }
    #expect(KernelBuildSwitches.options { _ in "1" }.count == KernelBuildSwitches.all.count)
    #expect(Set(KernelBuildSwitches.all.map(\.symbol)).count == KernelBuildSwitches.all.count)
    let plain = KernelCompileRequest(source: .routing, architecture: "sm_90a")
    let switched = KernelCompileRequest(source: .routing, options: KernelBuildSwitches.options { _ in "1" }, architecture: "sm_90a")
    #expect(plain.cacheKey(compilerVersion: "13.0") != switched.cacheKey(compilerVersion: "13.0"))
    // Each switch is defined for its own module only, so it leaves the other modules' cache keys alone.
    let every: (String) -> String? = { _ in "1" }
    #expect(KernelBuildSwitches.options(every, module: KernelSource.routing.name) == ["-DMOE_WIDE_ROUTER_HALF=1", "-DMOE_ROUTER_TOPK=1"])
    #expect(KernelBuildSwitches.options(every, module: KernelSource.experts.name)
        == ["-DMOE_RESIDENT_BULK=1", "-DMOE_ALIAS_EXPERTS=1", "-DMOE_RING_WHOLE=1"])
    #expect(KernelBuildSwitches.options(every, module: KernelSource.ceilings.name).isEmpty)
    #expect(Set(KernelBuildSwitches.all.map(\.module)).isSubset(of: [KernelSource.routing.name, KernelSource.experts.name]))
}

/// The warp-specialised (registered) kernels move registers with setmaxnreg: the consumers' increase only succeeds if the producers free
/// enough of what the launch gave the block (65536 / threads, rounded down to 8, a thread), or they spin forever —
/// session 13's first registered kernel (64 / 224 with 384 threads) hung this way. The kernels static_assert it too.
@Test func everyWarpSpecialisedKernelsRegisterSplitFitsItsLaunch() {
    let experts = String(decoding: KernelSource.experts.bytes, as: UTF8.self)
    var checked = 0
    for line in experts.split(separator: "\n") where line.hasPrefix("MOE_REGISTERED_KERNEL(moe_gemm_") {
        // MOE_REGISTERED_KERNEL(NAME, MI, N, L, C, B, S, Q, T, P, W, U, K, E, F, PR, CR): one producer warpgroup, C
        // consumers, K blocks an SM, F A-fragment buffers.
        let name = String(line.dropFirst("MOE_REGISTERED_KERNEL(".count).prefix(while: { $0 != "," }))
        let numbers = String(line.drop(while: { $0 != "," }).dropFirst().prefix(while: { $0 != ")" }))
            .split(separator: ",").map { Int($0.filter { $0 != " " })! }
        #expect(numbers.count == 16, "\(line)")
        guard numbers.count == 16 else { continue }
        let (consumers, blocks) = (numbers[3], numbers[11])
        let (producerRegisters, consumerRegisters) = (numbers[14], numbers[15])
        // The host's reading of the name (GemmVariant) agrees with the numbers the kernel is built with.
        let variant = GemmVariant.allCases.first { $0.kernelName == name }
        #expect(variant != nil, "\(name) has no GemmVariant")
        if let variant {
            #expect(variant.tileRows == numbers[1] && variant.stages == numbers[2] && variant.consumerWarpgroups == consumers, "\(line)")
            #expect(variant.blocksPerSM == blocks && variant.fragmentBuffers == numbers[13], "\(line)")
            #expect(variant.roundedWidths == (numbers[9] >= 16) && variant.usesTensorCopies == (numbers[7] == 1), "\(line)")
        }
        let threads = 128 * (1 + consumers)
        let pool = threads * (65536 / blocks / threads / 8 * 8)
        #expect(128 * producerRegisters + 128 * consumers * consumerRegisters <= pool, "\(line)")
        checked += 1
    }
    #expect(checked == GemmVariant.allCases.filter { $0.kind == .registered }.count)
}
