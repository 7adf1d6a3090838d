import Dispatch
import MoECore

/// The CPU backend: DESIGN §3's pipeline with bf16 activations between stages and fp32 accumulation.
///
/// Work is split statically across `workers` threads: the router over token blocks, each grouped GEMM over
/// (tile, output-column block) items. Every output element is produced by exactly one item with a fixed
/// reduction order, so results do not depend on the thread count.
public final class CPUBackend: MoEBackend, MoEStageKernels, @unchecked Sendable {
    public let name = "cpu"
    public let config: MoEConfig
    public let weights: MoELayerWeights
    public let workers: Int
    /// Output columns per GEMM work item.
    let columnBlock = 64

    public var detail: String { "cpu portable fp32-SIMD, \(workers) threads" }

    public static func availability() -> BackendAvailability {
        BackendAvailability(name: "cpu", available: true, reason: "\(ProcessorCount.online) cores, portable SIMD kernels")
    }

    public init(weights: MoELayerWeights, workers: Int? = nil) {
        self.weights = weights
        self.config = weights.config
        self.workers = max(1, workers ?? ProcessorCount.online)
    }

    public func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        try MoEPipeline.forward(kernels: self, input: input, tokens: tokens, mode: routing, profiler: profiler)
    }

    // MARK: router

    public func route(
        x: UnsafePointer<UInt16>, tokens T: Int, mode: RoutingMode,
        ids: UnsafeMutablePointer<Int32>, weights topWeights: UnsafeMutablePointer<Float>, profiler: Profiler?
    ) {
        let (E, H, k) = (config.experts, config.hidden, config.topK)
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: T * E)
        defer { logits.deallocate() }
        profiler.scope(.router, cost: StageCost.router(tokens: T, config: config)) {
            weights.routerWeight.withUnsafeBufferPointer { wr in
                let wrBase = wr.baseAddress!
                parallelFor(count: T) { t, scratch in
                    let row = scratch.floats(H)
                    Kernels.bf16ToFloat(x + t * H, row, count: H)
                    for e in 0..<E {
                        logits[t * E + e] = Kernels.dot(row, wrBase + e * H, count: H) + weights.routerBias[e]
                    }
                }
            }
        }
        profiler.scope(.topk, cost: StageCost(flops: Double(T * E * 3), bytes: Double(T * E * 4 + T * k * 8))) {
            for t in 0..<T {
                TopK.route(logits: logits + t * E, experts: E, k: k, mode: mode, ids: ids + t * k, weights: topWeights + t * k)
            }
        }
    }

    // MARK: experts

    public func runExperts(
        plan: RoutingPlan, experts: [Int], rowWeights: UnsafePointer<Float>,
        input: RowAddressing, output: RowAddressing, profiler: Profiler?
    ) {
        let (H, I) = (config.hidden, config.intermediate)
        let owned = Set(experts)
        let tiles = plan.tiles.filter { owned.contains(Int($0.expert)) }
        if tiles.isEmpty { return }
        let rows = tiles.reduce(0) { $0 + Int($1.rowCount) }
        let touched = Set(tiles.map(\.expert)).count
        // a: [routed rows, I] bf16, indexed by sorted row.
        let intermediate = UnsafeMutablePointer<UInt16>.allocate(capacity: plan.routedSlots * I)
        defer { intermediate.deallocate() }

        profiler.scope(.gemm1, cost: StageCost.gemm1(rows: rows, expertsTouched: touched, config: config)) {
            let pairBlocks = (I + columnBlock / 2 - 1) / (columnBlock / 2)
            parallelFor(count: tiles.count * pairBlocks) { item, scratch in
                let tile = tiles[item / pairBlocks]
                let firstPair = (item % pairBlocks) * (columnBlock / 2)
                let pairCount = min(columnBlock / 2, I - firstPair)
                gemm1(tile: tile, firstPair: firstPair, pairCount: pairCount, input: input, intermediate: intermediate, scratch: scratch)
            }
        }
        profiler.scope(.gemm2, cost: StageCost.gemm2(rows: rows, expertsTouched: touched, config: config)) {
            let columnBlocks = (H + columnBlock - 1) / columnBlock
            parallelFor(count: tiles.count * columnBlocks) { item, scratch in
                let tile = tiles[item / columnBlocks]
                let firstColumn = (item % columnBlocks) * columnBlock
                let columnCount = min(columnBlock, H - firstColumn)
                gemm2(
                    tile: tile, firstColumn: firstColumn, columnCount: columnCount, intermediate: intermediate,
                    rowWeights: rowWeights, output: output, scratch: scratch)
            }
        }
    }

    /// h = W1[e]·x + b1 for gate/up pairs [firstPair, firstPair+pairCount) of one tile's rows; a = SwiGLU(h) → bf16.
    func gemm1(
        tile: RoutingPlan.Tile, firstPair: Int, pairCount: Int, input: RowAddressing,
        intermediate: UnsafeMutablePointer<UInt16>, scratch: Scratch
    ) {
        let (H, I) = (config.hidden, config.intermediate)
        let e = Int(tile.expert), rowStart = Int(tile.rowStart), rowCount = Int(tile.rowCount)
        let xs = scratch.floats(rowCount * H)
        for r in 0..<rowCount { Kernels.bf16ToFloat(input.row(rowStart + r), xs + r * H, count: H) }
        let gateRow = scratch.floats(H, slot: 1), upRow = scratch.floats(H, slot: 2)
        let alpha = Float(config.swigluAlpha), limit = Float(config.swigluLimit)
        let stack = weights.gateUp
        weights.gateUp.blocks.withUnsafeBufferPointer { blocks in
            for p in firstPair..<(firstPair + pairCount) {
                let gate = 2 * p, up = 2 * p + 1
                Kernels.decodeRow(stack, blocks.baseAddress!, expert: e, row: gate, into: gateRow)
                Kernels.decodeRow(stack, blocks.baseAddress!, expert: e, row: up, into: upRow)
                let gateBias = weights.gateUpBias[e * 2 * I + gate], upBias = weights.gateUpBias[e * 2 * I + up]
                for r in 0..<rowCount {
                    let g = Kernels.dot(gateRow, xs + r * H, count: H) + gateBias
                    let u = Kernels.dot(upRow, xs + r * H, count: H) + upBias
                    let a = SwiGLU.apply(gate: g, up: u, alpha: alpha, limit: limit)
                    intermediate[(rowStart + r) * I + p] = BF16.bits(a)
                }
            }
        }
    }

    /// y = w · (W2[e]·a + b2) for columns [firstColumn, firstColumn+columnCount) of one tile's rows → bf16.
    func gemm2(
        tile: RoutingPlan.Tile, firstColumn: Int, columnCount: Int, intermediate: UnsafeMutablePointer<UInt16>,
        rowWeights: UnsafePointer<Float>, output: RowAddressing, scratch: Scratch
    ) {
        let (H, I) = (config.hidden, config.intermediate)
        let e = Int(tile.expert), rowStart = Int(tile.rowStart), rowCount = Int(tile.rowCount)
        let activations = scratch.floats(rowCount * I)
        for r in 0..<rowCount { Kernels.bf16ToFloat(intermediate + (rowStart + r) * I, activations + r * I, count: I) }
        let weightRow = scratch.floats(I, slot: 1)
        let stack = weights.down
        weights.down.blocks.withUnsafeBufferPointer { blocks in
            for h in firstColumn..<(firstColumn + columnCount) {
                Kernels.decodeRow(stack, blocks.baseAddress!, expert: e, row: h, into: weightRow)
                let bias = weights.downBias[e * H + h]
                for r in 0..<rowCount {
                    let y = Kernels.dot(weightRow, activations + r * I, count: I) + bias
                    output.row(rowStart + r)[h] = BF16.bits(rowWeights[rowStart + r] * y)
                }
            }
        }
    }

    /// Runs `body(item, scratch)` for items 0..<count on `workers` threads, each taking a contiguous slice.
    func parallelFor(count: Int, _ body: (Int, Scratch) -> Void) {
        let threads = min(workers, count)
        if threads <= 1 {
            let scratch = Scratch()
            defer { scratch.release() }
            for i in 0..<count { body(i, scratch) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // Items write disjoint outputs (see the type's doc), so sharing the closure across threads is safe.
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: threads) { worker in
                let scratch = Scratch()
                defer { scratch.release() }
                let lo = count * worker / threads, hi = count * (worker + 1) / threads
                for i in lo..<hi { body(i, scratch) }
            }
        }
    }
}

/// Per-thread scratch buffers, grown on demand and reused across the work items of one thread.
final class Scratch {
    private var buffers: [(UnsafeMutablePointer<Float>, Int)] = []

    func floats(_ count: Int, slot: Int = 0) -> UnsafeMutablePointer<Float> {
        while buffers.count <= slot { buffers.append((UnsafeMutablePointer<Float>.allocate(capacity: 1), 1)) }
        if buffers[slot].1 < count {
            buffers[slot].0.deallocate()
            buffers[slot] = (UnsafeMutablePointer<Float>.allocate(capacity: count), count)
        }
        return buffers[slot].0
    }

    func release() { for (p, _) in buffers { p.deallocate() } }
}

public enum ProcessorCount {
    public static var online: Int {
        #if canImport(Glibc)
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #else
        return 1
        #endif
    }
}
#if canImport(Glibc)
import Glibc
#endif
