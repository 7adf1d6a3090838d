import CCUDA
import MoECore

/// Everything a forward pass at one token count T needs, allocated once: input slots, routing and plan
/// arrays, the intermediate and combine buffers, the output, and the captured CUDA graphs (one per routing
/// mode and input slot). Shapes: x [T, H] bf16 per slot; logits [T, E] f32; ids, weights [T, k];
/// blockCounts [B, E]; a [T·k, I] bf16; combine [T·k, H] bf16; out [T, H] bf16.
final class TokenBucket: @unchecked Sendable {
    static let inputSlots = 4
    /// Programmatic dependent launch between the GEMMs and the reduce; `MOE_CUDA_PDL=0` turns it off.
    static let programmaticLaunch = currentEnvironment("MOE_CUDA_PDL") != "0"
    /// GEMM 2 takes GEMM 1's tiles one by one (LaunchPlan.tileHandOver); `MOE_CUDA_HANDOVER=0` turns it off.
    static let tileHandOver = currentEnvironment("MOE_CUDA_HANDOVER") != "0"
    /// Specialised kernels multiply tiles of at most N/2 rows at half width; `MOE_CUDA_HALF_TILES=0` turns it off.
    static let halfWidthTiles = currentEnvironment("MOE_CUDA_HALF_TILES") != "0"
    /// Where GEMM 1 copies by tensor maps, its rows are first gathered into sorted order (moe_gather_rows, or
    /// moe_plan_place with the plan) so that the
    /// copy engine brings its activations too: about a point faster than gathering in GEMM 1's producer (session 18's
    /// runs 59–60, H100). `MOE_CUDA_GATHER_ROWS=0` turns it off.
    static let gatherRowsSwitch = currentEnvironment("MOE_CUDA_GATHER_ROWS") != "0"

    let plan: LaunchPlan
    let inputs: [DeviceBuffer]
    let logits, topkIds, topkWeights, blockCounts, blockPrefix, expertCounts, expertOffsets: DeviceBuffer
    let sortedToSlot, slotToSorted, sortedWeights, tiles, tileCount, arrivals, routerPartials: DeviceBuffer
    let intermediate, combine, output: DeviceBuffer
    /// GEMM 2's per-column-range arrival counters for the fused sum (zero between launches).
    let reduceCounters: DeviceBuffer
    /// Per-tile counters of the GEMM 1 → GEMM 2 hand-over (zero between launches).
    let tileReady, tileConsumed: DeviceBuffer
    /// GEMM 1's input rows in sorted order [slots, H] (gathersRows only).
    let gathered: DeviceBuffer?
    private var graphs: [GraphKey: CUDAGraphExec] = [:]
    /// The timed graphs (event nodes between the kernels), captured once like `graphs`: a profiled forward replays
    /// one, and capturing and instantiating a graph per pass would cost more than the layer itself.
    private var timedGraphs: [GraphKey: TimedGraph] = [:]
    /// The tensor maps of registered kernels with tensor copies, by what they encode (a new layer's weights get their
    /// own); made by prepareTensorMaps before a capture, since allocating inside one is not allowed.
    private let tensorMaps = TensorMapCache()
    typealias TimedGraph = (exec: CUDAGraphExec, start: CUDAEvent, marks: [(Phase, CUDAEvent)])

    struct GraphKey: Hashable {
        var mode: RoutingMode
        var slot: Int
    }

    init(device: CUDADevice, plan: LaunchPlan, stream: CUDAStream) throws(CUDAError) {
        self.plan = plan
        let c = plan.config
        let (T, H, I, E, slots) = (plan.tokens, c.hidden, c.intermediate, c.experts, plan.slots)
        func buffer(_ bytes: Int) throws(CUDAError) -> DeviceBuffer { try DeviceBuffer(device: device, byteCount: bytes) }
        var slotBuffers: [DeviceBuffer] = []
        for _ in 0..<TokenBucket.inputSlots { slotBuffers.append(try buffer(T * H * 2)) }
        inputs = slotBuffers
        logits = try buffer(T * E * 4)
        topkIds = try buffer(slots * 4)
        topkWeights = try buffer(slots * 4)
        blockCounts = try buffer(plan.tokenBlocks * E * 4)
        blockPrefix = try buffer(plan.tokenBlocks * E * 4)
        expertCounts = try buffer(E * 4)
        expertOffsets = try buffer((E + 1) * 4)
        sortedToSlot = try buffer(slots * 4)
        slotToSorted = try buffer(slots * 4)
        sortedWeights = try buffer(slots * 4)
        tiles = try buffer(plan.maxTiles * MemoryLayout<MoETile>.stride)
        tileCount = try buffer(4)
        arrivals = try buffer(Int(MOE_ROUTER_TILE_COUNTERS) * 4)
        routerPartials = try buffer(max(16, plan.partialLogitFloats * 4))
        intermediate = try buffer(slots * I * 2)
        combine = try buffer(slots * H * 2)
        output = try buffer(T * H * 2)
        reduceCounters = try buffer(max(1, plan.gemm2Shape.grid.x) * 4)
        tileReady = try buffer(plan.maxTiles * 4)
        tileConsumed = try buffer(plan.maxTiles * 4)
        gathered = TokenBucket.gathersRows(plan) ? try buffer(slots * H * 2) : nil
        for counters in [reduceCounters, tileReady, tileConsumed] { try counters.fill(byte: 0, stream: stream) }
        try arrivals.fill(byte: 0, stream: stream)
        try tileCount.fill(byte: 0, stream: stream)
        try stream.synchronize()
    }

    var allocatedBytes: Int {
        inputs.reduce(0) { $0 + $1.byteCount }
            + [logits, topkIds, topkWeights, blockCounts, blockPrefix, expertCounts, expertOffsets, sortedToSlot, slotToSorted,
               sortedWeights, tiles, tileCount, arrivals, routerPartials, intermediate, combine, output, reduceCounters, tileReady, tileConsumed]
            .reduce(0) { $0 + $1.byteCount } + (gathered?.byteCount ?? 0)
    }

    /// Outputs and intermediates a forward pass must write, for poisoning before checks.
    var writtenBuffers: [DeviceBuffer] {
        [logits, topkIds, topkWeights, expertCounts, expertOffsets, sortedToSlot, slotToSorted, sortedWeights,
         intermediate, combine, output] + (gathered.map { [$0] } ?? [])
    }

    /// Whether a bucket with `plan` gathers GEMM 1's rows (MOE_CUDA_GATHER_ROWS=1 and a GEMM 1 with tensor copies).
    static func gathersRows(_ plan: LaunchPlan, switchedOn: Bool = gatherRowsSwitch) -> Bool {
        switchedOn && plan.gemm1Variant.usesTensorCopies
    }

    /// The gather's grid: one block row a token (written to its k sorted rows), 128 threads of 8 columns each.
    static func gatherShape(_ plan: LaunchPlan) -> LaunchShape {
        LaunchShape(grid: (plan.tokens, (plan.config.hidden / 8 + 127) / 128, 1), block: 128)
    }

    func gatherParameters(slot: Int) -> MoEGatherParams {
        var p = MoEGatherParams()
        p.input = inputs[slot].address
        p.slotToSorted = slotToSorted.address
        p.output = gathered?.address ?? 0
        p.tokens = Int32(plan.tokens)
        p.topK = Int32(plan.config.topK)
        p.hidden = Int32(plan.config.hidden)
        return p
    }

    // MARK: parameters

    func routingParameters(slot: Int, mode: RoutingMode, layer: DeviceLayer) -> MoERoutingParams {
        var p = MoERoutingParams.shaped(
            tokens: plan.tokens, config: plan.config, mode: mode, tileRows: plan.tileRows, maxTiles: plan.maxTiles,
            tileWidths: plan.tileWidths)
        p.x = inputs[slot].address
        p.routerWeight = layer.routerWeight.address
        p.routerBias = layer.routerBias.address
        p.logits = logits.address
        p.topkIds = topkIds.address
        p.topkWeights = topkWeights.address
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
        p.routerPartials = routerPartials.address
        p.gathered = gathered?.address ?? 0
        p.routerSplits = Int32(plan.routerSplits)  // the tensor-core router; the fused one splits by its grid
        return p
    }

    /// The plan's tile hand-over, unless `MOE_CUDA_HANDOVER=0`.
    private var handsOverTiles: Bool { plan.tileHandOver && TokenBucket.tileHandOver }

    /// GEMM 1: x rows gathered through sortedToSlot / k; SwiGLU into a [slots, I] in sorted order.
    func gemm1Parameters(slot: Int, layer: DeviceLayer) -> MoEGemmParams {
        let c = plan.config
        var p = gemmCommon(layer: layer)
        p.codes = layer.gateUpCodes.address
        p.scales = layer.gateUpScales.address
        p.bias = layer.gateUpBias.address
        if let gathered {  // rows already in sorted order
            p.input = gathered.address
            p.inputIndex = 0
            p.inputDivisor = 1
        } else {
            p.input = inputs[slot].address
            p.inputIndex = sortedToSlot.address
            p.inputDivisor = Int32(c.topK)
        }
        p.inputStride = Int64(c.hidden)
        p.output = intermediate.address
        p.outputIndex = 0
        p.outputStride = Int64(c.intermediate)
        p.n = Int32(2 * c.intermediate)
        p.k = Int32(c.hidden)
        (p.groups, p.chunks, p.scaleGroups) = (
            Int32(layer.gateUpGeometry.groups), Int32(layer.gateUpGeometry.chunks), Int32(layer.gateUpGeometry.scaleGroups)
        )
        p.epilogue = MOE_EPILOGUE_SWIGLU
        if handsOverTiles {
            p.tileRole = 1
            p.tileReady = tileReady.address
        }
        return p
    }

    /// GEMM 2: a rows in sorted order; bias and routing weight; bf16 rows scattered to their slots in combine.
    func gemm2Parameters(layer: DeviceLayer) -> MoEGemmParams {
        let c = plan.config
        var p = gemmCommon(layer: layer)
        p.codes = layer.downCodes.address
        p.scales = layer.downScales.address
        p.bias = layer.downBias.address
        p.input = intermediate.address
        p.inputIndex = 0
        p.inputDivisor = 1
        p.inputStride = Int64(c.intermediate)
        p.output = combine.address
        p.outputIndex = sortedToSlot.address
        p.outputStride = Int64(c.hidden)
        p.rowWeights = sortedWeights.address
        p.n = Int32(c.hidden)
        p.k = Int32(c.intermediate)
        (p.groups, p.chunks, p.scaleGroups) = (
            Int32(layer.downGeometry.groups), Int32(layer.downGeometry.chunks), Int32(layer.downGeometry.scaleGroups)
        )
        p.epilogue = MOE_EPILOGUE_WEIGHTED
        if handsOverTiles {
            p.tileRole = 2
            p.tileReady = tileReady.address
            p.tileConsumed = tileConsumed.address
            p.tileReadyTarget = Int32(plan.gemm1Shape.grid.x)
        }
        if plan.fusedReduce {
            p.reduceOutput = output.address
            p.reduceCounters = reduceCounters.address
            p.slotToSorted = slotToSorted.address
            p.reduceTokens = Int32(plan.tokens)
            p.topK = Int32(c.topK)
        }
        return p
    }

    private func gemmCommon(layer: DeviceLayer) -> MoEGemmParams {
        var p = MoEGemmParams()
        p.tiles = tiles.address
        p.tileCount = tileCount.address
        p.maxTiles = Int32(plan.maxTiles)
        p.residentRows = Int32(plan.residentRows)
        p.fullWidthOnly = TokenBucket.halfWidthTiles ? 0 : 1
        p.swigluAlpha = Float(plan.config.swigluAlpha)
        p.swigluLimit = Float(plan.config.swigluLimit)
        return p
    }

    func reduceParameters() -> MoEReduceParams {
        var p = MoEReduceParams()
        p.combine = combine.address
        p.slotToSorted = slotToSorted.address
        p.output = output.address
        p.tokens = Int32(plan.tokens)
        p.topK = Int32(plan.config.topK)
        p.hidden = Int32(plan.config.hidden)
        return p
    }

    // MARK: encoding

    /// The kernels of one forward pass, in launch order, for per-kernel event timing and traces.
    enum Phase: String, CaseIterable {
        case route = "route (fused router+top-k+plan)"
        case router, plan = "top-k+plan (one block)", topk, planScan = "plan scan", planScatter = "plan scatter"
        case place = "plan place"
        case gather = "gather rows", gemm1, gemm2, reduce

        /// The phase's span in a trace buffer (u64 pairs, KernelTrace).
        var index: Int32 { Int32(Phase.allCases.firstIndex(of: self)!) }
        /// The phase of this kernel's first mark, or −1: moe_route_small and the resident GEMMs mark points inside.
        var firstMark: Int32 {
            switch self {
            case .route: Mark.routePartials.index
            case .gemm1: Mark.gemm1Waited.index
            case .gemm2: Mark.gemm2Waited.index
            default: -1
            }
        }
    }

    /// Points inside the decode kernels a trace build times as phases after the kernels' own (MOE_MARK_*, in that order
    /// from each kernel's first): the first and the last block to reach each.
    enum Mark: String, CaseIterable {
        case routePartials = "route·partials stored", routeElected = "route·last block in", routeTopk = "route·top-k done"
        case routeTiles = "route·tiles written"
        case gemm1Waited = "gemm1·past its wait", gemm1Staged = "gemm1·activations in", gemm1Looped = "gemm1·loop done"
        case gemm2Waited = "gemm2·past its wait", gemm2Staged = "gemm2·activations in", gemm2Looped = "gemm2·loop done"

        var index: Int32 { Int32(Phase.allCases.count + Mark.allCases.firstIndex(of: self)!) }
        /// Every name a trace buffer holds: the kernels', then the marks'.
        static var traceNames: [String] { Phase.allCases.map(\.rawValue) + Mark.allCases.map(\.rawValue) }
    }

    /// Enqueues the whole layer on `stream`; `between` runs after each kernel (event records when timing). `trace`: a
    /// buffer of Mark.traceNames.count phases (KernelTrace.bufferBytes) the kernels of a MOE_TRACE build mark their spans in.
    func enqueue(
        slot: Int, mode: RoutingMode, layer: DeviceLayer, kernels: LayerKernels, stream: CUDAStream,
        trace: DeviceBuffer? = nil, between: ((Phase) throws(CUDAError) -> Void)? = nil
    ) throws(CUDAError) {
        let routing = routingParameters(slot: slot, mode: mode, layer: layer)
        func traced(_ phase: Phase) -> MoETrace {
            MoETrace(spans: trace?.address ?? 0, phase: phase.index, marks: trace == nil ? -1 : phase.firstMark)
        }
        func routingPhase(_ phase: Phase) -> MoERoutingParams {
            var p = routing
            p.trace = traced(phase)
            return p
        }
        // Every kernel after the router is a programmatic dependent: its blocks may start while the previous kernel
        // finishes (GEMM 2 fills its weight rings first); each waits before reading the previous kernel's output.
        let programmatic = TokenBucket.programmaticLaunch
        // moe_plan_place builds the plan after top-k and gathers GEMM 1's rows too (LaunchPlan.planBuild).
        let placesRows = plan.planBuild() == .inPlace
        if plan.fusedRouting {
            try kernels.routeSmall(plan).launch(plan.routeSmallShape, stream: stream, parameters: routingPhase(.route))
            try between?(.route)
        } else {
            try kernels.launchRouter(
                tokens: plan.tokens, splits: plan.routerSplits, config: plan.config, stream: stream, parameters: routingPhase(.router))
            try between?(.router)
            if plan.smallRouting {
                try kernels.routeFinish.launch(
                    plan.finishShape, stream: stream, parameters: routingPhase(.plan), programmatic: programmatic)
                try between?(.plan)
            } else {
                if !plan.routerFusesTopK() {
                    try kernels.topk.launch(plan.topkShape, stream: stream, parameters: routingPhase(.topk), programmatic: programmatic)
                    try between?(.topk)
                }
                if placesRows {
                    try kernels.planPlace.launch(
                        plan.placeShape(gathers: gathered != nil), stream: stream, parameters: routingPhase(.place),
                        programmatic: programmatic)
                    try between?(.place)
                } else {
                    try kernels.planScan.launch(
                        plan.scanShape, stream: stream, parameters: routingPhase(.planScan), programmatic: programmatic)
                    try between?(.planScan)
                    try kernels.planScatter.launch(
                        plan.scatterShape, stream: stream, parameters: routingPhase(.planScatter), programmatic: programmatic)
                    try between?(.planScatter)
                }
            }
        }
        if gathered != nil && !placesRows {
            var gather = gatherParameters(slot: slot)
            gather.trace = traced(.gather)
            try kernels.gatherRows.launch(Self.gatherShape(plan), stream: stream, parameters: gather, programmatic: programmatic)
            try between?(.gather)
        }
        var first = gemm1Parameters(slot: slot, layer: layer)
        try attachTensorMaps(&first, variant: plan.gemm1Variant, layer: layer)
        first.trace = traced(.gemm1)
        let handOver = handsOverTiles && plan.registeredHandOver
        try kernels.gemm(plan.gemm1Variant, handOver: handOver).launch(
            plan.gemm1Shape, stream: stream, parameters: first, programmatic: programmatic)
        try between?(.gemm1)
        var second = gemm2Parameters(layer: layer)
        try attachTensorMaps(&second, variant: plan.gemm2Variant, layer: layer)
        second.prefetchBeforeWait = programmatic ? 1 : 0
        second.trace = traced(.gemm2)
        try kernels.gemm(plan.gemm2Variant, handOver: handOver).launch(
            plan.gemm2Shape, stream: stream, parameters: second, programmatic: programmatic)
        try between?(.gemm2)
        if !plan.fusedReduce {
            var sum = reduceParameters()
            sum.trace = traced(.reduce)
            try kernels.reduce.launch(plan.reduceShape, stream: stream, parameters: sum, programmatic: programmatic)
            try between?(.reduce)
        }
    }

    /// The plain layer graph (no event nodes) with the kernels marking their spans in `trace` (a MOE_TRACE build).
    func tracedGraph(slot: Int, mode: RoutingMode, layer: DeviceLayer, kernels: LayerKernels, stream: CUDAStream, trace: DeviceBuffer)
        throws(CUDAError) -> CUDAGraphExec
    {
        try prepareTensorMaps(slot: slot, layer: layer, device: stream.device)
        return try Self.capture(stream) { () throws(CUDAError) in
            try enqueue(slot: slot, mode: mode, layer: layer, kernels: kernels, stream: stream, trace: trace)
        }
    }

    /// A graph of the layer with an event record node after every kernel (and one before the first), for
    /// timing each kernel inside a replay: the start event and (phase, event) pairs. Captured on first use for (mode,
    /// slot) and replayed afterwards (a profiled forward takes it); each replay records the same events again, so
    /// read them before the next.
    func timedGraph(slot: Int, mode: RoutingMode, layer: DeviceLayer, kernels: LayerKernels, stream: CUDAStream)
        throws(CUDAError) -> TimedGraph
    {
        let key = GraphKey(mode: mode, slot: slot)
        if let timed = timedGraphs[key] { return timed }
        let device = stream.device
        try prepareTensorMaps(slot: slot, layer: layer, device: device)
        let start = try CUDAEvent(device: device)
        var marks: [(Phase, CUDAEvent)] = []
        let exec = try Self.capture(stream) { () throws(CUDAError) in
            try start.recordInGraph(stream)
            try enqueue(slot: slot, mode: mode, layer: layer, kernels: kernels, stream: stream) { phase throws(CUDAError) in
                let event = try CUDAEvent(device: device)
                try event.recordInGraph(stream)
                marks.append((phase, event))
            }
        }
        let timed = (exec, start, marks)
        timedGraphs[key] = timed
        return timed
    }

    /// The graph of the whole layer for (mode, slot), captured on first use and replayed afterwards.
    func graph(slot: Int, mode: RoutingMode, layer: DeviceLayer, kernels: LayerKernels, stream: CUDAStream) throws(CUDAError)
        -> CUDAGraphExec
    {
        let key = GraphKey(mode: mode, slot: slot)
        if let exec = graphs[key] { return exec }
        try prepareTensorMaps(slot: slot, layer: layer, device: stream.device)
        let exec = try Self.capture(stream) { () throws(CUDAError) in
            try enqueue(slot: slot, mode: mode, layer: layer, kernels: kernels, stream: stream)
        }
        graphs[key] = exec
        return exec
    }

    /// The tensor maps `enqueue` needs for `layer` with this bucket's kernels, made where missing (before any capture).
    func prepareTensorMaps(slot: Int, layer: DeviceLayer, device: CUDADevice) throws(CUDAError) {
        let gemms = [(gemm1Parameters(slot: slot, layer: layer), plan.gemm1Variant), (gemm2Parameters(layer: layer), plan.gemm2Variant)]
        for (p, variant) in gemms {
            guard let encodings = tensorMapEncodings(p, variant: variant, layer: layer) else { continue }
            _ = try tensorMaps.maps(encodings, device: device)
        }
    }

    /// Points `p` at its tensor maps when `variant` copies by tensor maps (prepared by prepareTensorMaps).
    private func attachTensorMaps(_ p: inout MoEGemmParams, variant: GemmVariant, layer: DeviceLayer) throws(CUDAError) {
        guard let encodings = tensorMapEncodings(p, variant: variant, layer: layer) else { return }
        guard let maps = tensorMaps.existing(encodings) else {
            throw .invalidArgument("\(variant.kernelName) was enqueued before its tensor maps were made (prepareTensorMaps)")
        }
        p.tensorMaps = maps.address
    }

    private func tensorMapEncodings(_ p: MoEGemmParams, variant: GemmVariant, layer: DeviceLayer) -> [TensorMapEncoding?]? {
        GemmTensorMaps.encodings(p, variant: variant, heldExperts: layer.experts.count, inputRows: plan.slots)
    }

    /// What `body` enqueues on `stream`, captured and instantiated; on an error the capture is ended (its partial
    /// graph dropped) before the error goes on.
    private static func capture(_ stream: CUDAStream, _ body: () throws(CUDAError) -> Void) throws(CUDAError) -> CUDAGraphExec {
        try stream.beginCapture()
        do throws(CUDAError) {
            try body()
        } catch {
            _ = try? stream.endCapture()
            throw error
        }
        return try stream.endCapture().instantiate()
    }
}
