import MoECore

extension CPUBackend {
    /// The whole layer into caller-owned buffers: input [T, H] fp32 (rounded to bf16 on entry); writes
    /// hidden [T, H] (bf16 values), topkIds [T, k], topkWeights [T, k]. Bit for bit what
    /// `MoEPipeline.forward(kernels: self, ...)` computes, and — once the workspace has grown to T — free of
    /// allocation. Throws `shapeMismatch` for T < 1 and `nonFiniteInput` naming the first bad value.
    public func forward(
        input: UnsafePointer<Float>, tokens T: Int, routing: RoutingMode,
        hidden: UnsafeMutablePointer<Float>, topkIds ids: UnsafeMutablePointer<Int32>,
        topkWeights topWeights: UnsafeMutablePointer<Float>, profiler: Profiler?
    ) throws {
        let (E, H, k) = (config.experts, config.hidden, config.topK)
        try requireEveryExpert()
        guard T >= 1 else { throw MoEError.shapeMismatch("need at least 1 token, got \(T)") }
        for i in 0..<(T * H) where !BF16.isFiniteAfterRounding(input[i]) {
            throw MoEError.nonFiniteInput(row: i / H, column: i % H, value: input[i])
        }
        lock.withLock {
            let ws = workspace
            ws.reserve(tokens: T, config: config)
            let x = ws.x.pointer, logits = ws.logits.pointer

            // Router: x → bf16 and logits, tokens split over the workers; then top-k.
            let router = phases.router
            router.tokens = T
            router.input = input
            router.convertedX = x
            router.x = UnsafePointer(x)
            router.logits = logits
            profiler.scope(.router, cost: StageCost.router(tokens: T, config: config)) {
                pool.run(router, work: T * E * H)
            }
            selectExperts(logits: logits, tokens: T, mode: routing, ids: ids, weights: topWeights, profiler: profiler)

            // Plan: a stable counting sort of the T·k slots by expert (RoutingPlan's order).
            let counts = ws.expertCounts.pointer, offsets = ws.expertOffsets.pointer
            let sortedToSlot = ws.sortedToSlot.pointer, rowWeights = ws.rowWeights.pointer
            profiler.scope(.plan, cost: StageCost(bytes: Double(T * k * 4 * 4))) {
                for e in 0..<E { counts[e] = 0 }
                for slot in 0..<(T * k) { counts[Int(ids[slot])] += 1 }
                offsets[0] = 0
                for e in 0..<E {
                    offsets[e + 1] = offsets[e] + counts[e]
                    counts[e] = offsets[e]  // from here on: the next free row of expert e
                }
                for slot in 0..<(T * k) {
                    let e = Int(ids[slot])
                    let row = Int(counts[e])
                    counts[e] += 1
                    sortedToSlot[row] = Int32(slot)
                    rowWeights[row] = topWeights[slot]
                }
            }

            // Experts: gather x rows by token, scatter weighted rows into the slot-ordered combine buffer.
            let combine = ws.combine.pointer
            runExpertsLocked(
                expertOffsets: offsets, routedRows: T * k, experts: nil, rowWeights: rowWeights,
                input: RowAddressing(base: x, indices: sortedToSlot, divisor: Int32(k), stride: H),
                output: RowAddressing(base: combine, indices: sortedToSlot, stride: H),
                profiler: profiler)

            // Reduce: the k rows of each token in slot order, fp32, rounded to bf16 (MoEPipeline.reduce).
            let reduce = phases.reduce
            reduce.tokens = T
            reduce.combine = UnsafePointer(combine)
            reduce.hidden = hidden
            profiler.scope(.reduce, cost: StageCost.reduce(tokens: T, config: config)) {
                pool.run(reduce, work: T * k * H)
            }
        }
    }
}

/// The k-way sum of DESIGN §2 with SIMD: the same additions in the same order as `MoEPipeline.reduce`.
enum CombineReduction {
    /// out[h] = bf16(0 + row0[h] + row1[h] + ...): rows [count, H] bf16 bits (H a multiple of 16).
    @inline(__always)
    static func reduce(rows: UnsafePointer<UInt16>, count: Int, hidden H: Int, into out: UnsafeMutablePointer<Float>) {
        var h = 0
        while h < H {
            var sum = SIMD16<Float>(repeating: 0)
            for j in 0..<count {
                let bits = UnsafeRawPointer(rows + j * H + h).loadUnaligned(as: SIMD16<UInt16>.self)
                sum += unsafeBitCast(SIMD16<UInt32>(truncatingIfNeeded: bits) &<< 16, to: SIMD16<Float>.self)
            }
            UnsafeMutableRawPointer(out + h).storeBytes(of: roundToBF16(sum), as: SIMD16<Float>.self)
            h += 16
        }
    }

    /// BF16.round on 16 lanes: round to nearest even; NaN stays a quiet NaN with its sign.
    @inline(__always)
    static func roundToBF16(_ value: SIMD16<Float>) -> SIMD16<Float> {
        let bits = unsafeBitCast(value, to: SIMD16<UInt32>.self)
        let lsb = (bits &>> 16) & 1
        var rounded = (bits &+ 0x7FFF &+ lsb) & 0xFFFF_0000
        rounded.replace(with: (bits & 0xFFFF_0000) | 0x0040_0000, where: value .!= value)
        return unsafeBitCast(rounded, to: SIMD16<Float>.self)
    }
}
