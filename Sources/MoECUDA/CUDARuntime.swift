import CCUDA
import Dispatch
import MoECore

/// The process's CUDA stack: driver, device 0 and its primary context, NVRTC and the kernel cache, plus the
/// compiled kernel modules (compiled at first use, then cached on disk). Loaded once per process.
public final class CUDARuntime: @unchecked Sendable {
    public let driver: CUDADriver
    public let device: CUDADevice
    public let compiler: KernelCompiler
    private var modules: [String: CUDAModule] = [:]
    private let lock = DispatchSemaphore(value: 1)

    /// MoEKit's kernels need bf16 mma.sync and cp.async: compute capability 8.0 or newer.
    public static let minimumComputeCapability = (major: 8, minor: 0)

    init(driver: CUDADriver, device: CUDADevice, compiler: KernelCompiler) {
        self.driver = driver
        self.device = device
        self.compiler = compiler
    }

    private static let loaded: Result<CUDARuntime, CUDAError> = {
        do throws(CUDAError) {
            let driver = try CUDADriver.load()
            let device = try CUDADevice(driver: driver, ordinal: try processOrdinal(driver))
            let (major, minor) = device.computeCapability
            if (major, minor) < minimumComputeCapability {
                throw CUDAError.unsupportedDevice(
                    "\(device.name) is sm_\(major)\(minor); MoEKit's kernels need sm_80 or newer (bf16 tensor cores)")
            }
            let nvrtc = try NVRTCLibrary.load()
            let cache = KernelCache.defaultDirectory().map { KernelCache(directory: $0) }
            let compiler = try KernelCompiler(nvrtc: nvrtc, cache: cache)
            return .success(CUDARuntime(driver: driver, device: device, compiler: compiler))
        } catch {
            return .failure(error)
        }
    }()

    /// The device this process works on: an expert-parallel rank's own GPU (MOE_LOCAL_RANK modulo the device count,
    /// as `CUDAExpertParallelLayer.deviceOrdinal` picks it), else device 0. So a rank on GPU r holds no idle context
    /// on GPU 0 (which would also fail under exclusive-process compute mode).
    static func processOrdinal(_ driver: CUDADriver) throws(CUDAError) -> Int {
        guard let local = localRank(currentEnvironment), local > 0 else { return 0 }
        return CUDAExpertParallelLayer.deviceOrdinal(localRank: local, deviceCount: try driver.deviceCount())
    }

    /// A rank's index on its node as RankEnvironment reads it: MOE_LOCAL_RANK, else MOE_RANK (a launcher that sets
    /// only the rank, on one node); nil outside a rank. One rule, so the shared runtime and the rank's layer pick
    /// the same GPU.
    static func localRank(_ lookup: (String) -> String?) -> Int? {
        (lookup("MOE_LOCAL_RANK") ?? lookup("MOE_RANK")).flatMap { Int($0) }
    }

    /// The shared runtime, or why there is none (library missing, no device, old device…).
    public static func shared() throws(CUDAError) -> CUDARuntime { try loaded.get() }

    /// The module compiled from `source` with extra NVRTC `options` for this device (compiled or read from the cache
    /// on first use).
    public func module(_ source: KernelSource, options: [String] = []) throws(CUDAError) -> CUDAModule {
        lock.wait()
        defer { lock.signal() }
        let name = ([source.name] + options).joined(separator: " ")
        if let module = modules[name] { return module }
        try device.makeCurrent()
        let request = KernelCompileRequest(source: source, options: options, architecture: device.architecture)
        let (image, key) = try compiler.image(for: request)
        let module: CUDAModule
        do throws(CUDAError) {
            module = try CUDAModule(device: device, image: image)
        } catch {
            // A damaged cache entry: drop it and compile afresh once.
            compiler.cache?.remove(key: key)
            module = try CUDAModule(device: device, image: try compiler.compile(request))
        }
        modules[name] = module
        return module
    }

    public var summary: String {
        "\(device.summary); libcuda \(driver.libraryPath); NVRTC \(compiler.compilerVersion) (\(compiler.nvrtc.libraryPath))"
    }
}

/// The layer's kernels, looked up once.
final class LayerKernels: @unchecked Sendable {
    private let routeSmall: [String: CUDAFunction]
    private let routerNarrow, routerWide: CUDAFunction
    let routeFinish: CUDAFunction
    let topk: CUDAFunction
    let planScan: CUDAFunction
    let planScatter: CUDAFunction
    /// The single-rank plan's placement and gather after moe_topk (LaunchPlan.planBuild).
    let planPlace: CUDAFunction
    let reduce: CUDAFunction
    let gatherRows: CUDAFunction
    private let experts: CUDAModule
    private var gemms: [GemmVariant: CUDAFunction] = [:]
    /// The registered kernels' hand-over entry points (`<name>_handover`, LaunchPlan.tileHandOver).
    private var handOverGemms: [GemmVariant: CUDAFunction] = [:]

    /// The router over `tokens` rows with K split `splits` ways: the kernel LaunchPlan.routerIsWide picks, in the shape
    /// LaunchPlan.routerShape gives it (one decision for both).
    func launchRouter(
        tokens: Int, splits: Int, config: MoEConfig, stream: CUDAStream, parameters: MoERoutingParams
    ) throws(CUDAError) {
        let kernel = LaunchPlan.routerIsWide(tokens: tokens, splits: splits, config: config) ? routerWide : routerNarrow
        try kernel.launch(LaunchPlan.routerShape(tokens: tokens, splits: splits, config: config), stream: stream, parameters: parameters)
    }

    /// `traced`: the MOE_TRACE build, whose kernels mark their spans in a trace buffer (KernelTrace).
    init(runtime: CUDARuntime, traced: Bool = false) throws(CUDAError) {
        let routing = try runtime.module(.routing, options: KernelBuildSwitches.options(traced: traced, module: .routing))
        experts = try runtime.module(.experts, options: KernelBuildSwitches.options(traced: traced, module: .experts))
        var small: [String: CUDAFunction] = [:]
        for bound in [1, 2, 4, 8] { small["moe_route_small_\(bound)"] = try routing.function("moe_route_small_\(bound)") }
        routeSmall = small
        routerNarrow = try routing.function("moe_router_mma")
        routerWide = try routing.function("moe_router_mma_wide")
        routeFinish = try routing.function("moe_route_finish")
        topk = try routing.function("moe_topk")
        planScan = try routing.function("moe_plan_scan")
        planScatter = try routing.function("moe_plan_scatter")
        planPlace = try routing.function("moe_plan_place")
        reduce = try experts.function("moe_reduce")
        gatherRows = try experts.function("moe_gather_rows")
        for variant in GemmVariant.allCases { gemms[variant] = try experts.function(variant.kernelName) }
        for variant in GemmVariant.allCases where variant.kind == .registered {
            handOverGemms[variant] = try experts.function(variant.handOverKernelName)
        }
    }

    /// `handOver`: the registered kernel's entry point with the tile hand-over's counters (the plan's
    /// `registeredHandOver`); every other launch takes the plain one.
    func gemm(_ variant: GemmVariant, handOver: Bool = false) -> CUDAFunction {
        handOver ? handOverGemms[variant]! : gemms[variant]!
    }
    func routeSmall(_ plan: LaunchPlan) -> CUDAFunction { routeSmall[plan.routeSmallKernel]! }
}

/// The layer's weights on the device, in the repacked layout (WeightRepacking.swift).
final class DeviceLayer: @unchecked Sendable {
    /// The whole layer's shape; the expert buffers hold only `experts` (all E on one GPU, a rank's own under EP).
    let config: MoEConfig
    /// The checkpoint experts whose weights are here: a tile's expert i is experts[i].
    let experts: [Int]
    let routerWeight: DeviceBuffer
    let routerBias: DeviceBuffer
    let gateUpCodes: DeviceBuffer
    let gateUpScales: DeviceBuffer
    let gateUpBias: DeviceBuffer
    let downCodes: DeviceBuffer
    let downScales: DeviceBuffer
    let downBias: DeviceBuffer
    let gateUpGeometry: (groups: Int, chunks: Int, scaleGroups: Int)
    let downGeometry: (groups: Int, chunks: Int, scaleGroups: Int)

    init(device: CUDADevice, layer: RepackedLayer) throws(CUDAError) {
        config = layer.config
        experts = layer.experts
        let held = layer.experts.count == layer.config.experts ? "all \(held(layer))" : held(layer)
        let what = "the weights of \(held) of one MoE layer"
        let advice = layer.experts.count > 1
            ? "Spread the experts over more GPUs (moe launch --ranks R): each rank holds only its own."
            : "A smaller model is needed on this GPU."
        func upload<T>(_ values: [T]) throws(CUDAError) -> DeviceBuffer {
            try device.allocating(what, bytes: layer.bytes, advice: advice) { () throws(CUDAError) -> DeviceBuffer in
                let buffer = try DeviceBuffer(device: device, byteCount: values.count * MemoryLayout<T>.stride)
                try buffer.upload(values)
                return buffer
            }
        }
        routerWeight = try upload(layer.routerWeight)
        routerBias = try upload(layer.routerBias)
        gateUpCodes = try upload(layer.gateUp.codes)
        gateUpScales = try upload(layer.gateUp.scales)
        gateUpBias = try upload(layer.gateUpBias)
        downCodes = try upload(layer.down.codes)
        downScales = try upload(layer.down.scales)
        downBias = try upload(layer.downBias)
        gateUpGeometry = (layer.gateUp.groups, layer.gateUp.chunks, layer.gateUp.scaleGroups)
        downGeometry = (layer.down.groups, layer.down.chunks, layer.down.scaleGroups)
    }

    var bytes: Int {
        [routerWeight, routerBias, gateUpCodes, gateUpScales, gateUpBias, downCodes, downScales, downBias]
            .reduce(0) { $0 + $1.byteCount }
    }
}

private func held(_ layer: RepackedLayer) -> String {
    "\(layer.experts.count) expert\(layer.experts.count == 1 ? "" : "s")"
}
