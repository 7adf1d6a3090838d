/// Rows of bf16 activations addressed by sorted row r: row r lives at `base + index(r) · stride`, where
/// index(r) is `indices[r]` when an index table is given and r itself otherwise. This one shape covers the
/// gather in GEMM 1 (index = token of r), the scatter in GEMM 2 (index = slot of r) and the expert-parallel
/// regions (rows already at their sorted positions).
public struct RowAddressing: @unchecked Sendable {
    public var base: UnsafeMutablePointer<UInt16>
    public var indices: UnsafePointer<Int32>?
    public var divisor: Int32
    public var stride: Int

    /// `indices[r] / divisor` picks the row (divisor k turns a slot into its token).
    public init(base: UnsafeMutablePointer<UInt16>, indices: UnsafePointer<Int32>? = nil, divisor: Int32 = 1, stride: Int) {
        self.base = base
        self.indices = indices
        self.divisor = divisor
        self.stride = stride
    }

    @inlinable @inline(__always)
    public func row(_ r: Int) -> UnsafeMutablePointer<UInt16> {
        guard let indices else { return base + r * stride }
        return base + Int(indices[r] / divisor) * stride
    }
}

/// The per-stage contract a backend offers so that the single-rank forward and expert parallelism are built
/// from the same kernels (and so agree bit for bit).
public protocol MoEStageKernels: AnyObject {
    var config: MoEConfig { get }
    /// Router GEMM and top-k. x: [T, H] bf16 bits; ids, weights: [T, k].
    func route(
        x: UnsafePointer<UInt16>, tokens: Int, mode: RoutingMode,
        ids: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>, profiler: Profiler?)
    /// Both grouped GEMMs for the sorted rows of `experts` (ascending global ids): reads row r through `input`,
    /// writes bf16(rowWeights[r] · (W2·SwiGLU(W1·x + b1) + b2)) through `output`.
    func runExperts(
        plan: RoutingPlan, experts: [Int], rowWeights: UnsafePointer<Float>,
        input: RowAddressing, output: RowAddressing, profiler: Profiler?)
}

public enum MoEPipeline {
    /// Sums the k weighted rows of every token in slot order, in fp32, and rounds to bf16.
    /// combine: [T·k, H] bf16 bits in slot order; rows of unrouted slots are skipped (never read).
    public static func reduce(
        combine: UnsafePointer<UInt16>, slotToSorted: UnsafePointer<Int32>, tokens T: Int, topK k: Int, hidden H: Int,
        output: UnsafeMutablePointer<Float>
    ) {
        for t in 0..<T {
            let out = output + t * H
            for h in 0..<H { out[h] = 0 }
            for j in 0..<k where slotToSorted[t * k + j] >= 0 {
                let row = combine + (t * k + j) * H
                for h in 0..<H { out[h] += BF16.float(row[h]) }
            }
            for h in 0..<H { out[h] = BF16.round(out[h]) }
        }
    }

    /// The single-rank forward pass, composed from a backend's stage kernels.
    public static func forward(
        kernels: some MoEStageKernels, input: [Float], tokens T: Int, mode: RoutingMode, profiler: Profiler?
    ) throws -> MoEForwardResult {
        let c = kernels.config
        let (E, H, k) = (c.experts, c.hidden, c.topK)
        try InputCheck.validate(input, tokens: T, hidden: H)
        var x = [UInt16](repeating: 0, count: T * H)
        for i in 0..<(T * H) { x[i] = BF16.bits(input[i]) }
        var ids = [Int32](repeating: 0, count: T * k)
        var weights = [Float](repeating: 0, count: T * k)
        x.withUnsafeBufferPointer { xp in
            kernels.route(
                x: xp.baseAddress!, tokens: T, mode: mode, ids: &ids, weights: &weights, profiler: profiler)
        }
        let plan = profiler.scope(.plan, cost: StageCost(bytes: Double(T * k * 4 * 4))) {
            RoutingPlan(topkIds: ids, tokens: T, topK: k, experts: E)
        }
        var rowWeights = [Float](repeating: 0, count: plan.routedSlots)
        for r in 0..<plan.routedSlots { rowWeights[r] = weights[Int(plan.sortedToSlot[r])] }
        var combine = [UInt16](repeating: 0, count: T * k * H)
        var hidden = [Float](repeating: 0, count: T * H)
        x.withUnsafeMutableBufferPointer { xp in
            combine.withUnsafeMutableBufferPointer { cp in
                plan.sortedToSlot.withUnsafeBufferPointer { order in
                    kernels.runExperts(
                        plan: plan, experts: Array(0..<E), rowWeights: rowWeights,
                        input: RowAddressing(base: xp.baseAddress!, indices: order.baseAddress!, divisor: Int32(k), stride: H),
                        output: RowAddressing(base: cp.baseAddress!, indices: order.baseAddress!, stride: H),
                        profiler: profiler)
                }
                profiler.scope(.reduce, cost: StageCost.reduce(tokens: T, config: c)) {
                    plan.slotToSorted.withUnsafeBufferPointer { s in
                        reduce(
                            combine: cp.baseAddress!, slotToSorted: s.baseAddress!, tokens: T, topK: k, hidden: H,
                            output: &hidden)
                    }
                }
            }
        }
        return MoEForwardResult(hidden: hidden, topkIds: ids, topkWeights: weights)
    }
}
