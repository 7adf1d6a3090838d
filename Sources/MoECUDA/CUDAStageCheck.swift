import CCUDA
import Dispatch
import MoECore

/// A stage-by-stage check of one forward pass: every intermediate the device wrote is compared with a host
/// computation fed with the device's own previous-stage outputs, so a wrong result is pinned to one kernel.
/// Outputs are poisoned (0xFF) first, so unwritten elements show up as NaN / −1.
public struct CUDAStageReport: Sendable {
    public struct Line: Sendable {
        public var stage: String
        public var passed: Bool
        public var detail: String
    }

    public var lines: [Line] = []
    public var passed: Bool { lines.allSatisfy(\.passed) }

    mutating func add(_ stage: String, _ passed: Bool, _ detail: String) { lines.append(Line(stage: stage, passed: passed, detail: detail)) }
}

extension CUDABackend {
    public func stageCheck(weights: MoELayerWeights, input: [Float], tokens T: Int, mode: RoutingMode) throws -> CUDAStageReport {
        try InputCheck.validate(input, tokens: T, hidden: config.hidden)
        let c = config
        let (E, H, I, k) = (c.experts, c.hidden, c.intermediate, c.topK)
        lock.wait()
        let bucket: TokenBucket
        do {
            defer { lock.signal() }
            try runtime.device.makeCurrent()
            bucket = try self.bucket(tokens: T)
            try bucket.inputs[0].uploadAsync(input.map { BF16.bits($0) }, stream: stream)
            for buffer in bucket.writtenBuffers { try buffer.fill(byte: 0xFF, stream: stream) }
            try bucket.prepareTensorMaps(slot: 0, layer: layer, device: runtime.device)
            try bucket.enqueue(slot: 0, mode: mode, layer: layer, kernels: kernels, stream: stream)
            try stream.synchronize()
        }
        let plan = bucket.plan
        let slots = plan.slots
        let logits = try bucket.logits.download(Float.self, count: T * E)
        let ids = try bucket.topkIds.download(Int32.self, count: slots)
        let topWeights = try bucket.topkWeights.download(Float.self, count: slots)
        let counts = try bucket.expertCounts.download(Int32.self, count: E)
        let offsets = try bucket.expertOffsets.download(Int32.self, count: E + 1)
        let sortedToSlot = try bucket.sortedToSlot.download(Int32.self, count: slots)
        let slotToSorted = try bucket.slotToSorted.download(Int32.self, count: slots)
        let sortedWeights = try bucket.sortedWeights.download(Float.self, count: slots)
        let tileCount = Int(try bucket.tileCount.download(Int32.self, count: 1)[0])
        let tiles = try bucket.tiles.download(MoETile.self, count: plan.maxTiles)
        let a = try bucket.intermediate.download(UInt16.self, count: slots * I)
        let combine = try bucket.combine.download(UInt16.self, count: slots * H)
        let output = try bucket.output.download(UInt16.self, count: T * H)
        var report = CUDAStageReport()
        let x = input.map { BF16.round($0) }

        // Router: fp32 dot products (summation order differs from the device's).
        var logitError: Float = 0, logitScale: Float = 0
        for t in 0..<T {
            for e in 0..<E {
                var sum: Float = 0
                for h in 0..<H { sum += x[t * H + h] * weights.routerWeight[e * H + h] }
                let reference = sum + weights.routerBias[e]
                logitError = max(logitError, abs(reference - logits[t * E + e]))
                logitScale = max(logitScale, abs(reference))
            }
        }
        let logitsOK = logits.allSatisfy(\.isFinite) && logitError <= 1e-3 * max(1, logitScale)
        report.add("router", logitsOK, "max |Δlogit| \(logitError) (scale \(logitScale))")

        // Top-k from the device's logits.
        var hostIds = [Int32](repeating: 0, count: slots), hostWeights = [Float](repeating: 0, count: slots)
        logits.withUnsafeBufferPointer { l in
            for t in 0..<T {
                TopK.route(
                    logits: l.baseAddress! + t * E, experts: E, k: k, mode: mode, ids: &hostIds[t * k],
                    weights: &hostWeights[t * k])
            }
        }
        var weightError: Float = 0
        for s in 0..<slots { weightError = max(weightError, abs(hostWeights[s] - topWeights[s])) }
        let idMismatches = (0..<slots).filter { hostIds[$0] != ids[$0] }.count
        report.add("topk", idMismatches == 0 && weightError <= 1e-5, "\(idMismatches) id mismatches, max |Δweight| \(weightError)")

        // Plan from the device's ids.
        let reference = RoutingPlan(
            topkIds: ids.map { $0 >= 0 && $0 < E ? $0 : 0 }, tokens: T, topK: k, experts: E, tileRows: plan.tileRows,
            tileWidths: plan.tileWidths)
        var planProblems: [String] = []
        if counts != reference.expertCounts { planProblems.append("counts") }
        if offsets != reference.expertOffsets { planProblems.append("offsets") }
        if sortedToSlot != reference.sortedToSlot { planProblems.append("sortedToSlot") }
        if slotToSorted != reference.slotToSorted { planProblems.append("slotToSorted") }
        if (0..<slots).contains(where: { sortedWeights[$0] != topWeights[Int(max(0, sortedToSlot[$0]))] }) {
            planProblems.append("sortedWeights")
        }
        let tilesAgree = tileCount == reference.tiles.count
            && zip(tiles, reference.tiles).allSatisfy { d, r in
                d.expert == r.expert && d.rowStart == r.rowStart && d.rowCount == r.rowCount
            }
        if !tilesAgree { planProblems.append("tiles (\(tileCount) vs \(reference.tiles.count))") }
        report.add("plan", planProblems.isEmpty, planProblems.isEmpty ? "\(reference.tiles.count) tiles of ≤ \(plan.tileRows) rows" : "differs: " + planProblems.joined(separator: ", "))
        guard planProblems.isEmpty else { return report }

        // GEMM 1 from the device's plan and x.
        let alpha = Float(c.swigluAlpha), limit = Float(c.swigluLimit)
        var expectedA = [Float](repeating: 0, count: slots * I)
        expectedA.withUnsafeMutableBufferPointer { out in
            nonisolated(unsafe) let out = out
            DispatchQueue.concurrentPerform(iterations: E) { e in
                guard counts[e] > 0 else { return }
                let w1 = weights.gateUp.matrix(expert: e).decoded()
                for r in Int(offsets[e])..<Int(offsets[e + 1]) {
                    let token = Int(sortedToSlot[r]) / k
                    for i in 0..<I {
                        var gate: Float = 0, up: Float = 0
                        for h in 0..<H {
                            gate += w1[(2 * i) * H + h] * x[token * H + h]
                            up += w1[(2 * i + 1) * H + h] * x[token * H + h]
                        }
                        let gateBias: Float = weights.gateUpBias[e * 2 * I + 2 * i]
                        let upBias: Float = weights.gateUpBias[e * 2 * I + 2 * i + 1]
                        let activation = SwiGLU.apply(gate: gate + gateBias, up: up + upBias, alpha: alpha, limit: limit)
                        out[r * I + i] = BF16.round(activation)
                    }
                }
            }
        }
        report.add("gemm1", compare(a, expectedA), "a [\(slots), \(I)]: " + summary(a, expectedA))

        // GEMM 2 from the device's a.
        var expectedCombine = [Float](repeating: .nan, count: slots * H)
        expectedCombine.withUnsafeMutableBufferPointer { out in
            nonisolated(unsafe) let out = out
            DispatchQueue.concurrentPerform(iterations: E) { e in
                guard counts[e] > 0 else { return }
                let w2 = weights.down.matrix(expert: e).decoded()
                for r in Int(offsets[e])..<Int(offsets[e + 1]) {
                    let slot = Int(sortedToSlot[r])
                    for h in 0..<H {
                        var y: Float = 0
                        for i in 0..<I { y += w2[h * I + i] * BF16.float(a[r * I + i]) }
                        let bias: Float = weights.downBias[e * H + h]
                        out[slot * H + h] = BF16.round(sortedWeights[r] * (y + bias))
                    }
                }
            }
        }
        report.add("gemm2", compare(combine, expectedCombine), "combine [\(slots), \(H)]: " + summary(combine, expectedCombine))

        // Reduce from the device's combine: bit-exact.
        var expectedOutput = [Float](repeating: 0, count: T * H)
        combine.withUnsafeBufferPointer { cp in
            slotToSorted.withUnsafeBufferPointer { s in
                MoEPipeline.reduce(
                    combine: cp.baseAddress!, slotToSorted: s.baseAddress!, tokens: T, topK: k, hidden: H, output: &expectedOutput)
            }
        }
        let outputMismatches = (0..<(T * H)).filter { BF16.bits(expectedOutput[$0]) != output[$0] }.count
        report.add("reduce", outputMismatches == 0, "\(outputMismatches) of \(T * H) outputs differ from the host sum of the device's rows")
        return report
    }

    private func compare(_ device: [UInt16], _ expected: [Float]) -> Bool {
        var num = 0.0, den = 0.0, nan = 0
        for i in device.indices {
            let value = BF16.float(device[i])
            if !value.isFinite { nan += 1; continue }
            num += Double(value - expected[i]) * Double(value - expected[i])
            den += Double(expected[i]) * Double(expected[i])
        }
        return nan == 0 && (num / max(den, 1e-30)).squareRoot() <= 1e-2
    }

    private func summary(_ device: [UInt16], _ expected: [Float]) -> String {
        var num = 0.0, den = 0.0, nan = 0, firstBad = -1, maxDiff: Float = 0
        for i in device.indices {
            let value = BF16.float(device[i])
            if !value.isFinite {
                nan += 1
                if firstBad < 0 { firstBad = i }
                continue
            }
            let d = value - expected[i]
            maxDiff = max(maxDiff, abs(d))
            num += Double(d) * Double(d)
            den += Double(expected[i]) * Double(expected[i])
        }
        let rel = (num / max(den, 1e-30)).squareRoot()
        var text = "rel L2 \(rel), max |Δ| \(maxDiff), \(nan) non-finite"
        if firstBad >= 0 { text += " (first at \(firstBad))" }
        return text
    }
}
