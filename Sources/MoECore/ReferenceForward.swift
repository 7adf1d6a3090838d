import Dispatch

/// The float64 reference of a whole MoE block (DESIGN §2): decoded MXFP4 weights, bf16-rounded input, and no
/// rounding anywhere after that. Every backend is judged against it. Slow by design; parallel over experts.
public enum ReferenceMoE {
    public struct Output: Sendable {
        /// [T, H]
        public var hidden: [Double]
        /// [T, k], by descending weight.
        public var topkIds: [Int32]
        /// [T, k]
        public var topkWeights: [Double]
        /// [T, E] router logits, for near-tie analysis.
        public var logits: [Double]
    }

    public static func forward(
        weights: MoELayerWeights, input: [Float], tokens T: Int, mode: RoutingMode
    ) throws -> Output {
        let c = weights.config
        let (E, H, I, k) = (c.experts, c.hidden, c.intermediate, c.topK)
        guard input.count == T * H else {
            throw MoEError.shapeMismatch("input holds \(input.count) values, expected T·H = \(T)·\(H)")
        }
        let x = input.map { Double(BF16.round($0)) }

        var logits = [Double](repeating: 0, count: T * E)
        for t in 0..<T {
            for e in 0..<E {
                var acc = Double(weights.routerBias[e])
                for i in 0..<H { acc += x[t * H + i] * Double(weights.routerWeight[e * H + i]) }
                logits[t * E + e] = acc
            }
        }
        var ids = [Int32](repeating: 0, count: T * k)
        var topWeights = [Double](repeating: 0, count: T * k)
        logits.withUnsafeBufferPointer { l in
            ids.withUnsafeMutableBufferPointer { idp in
                topWeights.withUnsafeMutableBufferPointer { wp in
                    for t in 0..<T {
                        TopK.route(
                            logits: l.baseAddress! + t * E, experts: E, k: k, mode: mode,
                            ids: idp.baseAddress! + t * k, weights: wp.baseAddress! + t * k)
                    }
                }
            }
        }

        // Per-slot expert outputs y (unweighted), then the weighted sum per token in slot order.
        let plan = RoutingPlan(topkIds: ids, tokens: T, topK: k, experts: E)
        // Each slot's row is written by exactly one expert's iteration: disjoint writes, no lock needed.
        nonisolated(unsafe) let slotOutputs = UnsafeMutableBufferPointer<Double>.allocate(capacity: T * k * H)
        defer { slotOutputs.deallocate() }
        let alpha = c.swigluAlpha, limit = c.swigluLimit
        DispatchQueue.concurrentPerform(iterations: E) { e in
            let start = Int(plan.expertOffsets[e]), end = Int(plan.expertOffsets[e + 1])
            if start == end { return }
            let w1 = weights.gateUp.matrix(expert: e).decoded()
            let w2 = weights.down.matrix(expert: e).decoded()
            var a = [Double](repeating: 0, count: I)
            for row in start..<end {
                let slot = Int(plan.sortedToSlot[row])
                let xt = (slot / k) * H
                for i in 0..<I {
                    var gate = Double(weights.gateUpBias[e * 2 * I + 2 * i])
                    var up = Double(weights.gateUpBias[e * 2 * I + 2 * i + 1])
                    let g0 = (2 * i) * H, u0 = (2 * i + 1) * H
                    for h in 0..<H {
                        gate += Double(w1[g0 + h]) * x[xt + h]
                        up += Double(w1[u0 + h]) * x[xt + h]
                    }
                    a[i] = SwiGLU.apply(gate: gate, up: up, alpha: alpha, limit: limit)
                }
                for h in 0..<H {
                    var acc = Double(weights.downBias[e * H + h])
                    for i in 0..<I { acc += Double(w2[h * I + i]) * a[i] }
                    slotOutputs[slot * H + h] = acc
                }
            }
        }
        var out = [Double](repeating: 0, count: T * H)
        for t in 0..<T {
            for j in 0..<k {
                let w = topWeights[t * k + j], slot = t * k + j
                for h in 0..<H { out[t * H + h] += w * slotOutputs[slot * H + h] }
            }
        }
        return Output(hidden: out, topkIds: ids, topkWeights: topWeights, logits: logits)
    }
}

/// Accuracy measures used by tests, `moe check` and `moe bench`.
public enum Accuracy {
    /// ‖a − b‖₂ / ‖b‖₂ (b is the reference). NaN anywhere gives +∞.
    public static func relativeL2(_ a: [Float], _ reference: [Double]) -> Double {
        precondition(a.count == reference.count)
        var diff = 0.0, norm = 0.0
        for i in a.indices {
            let d = Double(a[i]) - reference[i]
            diff += d * d
            norm += reference[i] * reference[i]
        }
        if diff.isNaN || norm.isNaN { return .infinity }
        return norm == 0 ? diff.squareRoot() : (diff / norm).squareRoot()
    }

    /// Tokens whose expert choice differs from the reference although the reference's k-th and (k+1)-th
    /// logits are more than `margin` apart (near-ties may legitimately differ). Compares expert sets.
    public static func routingMismatches(
        ids: [Int32], reference: ReferenceMoE.Output, tokens T: Int, experts E: Int, k: Int, margin: Double = 1e-3
    ) -> [Int] {
        var bad: [Int] = []
        for t in 0..<T {
            let row = reference.logits[(t * E)..<((t + 1) * E)].sorted(by: >)
            let gap = k < E ? row[k - 1] - row[k] : .infinity
            if gap <= margin { continue }
            let mine = Set(ids[(t * k)..<((t + 1) * k)]), theirs = Set(reference.topkIds[(t * k)..<((t + 1) * k)])
            if mine != theirs { bad.append(t) }
        }
        return bad
    }
}
