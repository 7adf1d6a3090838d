import CMoECPUKernels
import MoECore

extension CPUBackend {
    /// Router GEMM and top-k (MoEStageKernels). x: [T, H] bf16 bits; ids, weights: [T, k].
    public func route(
        x: UnsafePointer<UInt16>, tokens T: Int, mode: RoutingMode,
        ids: UnsafeMutablePointer<Int32>, weights topWeights: UnsafeMutablePointer<Float>, profiler: Profiler?
    ) {
        lock.withLock {
            workspace.logits.reserve(T * config.experts)
            let logits = workspace.logits.pointer
            let router = phases.router
            router.tokens = T
            router.input = nil
            router.convertedX = nil
            router.x = x
            router.logits = logits
            profiler.scope(.router, cost: StageCost.router(tokens: T, config: config)) {
                pool.run(router, work: T * config.experts * config.hidden)
            }
            selectExperts(logits: logits, tokens: T, mode: mode, ids: ids, weights: topWeights, profiler: profiler)
        }
    }

    /// logits[e] = x · Wr[e] + br[e] for one token (fp32 sums of exact bf16 products on every path).
    /// x: [H] bf16; logits: [E].
    @inline(__always)
    func routerLogits(x: UnsafePointer<UInt16>, into logits: UnsafeMutablePointer<Float>, worker: Int) {
        let (H, E) = (config.hidden, config.experts)
        switch kernelPath {
        case .amxBF16, .avx512BF16:
            moekit_avx512bf16_router(x, routerWeightBF16.pointer, routerBias.pointer, Int32(H), Int32(E), logits)
        case .avx2, .neon, .portable:
            let row = workspace.routerRows.pointer + worker * H
            for h in 0..<H { row[h] = BF16.float(x[h]) }
            for e in 0..<E {
                logits[e] = Kernels.dot(row, routerWeight.pointer + e * H, count: H) + routerBias.pointer[e]
            }
        }
    }

    /// Top-k per token from [T, E] logits (serial: T·E·k compares, microseconds).
    func selectExperts(
        logits: UnsafePointer<Float>, tokens T: Int, mode: RoutingMode,
        ids: UnsafeMutablePointer<Int32>, weights topWeights: UnsafeMutablePointer<Float>, profiler: Profiler?
    ) {
        let (E, k) = (config.experts, config.topK)
        profiler.scope(.topk, cost: StageCost(flops: Double(T * E * 3), bytes: Double(T * E * 4 + T * k * 8))) {
            for t in 0..<T {
                TopK.route(logits: logits + t * E, experts: E, k: k, mode: mode, ids: ids + t * k, weights: topWeights + t * k)
            }
        }
    }
}
