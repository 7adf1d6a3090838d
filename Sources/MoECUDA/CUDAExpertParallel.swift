import CCUDA
import Dispatch
import MoECore

/// moe_ep.cu's MoEEPParams: every field 8 bytes, in the same order, so the layouts agree.
struct CUDAExpertParallelParams {
    var peerHeaps: UInt64 = 0, ownHeap: UInt64 = 0
    var controlOffset: Int64 = 0, flagsOffset: Int64 = 0, routingIdsOffset: Int64 = 0, routingWeightsOffset: Int64 = 0
    var dispatchOffset: Int64 = 0, combineOffset: Int64 = 0
    var ownerOfExpert: UInt64 = 0, x: UInt64 = 0, localIds: UInt64 = 0, localWeights: UInt64 = 0
    var slotToSorted: UInt64 = 0, sortedToSlot: UInt64 = 0, tiles: UInt64 = 0, tileCount: UInt64 = 0
    var localTiles: UInt64 = 0, localTileCount: UInt64 = 0, expertRows: UInt64 = 0
    var rank: Int64 = 0, world: Int64 = 0, tokensPerRank: Int64 = 0, validTokens: Int64 = 0, topK: Int64 = 0
    var hidden: Int64 = 0, experts: Int64 = 0, maxTiles: Int64 = 0, phase: Int64 = 0, timeoutNs: Int64 = 0
    var nodeRanks: Int64 = 0, nodes: Int64 = 0
    var railTokensOffset: Int64 = 0, railCombineOutOffset: Int64 = 0, railCombineInOffset: Int64 = 0
    var arrivals: UInt64 = 0
    var heldExpertIndex: UInt64 = 0
    var traceSpans: UInt64 = 0, tracePhase: Int64 = 0
}

/// moe_ep.cu's MoEEPPlanParams (the fused plan-and-tiles kernel): the routing parameters, then the EP ones, each at
/// its C offset (MoERoutingParams' size rounded up to 8; checked by a test).
struct CUDAExpertParallelPlanParams {
    var routing: MoERoutingParams
    var ep: CUDAExpertParallelParams
}

extension CUDAExpertParallelParams {
    /// Every heap region's byte offset in `layout`.
    mutating func setRegionOffsets(_ layout: CUDAExpertParallelLayout) {
        controlOffset = Int64(layout.offset(of: .control))
        flagsOffset = Int64(layout.offset(of: .flags))
        routingIdsOffset = Int64(layout.offset(of: .routingIds))
        routingWeightsOffset = Int64(layout.offset(of: .routingWeights))
        dispatchOffset = Int64(layout.offset(of: .dispatch))
        combineOffset = Int64(layout.offset(of: .combine))
        railTokensOffset = Int64(layout.offset(of: .railTokens))
        railCombineOutOffset = Int64(layout.offset(of: .railCombineOut))
        railCombineInOffset = Int64(layout.offset(of: .railCombineIn))
    }
}

/// The phases a GPU layer is timed in (the order of MoEParallel's ExpertParallelStage).
public enum CUDAExpertParallelPhase: Int, CaseIterable, Sendable {
    case route, metadata, dispatch, experts, combine, reduce
}

/// Failures of the GPU expert-parallel layer that name a rank and a phase.
public enum CUDAExpertParallelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A device barrier gave up (timeout, or aborted because the host saw a peer fail).
    case deviceBarrier(rank: Int, failure: CUDAExpertParallelFailure, timeoutSeconds: Double)
    /// The device failed while a peer was seen failing: most likely a store into the dead peer's memory.
    case peerFailedDuringDeviceWork(rank: Int, why: String, deviceError: String)

    public var description: String {
        switch self {
        case .deviceBarrier(let rank, let failure, let seconds):
            "rank \(rank): \(failure) (timeout \(seconds) s)"
        case .peerFailedDuringDeviceWork(let rank, let why, let deviceError):
            "rank \(rank): \(why) while this rank's GPU work ran; the device then failed (\(deviceError)), "
                + "most likely storing into the gone peer's memory"
        }
    }
}

/// The host half of the all-to-all baseline: the count exchange and host barriers (the CPU heap provides them).
public protocol CUDAExpertParallelHost: AnyObject {
    /// Stores this rank's [R] per-destination (token, slot) counts into every peer, waits for every rank (a
    /// host synchronisation), and returns all rows: [R·R], row = source rank.
    func exchangeCounts(_ counts: [Int32]) throws -> [Int32]
    /// A host barrier at the all-to-all's dispatch (6) or combine (7) step (ExpertParallelPhase raw values).
    func hostBarrier(phase: UInt8) throws
}

/// Output of one GPU expert-parallel layer on this rank.
public struct CUDAExpertParallelResult: Sendable {
    /// [T_r, H] bf16 values as float.
    public var hidden: [Float]
    /// Per phase (CUDAExpertParallelPhase order) seconds, when timed; empty otherwise.
    public var phaseSeconds: [Double]
    /// Per phase bytes written (moved) and bytes stored into other ranks' memory (remote).
    public var bytesMoved: [Double]
    public var bytesRemote: [Double]
    /// Device time of the graph replay(s) (symmetric graph execution), seconds per replay.
    public var layerSeconds: Double?
}

/// One rank's expert-parallel MoE layer on a GPU (DESIGN §4), over a GPU symmetric heap opened by every peer
/// through CUDA IPC. The symmetric path is one CUDA graph per global token count (route → publish → device
/// barrier → global plan → dispatch → barrier → local grouped GEMMs → combine → barrier → reduce), with no host
/// synchronisation inside; the all-to-all baseline runs eagerly with host-synchronised count exchange and
/// copies through the peer mappings (cuMemcpyDtoDAsync).
///
/// Output is bit-identical to `CUDABackend.forward` on the global batch: the router kernel and GEMM variant are
/// chosen from the global token count, the global plan gives every row its single-rank sorted position, and every
/// token's k rows are summed on its home rank in slot order by the same reduce kernel.
///
/// Token split (as ExpertParallelRunner's): T_loc = ⌈T/R⌉; rank r holds tokens [r·T_loc, min(T, (r+1)·T_loc)).
public final class CUDAExpertParallelLayer: @unchecked Sendable {
    public let config: MoEConfig
    public let rank: Int
    public let world: Int
    public let capacity: Int
    public let layout: CUDAExpertParallelLayout
    public let runtime: CUDARuntime
    public let ownerOfExpert: [Int]
    /// [E]: where this GPU holds the expert's weights, −1 for another rank's. A rank uploads only its own experts
    /// (in expert order), so the tiles it computes name them by this index.
    public let heldExpertIndex: [Int]
    public let timeoutSeconds: Double
    /// Polled every 10 ms while this rank waits on the device; returning a reason makes the device barriers
    /// give up at once (the runner reports peers the CPU heap sees dead or aborted).
    public var peerWatch: (@Sendable () -> String?)?
    /// The all-to-all baseline's transport: NCCL send/recv through this communicator when set (one GPU per
    /// rank, any number of nodes); otherwise copies through the peers' IPC-mapped heaps (ranks on one node).
    public var allToAllCommunicator: NCCLCommunicator?
    /// The nodes of the job: IPC stores and device barriers reach this rank's node; the rest goes over the rail.
    public let grid: NodeGrid
    /// This rank's rail (NCCL, one rank per node, rail rank = node): needed by the symmetric path across nodes,
    /// whose graph captures its sends and receives.
    public var railCommunicator: NCCLCommunicator?

    let kernels: LayerKernels
    let layer: DeviceLayer
    let stream: CUDAStream
    let sideStream: CUDAStream
    let barrierKernel, publishKernel, countKernel, scanKernel, scatterKernel, localTilesKernel: CUDAFunction
    let dispatchKernel, combineKernel, gatherRowsKernel, scatterRowsKernel: CUDAFunction
    let forwardRoutingKernel, dispatchForwardKernel, combineCollectKernel, copyBytesKernel, planSmallKernel: CUDAFunction
    /// `MOE_CUDA_EP_FUSED=1` (one node): the barriers inside the publish, dispatch and combine kernels, the global plan
    /// and this rank's tiles in one kernel.
    let publishBarrierKernel, dispatchBarrierKernel, combineBarrierKernel, planSmallTilesKernel: CUDAFunction
    let heap: DeviceBuffer
    private var peerBases: [CUdeviceptr]
    private var openedPeers: [CUdeviceptr] = []
    let peerHeaps: DeviceBuffer
    let owners, heldExperts: DeviceBuffer
    // Local tokens and routing.
    let x, output, logits, localIds, localWeights: DeviceBuffer
    let localBlockCounts, localExpertCounts, localOffsets, localSortedToSlot, localSlotToSorted, localSortedWeights: DeviceBuffer
    let localPlanTiles, localPlanTileCount, arrivals, localRouterPartials: DeviceBuffer
    // The global plan.
    let blockCounts, blockPrefix, expertCounts, expertOffsets, sortedToSlot, slotToSorted, sortedWeights: DeviceBuffer
    let tiles, tileCount, localTiles, localTileCount: DeviceBuffer
    /// u32 [4]: the fused barriers' block counts (MoEEPParams.arrivals).
    let barrierArrivals: DeviceBuffer
    let intermediate, expertRows: DeviceBuffer
    // All-to-all scratch.
    let sendRows, packIndex, sendIds, sendWeights, permutation, a2aSortedWeights, a2aTiles, a2aTileCount: DeviceBuffer
    let unpackIndex, a2aCombine, routedMarks: DeviceBuffer
    private var buckets: [Int: Bucket] = [:]
    /// The tensor maps of registered kernels with tensor copies, by what they encode (withTensorMaps).
    private let tensorMaps = TensorMapCache()
    private var bucketUse = RecentlyUsed<Int>()
    /// Token counts whose graphs a layer keeps: a server sees every batch size up to its limit, and each captured
    /// graph holds device memory for its nodes; past this many, the least recently used bucket's graphs go.
    static let maxBuckets = 256
    private var closed = false

    final class Bucket {
        let tokens: Int
        let tokensPerRank: Int
        let validTokens: Int
        let plan: LaunchPlan
        let maxTiles: Int
        var graphs: [RoutingMode: CUDAGraphExec] = [:]
        init(tokens: Int, tokensPerRank: Int, validTokens: Int, plan: LaunchPlan, maxTiles: Int) {
            self.tokens = tokens
            self.tokensPerRank = tokensPerRank
            self.validTokens = validTokens
            self.plan = plan
            self.maxTiles = maxTiles
        }
    }

    /// moe_ep.cu with what it includes: the routing plan kernels (so the routing module's build switches) and its node
    /// header.
    static func kernelRequest(architecture: String, traced: Bool = tracing) -> KernelCompileRequest {
        KernelCompileRequest(
            source: .expertParallel, headers: KernelSource.headers + [.routing, .expertParallelNode],
            options: KernelBuildSwitches.options(traced: traced, module: .routing), architecture: architecture)
    }

    /// [E]: each expert's index among `rank`'s experts in expert order, −1 for the other ranks' experts.
    static func heldExpertIndex(ownerOfExpert: [Int], rank: Int) -> [Int] {
        var next = 0
        return ownerOfExpert.map { owner in
            guard owner == rank else { return -1 }
            defer { next += 1 }
            return next
        }
    }

    /// The GPU a rank uses: one process per GPU, ranks beyond the device count share GPUs round-robin.
    public static func deviceOrdinal(localRank: Int, deviceCount: Int) -> Int { localRank % max(1, deviceCount) }

    public static func deviceCount() throws(CUDAError) -> Int {
        try CUDARuntime.shared().driver.deviceCount()
    }

    /// Allocates this rank's heap (zeroed) and scratch, uploads the weights, compiles the kernels.
    /// - Parameters:
    ///   - capacity: T_cap, the most tokens per rank per step.
    ///   - ownerOfExpert: [E] the rank owning each expert.
    ///   - nodes: N, the job's nodes (world/N ranks each, rank = node·L + local).
    public init(
        weights: MoELayerWeights, rank: Int, world: Int, capacity: Int, ownerOfExpert: [Int], deviceOrdinal: Int,
        timeoutSeconds: Double, nodes: Int = 1
    ) throws {
        let config = weights.config
        guard ownerOfExpert.count == config.experts, ownerOfExpert.allSatisfy({ $0 >= 0 && $0 < world }) else {
            throw CUDAError.invalidArgument("the expert map must give each of the \(config.experts) experts a rank in 0..<\(world)")
        }
        guard rank >= 0, rank < world else { throw CUDAError.invalidArgument("rank \(rank) is outside 0..<\(world)") }
        guard timeoutSeconds > 0 else { throw CUDAError.invalidArgument("the barrier timeout must be > 0 s") }
        self.config = config
        self.rank = rank
        self.world = world
        self.capacity = capacity
        self.ownerOfExpert = ownerOfExpert
        let heldIndex = Self.heldExpertIndex(ownerOfExpert: ownerOfExpert, rank: rank)
        heldExpertIndex = heldIndex
        self.timeoutSeconds = timeoutSeconds
        grid = try NodeGrid(world: world, nodes: nodes)
        layout = try CUDAExpertParallelLayout(ranks: world, capacity: capacity, topK: config.topK, hidden: config.hidden, nodes: nodes)
        let shared = try CUDARuntime.shared()
        if deviceOrdinal == shared.device.ordinal {
            runtime = shared
        } else {
            runtime = CUDARuntime(
                driver: shared.driver, device: try CUDADevice(driver: shared.driver, ordinal: deviceOrdinal),
                compiler: shared.compiler)
        }
        let device = runtime.device
        try device.makeCurrent()
        kernels = try LayerKernels(runtime: runtime, traced: Self.tracing)
        // Uploaded in the order heldExpertIndex numbers them: expert e's weights at index heldExpertIndex[e].
        let held = heldIndex.indices.filter { heldIndex[$0] >= 0 }
        layer = try DeviceLayer(device: device, layer: RepackedLayer(weights, selection: held))
        stream = try CUDAStream(device: device)
        sideStream = try CUDAStream(device: device)
        let request = Self.kernelRequest(architecture: device.architecture)
        let (image, _) = try runtime.compiler.image(for: request)
        let module = try CUDAModule(device: device, image: image)
        barrierKernel = try module.function("moe_ep_barrier")
        publishKernel = try module.function("moe_ep_publish")
        countKernel = try module.function("moe_ep_count")
        scanKernel = try module.function("moe_plan_scan")
        scatterKernel = try module.function("moe_plan_scatter")
        localTilesKernel = try module.function("moe_ep_local_tiles")
        dispatchKernel = try module.function("moe_ep_dispatch")
        combineKernel = try module.function("moe_ep_combine")
        gatherRowsKernel = try module.function("moe_ep_gather_rows")
        scatterRowsKernel = try module.function("moe_ep_scatter_rows")
        forwardRoutingKernel = try module.function("moe_ep_forward_routing")
        dispatchForwardKernel = try module.function("moe_ep_dispatch_forward")
        combineCollectKernel = try module.function("moe_ep_combine_collect")
        copyBytesKernel = try module.function("moe_ep_copy_bytes")
        planSmallKernel = try module.function("moe_ep_plan_small")
        publishBarrierKernel = try module.function("moe_ep_publish_barrier")
        dispatchBarrierKernel = try module.function("moe_ep_dispatch_barrier")
        combineBarrierKernel = try module.function("moe_ep_combine_barrier")
        planSmallTilesKernel = try module.function("moe_ep_plan_small_tiles")

        let (R, T, k, H, I, E) = (world, capacity, config.topK, config.hidden, config.intermediate, config.experts)
        let what = "rank \(rank)'s symmetric heap (\(CUDAError.mebibytes(layout.totalBytes))) and scratch for \(T) tokens per rank"
        let advice = "Lower --max-tokens-per-rank: the heap and scratch are sized for that many tokens per rank."
        func buffer(_ bytes: Int) throws(CUDAError) -> DeviceBuffer {
            try device.allocating(what, bytes: nil, advice: advice) { () throws(CUDAError) -> DeviceBuffer in
                try DeviceBuffer(device: device, byteCount: bytes)
            }
        }
        heap = try buffer(layout.totalBytes)
        peerBases = [CUdeviceptr](repeating: 0, count: R)
        peerBases[rank] = heap.address
        peerHeaps = try buffer(R * 8)
        owners = try buffer(E * 4)
        try owners.upload(ownerOfExpert.map { Int32($0) })
        heldExperts = try buffer(E * 4)
        try heldExperts.upload(heldExpertIndex.map { Int32($0) })
        x = try buffer(T * H * 2)
        output = try buffer(T * H * 2)
        logits = try buffer(T * E * 4)
        localIds = try buffer(T * k * 4)
        localWeights = try buffer(T * k * 4)
        localBlockCounts = try buffer(LaunchPlan.tokenBlocks(tokens: T) * E * 4)
        localExpertCounts = try buffer(E * 4)
        localOffsets = try buffer((E + 1) * 4)
        localSortedToSlot = try buffer(T * k * 4)
        localSlotToSorted = try buffer(T * k * 4)
        localSortedWeights = try buffer(T * k * 4)
        localPlanTiles = try buffer(LaunchPlan.tileBound(slots: T * k, experts: E, tileRows: 8) * 16)
        localPlanTileCount = try buffer(4)
        arrivals = try buffer(Int(MOE_ROUTER_TILE_COUNTERS) * 4)
        let decode = LaunchPlan(tokens: min(T, Int(MOE_FUSED_ROUTING_MAX_TOKENS)), config: config)
        localRouterPartials = try buffer(max(LaunchPlan.routerPartialCapacity(config), decode.partialLogitFloats) * 4)
        let globalSlots = R * T * k
        let globalTiles = LaunchPlan.tileBound(slots: globalSlots, experts: E, tileRows: 8)
        blockCounts = try buffer(LaunchPlan.tokenBlocks(tokens: R * T) * E * 4)
        blockPrefix = try buffer(LaunchPlan.tokenBlocks(tokens: R * T) * E * 4)
        expertCounts = try buffer(E * 4)
        expertOffsets = try buffer((E + 1) * 4)
        sortedToSlot = try buffer(globalSlots * 4)
        slotToSorted = try buffer(globalSlots * 4)
        sortedWeights = try buffer(globalSlots * 4)
        tiles = try buffer(globalTiles * 16)
        tileCount = try buffer(4)
        localTiles = try buffer(globalTiles * 16)
        localTileCount = try buffer(4)
        barrierArrivals = try buffer(16)
        intermediate = try buffer(globalSlots * I * 2)
        expertRows = try buffer(globalSlots * H * 2)
        sendRows = try buffer(T * k * H * 2)
        packIndex = try buffer(T * k * 4)
        sendIds = try buffer(T * k * 4)
        sendWeights = try buffer(T * k * 4)
        permutation = try buffer(globalSlots * 4)
        a2aSortedWeights = try buffer(globalSlots * 4)
        a2aTiles = try buffer(globalTiles * 16)
        a2aTileCount = try buffer(4)
        unpackIndex = try buffer(T * k * 4)
        a2aCombine = try buffer(T * k * H * 2)
        routedMarks = try buffer(T * k * 4)
        for zeroed in [heap, x, arrivals, routedMarks, tileCount, localTileCount, localPlanTileCount, barrierArrivals] {
            try zeroed.fill(byte: 0, stream: stream)
        }
        try stream.synchronize()
    }

    deinit { close() }

    public var deviceSummary: String { runtime.device.summary }

    /// The layer's device weights on this rank: its own experts only (and the whole router).
    public var heldWeightsSummary: String {
        "weights of \(layer.experts.count) of \(config.experts) experts on the GPU, \(CUDAError.mebibytes(layer.bytes))"
    }

    // MARK: IPC

    /// This rank's heap as a record for its peers.
    public func handleRecord(pid: Int) throws(CUDAError) -> CUDAIPCHandleRecord {
        var handle = CUipcMemHandle()
        let driver = runtime.driver
        try runtime.device.makeCurrent()
        try driver.call("cuIpcGetMemHandle", driver.api.cuIpcGetMemHandle?(&handle, heap.address))
        let bytes = withUnsafeBytes(of: &handle) { Array($0) }
        return CUDAIPCHandleRecord(deviceOrdinal: runtime.device.ordinal, heapBytes: layout.totalBytes, pid: pid, handle: bytes)
    }

    /// Opens every peer's heap (records indexed by rank; this rank's own is skipped, and nil records are peers
    /// on other nodes, which CUDA IPC cannot reach) and publishes the bases to the kernels. Throws naming the
    /// peer whose heap does not match or cannot be opened.
    public func connect(peers records: [CUDAIPCHandleRecord?]) throws(CUDAError) {
        guard records.count == world else { throw .invalidArgument("\(records.count) heap records for \(world) ranks") }
        let driver = runtime.driver
        try runtime.device.makeCurrent()
        for (peer, entry) in records.enumerated() where peer != rank {
            guard let record = entry else { continue }
            guard record.heapBytes == layout.totalBytes else {
                throw .invalidArgument(
                    "rank \(peer)'s GPU heap is \(record.heapBytes) bytes; this rank's is \(layout.totalBytes): the ranks disagree on R, T_cap, k or H")
            }
            var handle = CUipcMemHandle()
            withUnsafeMutableBytes(of: &handle) { raw in for i in 0..<64 { raw[i] = record.handle[i] } }
            var base: CUdeviceptr = 0
            do throws(CUDAError) {
                try driver.call(
                    "cuIpcOpenMemHandle",
                    driver.api.cuIpcOpenMemHandle?(&base, handle, UInt32(CCUDA_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)))
            } catch {
                throw .invalidArgument("opening rank \(peer)'s GPU heap (pid \(record.pid), device \(record.deviceOrdinal)) failed: \(error)")
            }
            openedPeers.append(base)
            peerBases[peer] = base
        }
        try peerHeaps.upload(peerBases.map { UInt64($0) })
    }

    /// Rank `peer`'s heap base in this process (this rank's own allocation, or the opened IPC mapping).
    func peerBaseAddress(_ peer: Int) -> CUdeviceptr { peerBases[peer] }

    /// Throws unless every peer's heap is mapped here (paths that store into peers' heaps need them all; the
    /// symmetric path across nodes needs only this node's: `nodeOnly`).
    func requireMappedPeers(_ what: String, nodeOnly: Bool = false) throws(CUDAError) {
        let needed = nodeOnly ? grid.nodeRanks(of: rank) : 0..<world
        if let peer = needed.first(where: { peerBases[$0] == 0 }) {
            throw .invalidArgument(
                "rank \(rank): \(what) stores into every peer's GPU heap, but rank \(peer)'s is not mapped here (another node: CUDA IPC reaches one host only)")
        }
    }

    /// Closes the peers' mappings (on every exit path: deinit calls it too). The heap itself is freed with the layer.
    public func close() {
        guard !closed else { return }
        closed = true
        _ = try? runtime.device.makeCurrent()
        _ = try? stream.synchronize()
        for base in openedPeers { _ = runtime.driver.api.cuIpcCloseMemHandle?(base) }
        openedPeers.removeAll()
        // The graphs go before the rail communicator: destroying a graph hands NCCL's captured work back to its
        // communicator, and from NCCL 2.26 on its teardown (ncclCommAbort too) waits until every such graph is gone.
        releaseGraphs(of: Array(buckets.values), closing: true)
        allToAllCommunicator = nil
        railCommunicator = nil
    }

    /// Makes any device barrier of this rank give up now (it records "aborted" naming the rank it waited for).
    public func requestAbort() {
        _ = try? runtime.device.makeCurrent()
        let address = heap.address + CUdeviceptr(layout.offset(of: .control) + CUDAExpertParallelLayout.Control.abortWord)
        // The front end writes the word without a kernel. A memset is a kernel, and it may find no free SM: with
        // programmatic launches the GEMM blocks behind a waiting barrier can hold every SM until the barrier ends.
        if runtime.driver.api.cuStreamWriteValue32?(sideStream.handle, address, 1, 0) != 0 {
            _ = runtime.driver.api.cuMemsetD32Async?(address, 1, 1, sideStream.handle)  // absent or refused
        }
        _ = try? sideStream.synchronize()
    }

    /// The failure a device barrier recorded, if any.
    public func deviceFailure() throws(CUDAError) -> CUDAExpertParallelFailure? {
        CUDAExpertParallelFailure.decode(try heap.download(UInt8.self, count: 32, offsetBytes: layout.offset(of: .control)))
    }

    // MARK: buckets

    /// The share of a global batch of T tokens: (T_loc, T_r).
    public static func share(tokens: Int, world: Int, rank: Int) -> (tokensPerRank: Int, validTokens: Int) {
        let perRank = (tokens + world - 1) / world
        return (perRank, max(0, min(perRank, tokens - rank * perRank)))
    }

    /// The bucket of the forward of `tokens` that just ran, for the queries about it: a query never makes a bucket
    /// (which could drop another's graphs).
    func ranBucket(tokens: Int) throws(CUDAError) -> Bucket {
        guard let bucket = buckets[tokens] else { throw .invalidArgument("no forward of \(tokens) tokens has run on rank \(rank)'s GPU layer") }
        return bucket
    }

    func bucket(tokens: Int) throws(CUDAError) -> Bucket {
        guard !closed else { throw .invalidArgument("rank \(rank)'s GPU layer is closed: its peers' heaps are unmapped") }
        if let bucket = buckets[tokens] {
            bucketUse.touch(tokens)
            return bucket
        }
        guard tokens >= 1 else { throw .invalidArgument("a global batch needs ≥ 1 token") }
        let (perRank, valid) = Self.share(tokens: tokens, world: world, rank: rank)
        guard perRank <= capacity else {
            throw .invalidArgument(
                "a global batch of \(tokens) tokens puts \(perRank) on each rank; the GPU heap holds \(capacity) (raise --max-tokens-per-rank)")
        }
        // The single-rank forward's choices for T tokens: router kernel, GEMM variant (with its experiments' overrides,
        // $MOE_CUDA_GEMM and $MOE_CUDA_GEMM2, as CUDABackend's options take them), tile rows, resident rows.
        let plan = CUDABackend.launchPlan(tokens: tokens, config: config, options: CUDABackend.Options(), device: runtime.device)
        try LaunchPlan.validateSwitches()
        let maxTiles = LaunchPlan.tileBound(slots: world * perRank * config.topK, experts: config.experts, tileRows: plan.tileRows)
        try kernels.gemm(plan.gemm1Variant).allowSharedMemory(plan.gemm1Shape.sharedBytes)
        try kernels.gemm(plan.gemm2Variant).allowSharedMemory(plan.gemm2Shape.sharedBytes)
        let local = LaunchPlan(tokens: perRank, config: config)
        try kernels.topk.allowSharedMemory(local.topkShape.sharedBytes)
        if plan.fusedRouting { try kernels.routeSmall(local).allowSharedMemory(local.routeSmallShape.sharedBytes) }
        try scatterKernel.allowSharedMemory(32 * config.topK * 8)
        // Shared-memory limits are raised here, never during capture (CUDAObjects: launch).
        if let planBytes = Self.smallPlanBytes(slots: world * perRank * config.topK, experts: config.experts) {
            try planSmallKernel.allowSharedMemory(planBytes)
            try planSmallTilesKernel.allowSharedMemory(planBytes)
        }
        let bucket = Bucket(tokens: tokens, tokensPerRank: perRank, validTokens: valid, plan: plan, maxTiles: maxTiles)
        if let evicted = bucketUse.use(tokens, capacity: Self.maxBuckets) { dropBucket(tokens: evicted) }
        buckets[tokens] = bucket
        return bucket
    }

    /// Drops the least recently used bucket other than `keep`'s; false when there is none.
    private func dropOldestBucket(except keep: Int) -> Bool {
        guard let oldest = bucketUse.removeOldest(except: keep) else { return false }
        dropBucket(tokens: oldest)
        return true
    }

    /// Drops a bucket and its graphs (a graph still running is freed when it completes).
    private func dropBucket(tokens: Int) {
        guard let old = buckets.removeValue(forKey: tokens) else { return }
        releaseGraphs(of: [old])
    }

    /// Destroys the buckets' graphs. An older NCCL frees an aborted communicator at once, and destroying a graph
    /// hands NCCL's captured work back to it: then the graphs are kept to the process's end instead.
    private func releaseGraphs(of dropped: [Bucket], closing: Bool = false) {
        if railGraphsMustOutliveTheRail(closing: closing) { AbandonedGraphs.keep(dropped.flatMap { $0.graphs.values }) }
        for bucket in dropped { bucket.graphs.removeAll() }
    }

    /// An older NCCL (< 2.26) frees an aborted communicator at once, and destroying a graph that captured its work
    /// then touches freed memory: such graphs are kept to the process's end instead. That holds after an abort, and
    /// at close too, where the rail is aborted next and CUDA may hand a destroyed graph's NCCL work back later.
    private func railGraphsMustOutliveTheRail(closing: Bool = false) -> Bool {
        guard let rail = railCommunicator, !rail.library.abortWaitsForGraphs else { return false }
        return closing || rail.isAborted
    }

    // MARK: parameters

    func epParameters(_ b: Bucket, phase: UInt8 = 0) -> CUDAExpertParallelParams {
        var p = CUDAExpertParallelParams()
        p.peerHeaps = peerHeaps.address
        p.ownHeap = heap.address
        p.setRegionOffsets(layout)
        p.ownerOfExpert = owners.address
        p.heldExpertIndex = heldExperts.address
        p.x = x.address
        p.localIds = localIds.address
        p.localWeights = localWeights.address
        p.slotToSorted = slotToSorted.address
        p.sortedToSlot = sortedToSlot.address
        p.tiles = tiles.address
        p.tileCount = tileCount.address
        p.localTiles = localTiles.address
        p.localTileCount = localTileCount.address
        p.expertRows = expertRows.address
        p.arrivals = barrierArrivals.address
        p.rank = Int64(rank)
        p.world = Int64(world)
        p.tokensPerRank = Int64(b.tokensPerRank)
        p.validTokens = Int64(b.validTokens)
        p.topK = Int64(config.topK)
        p.hidden = Int64(config.hidden)
        p.experts = Int64(config.experts)
        p.maxTiles = Int64(b.maxTiles)
        p.phase = Int64(phase)
        p.timeoutNs = Int64(timeoutSeconds * 1e9)
        p.nodeRanks = Int64(grid.ranksPerNode)
        p.nodes = Int64(grid.nodes)
        return p
    }

    /// Router + top-k on this rank's T_loc rows, with the single-rank forward's router kernel for T global tokens.
    func localRoutingParameters(_ b: Bucket, mode: RoutingMode) -> MoERoutingParams {
        let (k, E) = (config.topK, config.experts)
        var p = MoERoutingParams.shaped(
            tokens: b.tokensPerRank, config: config, mode: mode, tileRows: 8,
            maxTiles: LaunchPlan.tileBound(slots: b.tokensPerRank * k, experts: E, tileRows: 8))
        p.x = x.address
        p.routerWeight = layer.routerWeight.address
        p.routerBias = layer.routerBias.address
        p.logits = logits.address
        p.topkIds = localIds.address
        p.topkWeights = localWeights.address
        p.blockCounts = localBlockCounts.address
        p.expertCounts = localExpertCounts.address
        p.expertOffsets = localOffsets.address
        p.sortedToSlot = localSortedToSlot.address
        p.slotToSorted = localSlotToSorted.address
        p.sortedWeights = localSortedWeights.address
        p.tiles = localPlanTiles.address
        p.tileCount = localPlanTileCount.address
        p.arrivals = arrivals.address
        p.routerPartials = localRouterPartials.address
        p.routerSplits = Int32(b.plan.routerSplits)
        return p
    }

    /// The global plan over R·T_loc rows read from this rank's routing region.
    func globalRoutingParameters(_ b: Bucket, mode: RoutingMode) -> MoERoutingParams {
        var p = MoERoutingParams.shaped(
            tokens: world * b.tokensPerRank, config: config, mode: mode, tileRows: b.plan.tileRows, maxTiles: b.maxTiles,
            tileWidths: b.plan.tileWidths)
        p.topkIds = heap.address + UInt64(layout.offset(of: .routingIds))
        p.topkWeights = heap.address + UInt64(layout.offset(of: .routingWeights))
        p.blockCounts = blockCounts.address
        p.blockPrefix = blockPrefix.address
        p.expertCounts = expertCounts.address
        p.expertOffsets = expertOffsets.address
        p.sortedToSlot = sortedToSlot.address
        p.slotToSorted = slotToSorted.address
        p.sortedWeights = sortedWeights.address
        p.tiles = tiles.address
        p.tileCount = tileCount.address
        p.arrivals = arrivals.address
        return p
    }

    /// The symmetric layer's GEMMs: rows in place at their global sorted positions (GEMM 1 reads the dispatch region),
    /// with tensor maps where the kernel copies by them.
    func symmetricGemmParameters(_ b: Bucket, first: Bool) throws(CUDAError) -> MoEGemmParams {
        let globalSlots = world * capacity * config.topK  // the rows of the dispatch region and of `intermediate`
        let p = first
            ? gemmParameters(
                b, first: true, input: heap.address + UInt64(layout.offset(of: .dispatch)), inputIndex: 0,
                output: intermediate.address, outputIndex: 0, rowWeights: 0, tiles: localTiles.address,
                tileCount: localTileCount.address, maxTiles: b.maxTiles)
            : gemmParameters(
                b, first: false, input: intermediate.address, inputIndex: 0, output: expertRows.address, outputIndex: 0,
                rowWeights: sortedWeights.address, tiles: localTiles.address, tileCount: localTileCount.address,
                maxTiles: b.maxTiles)
        return try withTensorMaps(p, variant: first ? b.plan.gemm1Variant : b.plan.gemm2Variant, inputRows: globalSlots)
    }

    /// `p` pointed at its tensor maps when `variant` copies by them (made on first use: call it once before a capture,
    /// where allocating is not allowed); `inputRows` bounds the input tensor (rows past it read as zeros).
    func withTensorMaps(_ p: MoEGemmParams, variant: GemmVariant, inputRows: Int) throws(CUDAError) -> MoEGemmParams {
        guard let encodings = GemmTensorMaps.encodings(p, variant: variant, heldExperts: layer.experts.count, inputRows: inputRows)
        else { return p }
        var mapped = p
        mapped.tensorMaps = try tensorMaps.maps(encodings, device: runtime.device).address
        return mapped
    }

    /// GEMM parameters for rows addressed by sorted position (no index tables unless given).
    func gemmParameters(
        _ b: Bucket, first: Bool, input: UInt64, inputIndex: UInt64, output: UInt64, outputIndex: UInt64,
        rowWeights: UInt64, tiles: UInt64, tileCount: UInt64, maxTiles: Int
    ) -> MoEGemmParams {
        let c = config
        var p = MoEGemmParams()
        p.tiles = tiles
        p.tileCount = tileCount
        p.maxTiles = Int32(maxTiles)
        p.residentRows = Int32(b.plan.residentRows)
        p.swigluAlpha = Float(c.swigluAlpha)
        p.swigluLimit = Float(c.swigluLimit)
        p.input = input
        p.inputIndex = inputIndex
        p.inputDivisor = 1
        p.output = output
        p.outputIndex = outputIndex
        if first {
            p.codes = layer.gateUpCodes.address
            p.scales = layer.gateUpScales.address
            p.bias = layer.gateUpBias.address
            p.inputStride = Int64(c.hidden)
            p.outputStride = Int64(c.intermediate)
            p.n = Int32(2 * c.intermediate)
            p.k = Int32(c.hidden)
            (p.groups, p.chunks, p.scaleGroups) = (
                Int32(layer.gateUpGeometry.groups), Int32(layer.gateUpGeometry.chunks), Int32(layer.gateUpGeometry.scaleGroups))
            p.epilogue = MOE_EPILOGUE_SWIGLU
        } else {
            p.codes = layer.downCodes.address
            p.scales = layer.downScales.address
            p.bias = layer.downBias.address
            p.inputStride = Int64(c.intermediate)
            p.outputStride = Int64(c.hidden)
            p.rowWeights = rowWeights
            p.n = Int32(c.hidden)
            p.k = Int32(c.intermediate)
            (p.groups, p.chunks, p.scaleGroups) = (
                Int32(layer.downGeometry.groups), Int32(layer.downGeometry.chunks), Int32(layer.downGeometry.scaleGroups))
            p.epilogue = MOE_EPILOGUE_WEIGHTED
        }
        return p
    }

    func reduceParameters(_ b: Bucket, combine: UInt64, marks: UInt64) -> MoEReduceParams {
        var p = MoEReduceParams()
        p.combine = combine
        p.slotToSorted = marks
        p.output = output.address
        p.tokens = Int32(b.validTokens)
        p.topK = Int32(config.topK)
        p.hidden = Int32(config.hidden)
        return p
    }

    func gemmShape(_ b: Bucket, first: Bool, tiles: Int) -> LaunchShape {
        let c = config
        return first
            ? b.plan.gemmShape(b.plan.gemm1Variant, outputRows: 2 * c.intermediate, reduction: c.hidden, tiles: tiles)
            : b.plan.gemmShape(b.plan.gemm2Variant, outputRows: c.hidden, reduction: c.intermediate, tiles: tiles)
    }

    func reduceShape(_ b: Bucket) -> LaunchShape {
        LaunchShape(grid: (b.validTokens, (config.hidden / 8 + 127) / 128, 1), block: 128)
    }

    /// Router + top-k on the local T_loc rows with the router the single-rank forward of T global tokens uses (the
    /// fused FMA one, or the tensor-core one with K split as it splits it: the logits depend on both), so every token
    /// chooses the experts it would choose there.
    func enqueueLocalRouting(_ b: Bucket, mode: RoutingMode, trace: inout SymmetricLaunchTrace) throws(CUDAError) {
        let routing = localRoutingParameters(b, mode: mode)
        let local = LaunchPlan(tokens: b.tokensPerRank, config: config)
        if b.plan.fusedRouting {
            try kernels.routeSmall(local).launch(
                local.routeSmallShape, stream: stream, parameters: trace.mark(routing, "route (router+top-k)"))
            return
        }
        try kernels.launchRouter(
            tokens: b.tokensPerRank, splits: b.plan.routerSplits, config: config, stream: stream,
            parameters: trace.mark(routing, "router"))
        guard !LaunchPlan.routerTakesTopK(tokens: b.tokensPerRank, splits: b.plan.routerSplits, config: config) else { return }
        try kernels.topk.launch(
            local.topkShape, stream: stream, parameters: trace.mark(routing, "top-k"), programmatic: TokenBucket.programmaticLaunch)
    }

    // MARK: the symmetric layer

    /// Enqueues the whole symmetric layer; `between` runs after each phase (event records when profiling). With
    /// `traceSpans` (a MOE_TRACE build's trace buffer) each launch marks its span there; returns the launches' names,
    /// in launch order (each one's slot in the buffer).
    @discardableResult
    func enqueueSymmetric(
        _ b: Bucket, mode: RoutingMode, traceSpans: UInt64 = 0,
        between: ((CUDAExpertParallelPhase) throws(CUDAError) -> Void)? = nil
    ) throws -> [String] {
        var trace = SymmetricLaunchTrace(spans: traceSpans)
        let k = config.topK
        let slotsPerRank = b.tokensPerRank * k
        let ep = epParameters(b)
        // Every kernel after the router is a programmatic dependent (each waits for its predecessor first): the
        // launches overlap, the bodies stay in order. A kernel after an NCCL group depends on it as usual.
        let pdl = TokenBucket.programmaticLaunch
        let barrierShape = LaunchShape(grid: (1, 1, 1), block: 32)
        func barrier(_ phase: UInt8, _ name: String) throws(CUDAError) {
            try barrierKernel.launch(
                barrierShape, stream: stream, parameters: trace.mark(epParameters(b, phase: phase), name), programmatic: pdl)
        }
        let nodes = grid.nodes
        let rails = nodes > 1 ? (communicator: try requireRail(), transfers: railTransfers(tokensPerRank: b.tokensPerRank)) : nil
        // 1. route; top-k into every node peer's routing region. Across nodes: the rail exchanges top-k rows and
        //    token rows, and this rank forwards its rail's top-k rows to its node peers.
        // A fused barrier runs only if its kernel has blocks (a launch of an empty grid is skipped).
        let fused = Self.fusedBarriers && rails == nil && slotsPerRank > 0 && b.maxTiles > 0
        try enqueueLocalRouting(b, mode: mode, trace: &trace)
        let publishShape = LaunchShape(grid: ((slotsPerRank + 255) / 256, 1, 1), block: 256)
        if fused {
            try publishBarrierKernel.launch(
                publishShape, stream: stream, parameters: trace.mark(epParameters(b, phase: 2), "publish+barrier"), programmatic: pdl)
        } else {
            try publishKernel.launch(publishShape, stream: stream, parameters: trace.mark(ep, "publish"), programmatic: pdl)
        }
        if let rails {
            try rails.communicator.enqueueWatched(rails.transfers.route, stream: stream, phase: "route: the rail exchange of top-k and token rows")
            // Not programmatic after a captured NCCL group: NCCL's kernels never trigger early, and the edge from its
            // captured nodes would be an untried case.
            try forwardRoutingKernel.launch(
                LaunchShape(grid: ((slotsPerRank + 255) / 256, nodes, 1), block: 256), stream: stream,
                parameters: trace.mark(ep, "forward routing"), programmatic: false)
        }
        try between?(.route)
        // 2. barrier; the global plan; this rank's tiles.
        if !fused { try barrier(2, "barrier (route)") }
        let global = globalRoutingParameters(b, mode: mode)
        let globalSlots = world * b.tokensPerRank * k
        let smallPlanBytes = Self.smallPlanBytes(slots: globalSlots, experts: config.experts)
        // The one-block plan writes this rank's tiles too (fused barriers, or alone: MOE_CUDA_EP_PLAN_TILES=1).
        let fusedPlanBytes = fused || Self.planWritesTiles ? smallPlanBytes : nil
        if let planBytes = fusedPlanBytes {
            try planSmallTilesKernel.launch(
                LaunchShape(grid: (1, 1, 1), block: 1024, sharedBytes: planBytes), stream: stream,
                parameters: CUDAExpertParallelPlanParams(routing: global, ep: trace.mark(ep, "plan+tiles")), programmatic: pdl)
        } else if let planBytes = smallPlanBytes {
            try planSmallKernel.launch(
                LaunchShape(grid: (1, 1, 1), block: 1024, sharedBytes: planBytes), stream: stream,
                parameters: trace.mark(global, "plan"), programmatic: pdl)
        } else {
            let blocks = LaunchPlan.tokenBlocks(tokens: world * b.tokensPerRank)
            try countKernel.launch(
                LaunchShape(grid: (blocks, 1, 1), block: 256), stream: stream, parameters: trace.mark(global, "plan count"),
                programmatic: pdl)
            try scanKernel.launch(
                LaunchShape(grid: (1, 1, 1), block: 1024), stream: stream, parameters: trace.mark(global, "plan scan"),
                programmatic: pdl)
            try scatterKernel.launch(
                LaunchShape(grid: (blocks, 1, 1), block: 256, sharedBytes: 32 * k * 8), stream: stream,
                parameters: trace.mark(global, "plan scatter"), programmatic: pdl)
        }
        if fusedPlanBytes == nil {
            try localTilesKernel.launch(
                LaunchShape(grid: (1, 1, 1), block: 1024), stream: stream, parameters: trace.mark(ep, "local tiles"), programmatic: pdl)
        }
        try between?(.metadata)
        // 3. dispatch at global sorted positions; barrier.
        let dispatchShape = LaunchShape(grid: (slotsPerRank, 1, 1), block: 128)
        if fused {
            try dispatchBarrierKernel.launch(
                dispatchShape, stream: stream, parameters: trace.mark(epParameters(b, phase: 3), "dispatch+barrier"), programmatic: pdl)
        } else {
            try dispatchKernel.launch(dispatchShape, stream: stream, parameters: trace.mark(ep, "dispatch"), programmatic: pdl)
            if rails != nil {
                try dispatchForwardKernel.launch(
                    LaunchShape(grid: (slotsPerRank, nodes, 1), block: 128), stream: stream,
                    parameters: trace.mark(ep, "dispatch forward"), programmatic: pdl)
            }
            try barrier(3, "barrier (dispatch)")
        }
        try between?(.dispatch)
        // 4. grouped GEMMs on this rank's experts, rows in place at their sorted positions.
        try kernels.gemm(b.plan.gemm1Variant).launch(
            gemmShape(b, first: true, tiles: b.maxTiles), stream: stream,
            parameters: trace.mark(try symmetricGemmParameters(b, first: true), "gemm1"), programmatic: pdl)
        try kernels.gemm(b.plan.gemm2Variant).launch(
            gemmShape(b, first: false, tiles: b.maxTiles), stream: stream,
            parameters: trace.mark(try symmetricGemmParameters(b, first: false), "gemm2"), programmatic: pdl)
        try between?(.experts)
        // 5. combine into the home ranks; barrier.
        let combineShape = LaunchShape(grid: (b.maxTiles, 1, 1), block: 128)
        if fused {
            try combineBarrierKernel.launch(
                combineShape, stream: stream, parameters: trace.mark(epParameters(b, phase: 4), "combine+barrier"), programmatic: pdl)
        } else {
            try combineKernel.launch(combineShape, stream: stream, parameters: trace.mark(ep, "combine"), programmatic: pdl)
            try barrier(4, "barrier (combine)")
        }
        if let rails {
            try rails.communicator.enqueueWatched(rails.transfers.combine, stream: stream, phase: "combine: the rail exchange of expert rows")
            try combineCollectKernel.launch(
                LaunchShape(grid: (slotsPerRank, 1, 1), block: 128), stream: stream, parameters: trace.mark(ep, "combine collect"),
                programmatic: false)
        }
        try between?(.combine)
        // 6. k-way sum per local token in slot order.
        let marks = slotToSorted.address + UInt64(rank * slotsPerRank * 4)
        try kernels.reduce.launch(
            reduceShape(b), stream: stream,
            parameters: trace.mark(reduceParameters(b, combine: heap.address + UInt64(layout.offset(of: .combine)), marks: marks), "reduce"),
            programmatic: pdl)
        try between?(.reduce)
        return trace.names
    }

    /// `MOE_CUDA_EP_FUSED=1`: on one node, each barrier runs in the last block of the kernel whose stores it orders,
    /// and the one-block plan writes this rank's tiles too — four launches fewer per layer. Opt-in until a device
    /// run has checked it (bit-identity, `ep-check.sh`) and measured it against the separate launches.
    static let fusedBarriers = currentEnvironment("MOE_CUDA_EP_FUSED") == "1"

    /// `MOE_CUDA_EP_PLAN_TILES=1`: the one-block plan writes this rank's tiles (moe_ep_plan_small_tiles) with the
    /// barriers left separate — one launch fewer; the fused barriers' measurement (no gain) mixed it with them.
    static let planWritesTiles = currentEnvironment("MOE_CUDA_EP_PLAN_TILES") == "1"

    /// The one-block global plan (moe_ep_plan_small, plan_in_block) serves up to LaunchPlan.blockPlanMaxSlots global
    /// slots R·T_loc·k. `MOE_CUDA_EP_SMALL_PLAN=0` keeps the three-kernel plan.
    static let smallPlanEnabled = currentEnvironment("MOE_CUDA_EP_SMALL_PLAN") != "0"

    /// Dynamic shared memory of moe_ep_plan_small for `slots` global slots, or nil when the three-kernel plan runs.
    static func smallPlanBytes(slots: Int, experts: Int, enabled: Bool = smallPlanEnabled) -> Int? {
        guard enabled, slots <= LaunchPlan.blockPlanMaxSlots else { return nil }
        let bytes = LaunchPlan.blockPlanBytes(slots: slots, experts: experts)
        return bytes <= 160 * 1024 ? bytes : nil
    }

    /// The captured graph of the symmetric layer for (T, mode): one graph, replayed; its barriers keep their epoch
    /// in device memory, so replays need nothing from the host.
    func symmetricGraph(_ b: Bucket, mode: RoutingMode) throws -> CUDAGraphExec {
        if let exec = b.graphs[mode] { return exec }
        let exec = try captureSymmetric(b, mode: mode).exec
        b.graphs[mode] = exec
        return exec
    }

    /// The symmetric layer for (T, mode) captured and instantiated (`traceSpans`: a MOE_TRACE build's trace buffer the
    /// launches mark), with the launches' names in launch order.
    func captureSymmetric(_ b: Bucket, mode: RoutingMode, traceSpans: UInt64 = 0) throws -> (exec: CUDAGraphExec, names: [String]) {
        for first in [true, false] { _ = try symmetricGemmParameters(b, first: first) }  // tensor maps: not inside the capture
        try stream.beginCapture()
        let names: [String]
        do {
            names = try enqueueSymmetric(b, mode: mode, traceSpans: traceSpans)
        } catch {
            // The partial graph may hold the rail's NCCL work of a communicator the failure aborted (releaseGraphs' rule).
            let partial = try? stream.endCapture()
            if let partial, railGraphsMustOutliveTheRail() { AbandonedGraphs.keep([partial]) }
            throw error
        }
        let captured = try stream.endCapture()
        // Out of memory with other sizes' graphs cached (a server keeps many): drop the least recently used, retry.
        let exec = try retryingOutOfMemory({ () throws(CUDAError) in try captured.instantiate() }, evict: { dropOldestBucket(except: b.tokens) }) {
            CUDAError.outOfMemory(
                what: "rank \(rank)'s graph of a \(b.tokens)-token symmetric layer", bytes: nil,
                free: try? runtime.device.memoryInfo().free, total: runtime.device.totalMemory,
                advice: "Send smaller batches, or hold fewer experts per GPU (more ranks).")
        }
        return (exec, names)
    }

    /// How a symmetric layer is launched.
    public enum Execution: Sendable {
        /// The captured graph (production path).
        case graph
        /// Kernel by kernel with device events between phases (per-phase times).
        case profiled
    }

    /// One symmetric layer on this rank's share of a global batch of `tokens`.
    /// - Parameter input: [T_r, H] this rank's rows (T_r from `share`).
    public func forwardSymmetric(
        _ input: [Float], tokens: Int, mode: RoutingMode, execution: Execution = .graph, poison: Bool = false,
        replays: Int = 1
    ) throws -> CUDAExpertParallelResult {
        try KernelBuildSwitches.refuseAliasedExperts("an expert-parallel layer's outputs")
        let device = runtime.device
        try device.makeCurrent()
        try requireMappedPeers("the symmetric path", nodeOnly: true)
        let b = try bucket(tokens: tokens)
        try upload(input, bucket: b, poison: poison)
        var phaseSeconds: [Double] = []
        var layerSeconds: Double?
        switch execution {
        case .graph:
            // Replays back to back with no host synchronisation between them: each replay's barriers advance
            // the device-side epoch, so a layer needs nothing from the host.
            let graph = try symmetricGraph(b, mode: mode)
            let start = try CUDAEvent(device: device), end = try CUDAEvent(device: device)
            try start.record(stream)
            for _ in 0..<max(1, replays) { try graph.launch(stream) }
            try end.record(stream)
            try waitForDevice(watchingRail: true)
            layerSeconds = Double(try end.milliseconds(since: start)) * 1e-3 / Double(max(1, replays))
        case .profiled:
            let start = try CUDAEvent(device: device)
            var marks: [CUDAEvent] = []
            try start.record(stream)
            try enqueueSymmetric(b, mode: mode) { _ throws(CUDAError) in
                let event = try CUDAEvent(device: device)
                try event.record(self.stream)
                marks.append(event)
            }
            try waitForDevice(watchingRail: true)
            var previous = start
            for event in marks {
                phaseSeconds.append(Double(try event.milliseconds(since: previous)) * 1e-3)
                previous = event
            }
        }
        try checkDevice()
        let hidden = try downloadOutput(b)
        return CUDAExpertParallelResult(
            hidden: hidden, phaseSeconds: phaseSeconds, bytesMoved: [], bytesRemote: [], layerSeconds: layerSeconds)
    }

    /// This rank's top-k of its last forward (either path): ids and weights [T_r, k] of a global batch of `tokens`.
    public func lastRouting(tokens: Int) throws -> (ids: [Int32], weights: [Float]) {
        let b = try ranBucket(tokens: tokens)
        let count = b.validTokens * config.topK
        guard count > 0 else { return ([], []) }
        return (try localIds.download(Int32.self, count: count), try localWeights.download(Float.self, count: count))
    }

    /// Bytes each symmetric phase wrote (moved) and stored into other ranks (remote, over IPC or the rail), from
    /// the global routing in this rank's heap (call after a forward).
    public func symmetricBytes(tokens: Int) throws -> (moved: [Double], remote: [Double]) {
        let b = try ranBucket(tokens: tokens)
        let (R, k, row) = (world, config.topK, config.hidden * 2)
        let slotsPerRank = b.tokensPerRank * k
        let ids = try heap.download(Int32.self, count: R * slotsPerRank, offsetBytes: layout.offset(of: .routingIds))
        var moved = [Double](repeating: 0, count: 6), remote = [Double](repeating: 0, count: 6)
        // Every rank's top-k reaches every rank once (by a store or a rail transfer and a forward).
        moved[1] = Double(2 * 4 * slotsPerRank * R)
        remote[1] = Double(2 * 4 * slotsPerRank * (R - 1))
        let node = grid.node(of: rank)
        func owner(_ id: Int32) -> Int? { id >= 0 ? ownerOfExpert[Int(id)] : nil }
        // Dispatch: the slots of this rank and of its rail peers (forwarded here) owned on this node; the token rows sent.
        for source in [rank] + grid.otherNodes(of: rank).map({ grid.railPeer(of: rank, onNode: $0) }) {
            for s in 0..<slotsPerRank {
                guard let o = owner(ids[source * slotsPerRank + s]), grid.node(of: o) == node else { continue }
                moved[2] += Double(row)
                if o != rank { remote[2] += Double(row) }
            }
        }
        // The rail: T_loc token rows to each other node (its top-k rows are in the metadata count above), and T_loc·k
        // expert rows back from each at the combine step (RailTransfers' static sizes).
        let otherNodes = Double(grid.nodes - 1)
        moved[2] += otherNodes * Double(b.tokensPerRank * row)
        remote[2] += otherNodes * Double(b.tokensPerRank * row)
        // Combine: every row computed here, to its home or to the home's rail forwarder on this node; then the rail
        // sends and the copies of what arrived.
        for (slot, id) in ids.enumerated() where owner(id) == rank {
            let home = slot / slotsPerRank
            let target = grid.node(of: home) == node ? home : grid.railPeer(of: home, onNode: node)
            moved[4] += Double(row)
            if target != rank { remote[4] += Double(row) }
        }
        moved[4] += otherNodes * Double(slotsPerRank * row)
        remote[4] += otherNodes * Double(slotsPerRank * row)
        for s in 0..<slotsPerRank {
            if let o = owner(ids[rank * slotsPerRank + s]), grid.node(of: o) != node { moved[4] += Double(row) }
        }
        return (moved, remote)
    }

    func upload(_ input: [Float], bucket b: Bucket, poison: Bool) throws {
        guard input.count == b.validTokens * config.hidden else {
            throw CUDAError.invalidArgument(
                "rank \(rank) got \(input.count) values; its share of \(b.tokens) tokens is \(b.validTokens)·\(config.hidden)")
        }
        if b.validTokens > 0 {
            try InputCheck.validate(input, tokens: b.validTokens, hidden: config.hidden)
            try x.uploadAsync(input.map { BF16.bits($0) }, stream: stream)
        }
        if poison {
            for buffer in [output, localIds, localWeights, intermediate, expertRows, a2aCombine] { try buffer.fill(byte: 0xFF, stream: stream) }
            let combine = heap.address + UInt64(layout.offset(of: .combine))
            try runtime.driver.call(
                "cuMemsetD8Async",
                runtime.driver.api.cuMemsetD8Async?(combine, 0xFF, layout.byteCount(of: .combine), stream.handle))
        }
    }

    func downloadOutput(_ b: Bucket) throws(CUDAError) -> [Float] {
        guard b.validTokens > 0 else { return [] }
        return try output.download(UInt16.self, count: b.validTokens * config.hidden).map { BF16.float($0) }
    }

    /// Waits for the stream; meanwhile polls `peerWatch` and aborts the device barriers when it reports a failure.
    /// `watchingRail` (the symmetric layer across nodes): the rail's NCCL kernels wait too, and nothing in them times out: a failed peer or an NCCL error
    /// also aborts the rail communicator, and so does a layer that makes no progress (its barrier epoch stands
    /// still) for the timeout, which is what a stalled peer on another node looks like from here.
    func waitForDevice(watchingRail: Bool = false) throws {
        let rail = watchingRail && grid.nodes > 1 ? railCommunicator : nil
        guard peerWatch != nil || rail != nil else { return try stream.synchronize() }
        let watch = peerWatch
        let verdict = NCCLCommunicator.Verdict()
        let done = StopSignal()
        let group = DispatchGroup()
        let this = self
        let phase = rail == nil ? "" : railPhase
        DispatchQueue.global().async(group: group) {
            // The barrier epoch (a device read) is only the rail's stall detector.
            var epoch = rail == nil ? nil : this.barrierEpoch(), moved = MonotonicSeconds.now(), polls = 0
            while !done.isSet {
                var failure: NCCLError?
                if let why = watch?() {
                    failure = .peerFailed(rank: this.rank, phase: phase, why: why)
                } else if let rail {
                    failure = rail.asynchronousError(phase: phase)
                    polls += 1
                    if failure == nil, polls % 10 == 0 {
                        let now = MonotonicSeconds.now(), current = this.barrierEpoch()
                        if current != epoch {
                            (epoch, moved) = (current, now)
                        } else if now - moved > this.timeoutSeconds {
                            failure = .timeout(rank: this.rank, phase: phase, seconds: this.timeoutSeconds)
                        }
                    }
                }
                if let failure {
                    // Without a rail, the device barriers' abort is enough and their record names the rank.
                    if rail != nil { verdict.set(failure) }
                    this.requestAbort()
                    rail?.abort(reason: "\(failure)")
                    return
                }
                if done.sleep(microseconds: 10_000) { return }
            }
        }
        defer {
            done.set()
            group.wait()
        }
        do {
            try stream.synchronize()
        } catch {
            if let decided = verdict.value { throw decided }
            // A peer on another GPU that died can take its mapped memory with it, so the stores still in flight
            // fault before the watcher's next poll: name the peer, not only the device error.
            if let why = watch?() { throw CUDAExpertParallelError.peerFailedDuringDeviceWork(rank: rank, why: why, deviceError: "\(error)") }
            throw error
        }
        if let decided = verdict.value { throw decided }
    }

    /// What the rail watchdog's errors call the phase: the exchange with this rank's rail peers.
    var railPhase: String {
        let railPeers = grid.otherNodes(of: rank).map { grid.railPeer(of: rank, onNode: $0) }
        let peersText = railPeers.count == 1 ? "rank \(railPeers[0])" : "ranks \(railPeers.map(String.init).joined(separator: ", "))"
        return "the symmetric layer's rail exchange with \(peersText) (NCCL across \(grid.nodes) nodes)"
    }

    /// Throws the recorded device-barrier failure, if any.
    func checkDevice() throws {
        if let failure = try deviceFailure() {
            throw CUDAExpertParallelError.deviceBarrier(rank: rank, failure: failure, timeoutSeconds: timeoutSeconds)
        }
    }
}

/// Graphs that captured work of a communicator an older NCCL freed on abort: never destroyed (see `close`).
enum AbandonedGraphs {
    nonisolated(unsafe) private static var kept: [AnyObject] = []  // CUDAGraphExec, or a partial capture's CUDAGraph
    private static let lock = DispatchSemaphore(value: 1)
    static func keep(_ graphs: [AnyObject]) {
        lock.wait()
        kept += graphs
        lock.signal()
    }
}

/// A one-way stop signal for a polling watcher thread. The watcher sleeps on it between polls, so `set` wakes it at
/// once: the caller that joins the watcher after a fast device wait does not pay the rest of a poll interval (10 ms
/// per `waitForDevice` before this, which dominated the all-to-all baseline's phase times).
final class StopSignal: @unchecked Sendable {
    private let lock = DispatchSemaphore(value: 1)
    private let wake = DispatchSemaphore(value: 0)
    private var value = false
    var isSet: Bool {
        lock.wait()
        defer { lock.signal() }
        return value
    }
    func set() {
        lock.wait()
        let first = !value
        value = true
        lock.signal()
        if first { wake.signal() }
    }
    /// Sleeps up to `microseconds`, or less when set; true when set.
    func sleep(microseconds: Int) -> Bool {
        if wake.wait(timeout: .now() + .microseconds(microseconds)) == .success {
            wake.signal()  // stays set for any later sleep
            return true
        }
        return isSet
    }
}

extension KernelSource {
    public static let expertParallel = KernelSource(name: "moe_ep.cu", bytes: PackageResources.moe_ep_cu)
    /// moe_ep.cu's parameters and per-block phase work (also compiled on the host by the tests).
    public static let expertParallelNode = KernelSource(name: "moe_ep_node.cuh", bytes: PackageResources.moe_ep_node_cuh)
}
