import CMoECPUKernels
import MoECore

extension CPUBackend {
    /// Both grouped GEMMs for the sorted rows of `experts` (MoEStageKernels): reads row r through `input`, writes
    /// bf16(rowWeights[r] · (W2·SwiGLU(W1·x + b1) + b2)) through `output`.
    public func runExperts(
        plan: RoutingPlan, experts: [Int], rowWeights: UnsafePointer<Float>,
        input: RowAddressing, output: RowAddressing, profiler: Profiler?
    ) {
        precondition(plan.experts == config.experts, "the plan is for \(plan.experts) experts, the layer has \(config.experts)")
        for e in experts where (0..<config.experts).contains(e) && plan.expertOffsets[e + 1] > plan.expertOffsets[e] {
            precondition(gateUp.isResident(e), "expert \(e) has rows but its weights are not packed on this rank")
        }
        lock.withLock {
            plan.expertOffsets.withUnsafeBufferPointer { offsets in
                experts.withUnsafeBufferPointer { list in
                    runExpertsLocked(
                        expertOffsets: offsets.baseAddress!, routedRows: plan.routedSlots, experts: list,
                        rowWeights: rowWeights, input: input, output: output, profiler: profiler)
                }
            }
        }
    }

    /// The grouped GEMMs (caller holds the lock). `experts`: ascending ids, nil for all; expertOffsets: [E+1].
    func runExpertsLocked(
        expertOffsets offsets: UnsafePointer<Int32>, routedRows: Int, experts list: UnsafeBufferPointer<Int>?,
        rowWeights: UnsafePointer<Float>, input: RowAddressing, output: RowAddressing, profiler: Profiler?
    ) {
        let (E, H) = (config.experts, config.hidden)
        let maxTokens = kernelPath.maxTileTokens
        let layout = kernelPath.activationLayout
        workspace.reserve(rows: routedRows, config: config, layout: layout)

        // 1. The work list: experts with rows, each split into near-equal token groups of ≤ maxTokens rows.
        let work = workspace.expertWork.pointer, groups = workspace.groups.pointer
        var workCount = 0, groupCount = 0, rows = 0
        let expertCount = list?.count ?? E
        for index in 0..<expertCount {
            let e = list?[index] ?? index
            precondition(e >= 0 && e < E, "expert id \(e) out of range 0..<\(E)")
            precondition(index == 0 || e > (list?[index - 1] ?? index - 1), "experts must be ascending and distinct")
            let start = Int(offsets[e]), count = Int(offsets[e + 1]) - start
            if count == 0 { continue }
            let groupsOfExpert = (count + maxTokens - 1) / maxTokens
            work[workCount] = ExpertWork(
                expert: Int32(e), firstGroup: Int32(groupCount), groupCount: Int32(groupsOfExpert), rows: Int32(count))
            var rowStart = start
            for g in 0..<groupsOfExpert {
                let size = count / groupsOfExpert + (g < count % groupsOfExpert ? 1 : 0)
                groups[groupCount] = TokenGroup(rowStart: Int32(rowStart), rowCount: Int32(size))
                groupCount += 1
                rowStart += size
            }
            workCount += 1
            rows += count
        }
        if workCount == 0 { return }

        // 2. Where each row comes from and goes to (the gather and the scatter of RowAddressing).
        let inputRows = workspace.inputRows.pointer, outputRows = workspace.outputRows.pointer
        for w in 0..<workCount {
            let first = groups[Int(work[w].firstGroup)].rowStart
            for r in Int(first)..<(Int(first) + Int(work[w].rows)) {
                inputRows[r] = input.row(r)
                outputRows[r] = output.row(r)
            }
        }

        // 3. Gather the rows into each group's packed GEMM 1 input.
        let bytesPerValue = layout.bytesPerValue
        let pack = phases.pack
        pack.groups = UnsafePointer(groups)
        pack.groupCount = groupCount
        pack.inputRows = UnsafePointer(inputRows)
        pack.packedInput = workspace.packedInput.pointer
        profiler.scope(.dispatch, cost: StageCost(bytes: Double(rows * H * (2 + bytesPerValue)))) {
            pool.run(pack, work: rows * H)
        }

        // 4. GEMM 1 + SwiGLU, then 5. GEMM 2 with the routing weight, into the output rows.
        let pass = ExpertsPass(
            work: UnsafePointer(work), workCount: workCount, groups: UnsafePointer(groups),
            packedInput: workspace.packedInput.pointer, packedIntermediate: workspace.packedIntermediate.pointer,
            rowWeights: rowWeights, outputRows: UnsafePointer(outputRows))
        phases.gemm1.pass = pass
        phases.gemm2.pass = pass
        let I = config.intermediate
        profiler.scope(.gemm1, cost: StageCost.gemm1(rows: rows, expertsTouched: workCount, config: config)) {
            pool.run(phases.gemm1, work: rows * H * 2 * I)
        }
        profiler.scope(.gemm2, cost: StageCost.gemm2(rows: rows, expertsTouched: workCount, config: config)) {
            pool.run(phases.gemm2, work: rows * I * H)
        }
    }

    @inline(__always)
    func portableScratch(_ worker: Int) -> UnsafeMutablePointer<SIMD16<Float>> {
        workspace.portableScratch.pointer + worker * workspace.portableScratchPerWorker
    }

    /// Calls `body(expert, unit)` for this worker's share of the units (expert, 0..<unitsPerExpert), taken in
    /// order (expert-major, so a worker streams each expert's weights front to back). Shares are contiguous and
    /// balanced by cost: a unit of an expert with G groups and n rows costs 2·G + n (the weights' pass counts
    /// like two tokens' arithmetic).
    @inline(__always)
    func forEachUnit(
        worker: Int, unitsPerExpert units: Int, work: UnsafePointer<ExpertWork>, count: Int,
        _ body: (ExpertWork, Int) -> Void
    ) {
        let W = pool.activeWorkers
        var total = 0
        for w in 0..<count { total += units * (2 * Int(work[w].groupCount) + Int(work[w].rows)) }
        // Unit u with cost prefix P belongs to the worker with worker·total ≤ P·W < (worker+1)·total.
        let low = worker * total, high = (worker + 1) * total
        var prefix = 0
        for w in 0..<count {
            let cost = 2 * Int(work[w].groupCount) + Int(work[w].rows)
            let first = max(0, ceilingDivide(low - prefix * W, cost * W))
            let end = min(units, max(0, ceilingDivide(high - prefix * W, cost * W)))
            if first < end {
                for unit in first..<end { body(work[w], unit) }
            }
            prefix += units * cost
        }
    }
}

extension CPUKernelPath {
    /// Runs one GEMM 1 tile on this path. scratch: the portable path's `PortableKernels.scratchVectors` vectors.
    @inline(__always)
    func gemm1(_ tile: inout moekit_gemm1_tile, scratch: UnsafeMutablePointer<SIMD16<Float>>) {
        switch self {
        case .amxBF16: moekit_amxbf16_gemm1(&tile)
        case .avx512BF16: moekit_avx512bf16_gemm1(&tile)
        case .avx2: moekit_avx2_gemm1(&tile)
        case .neon: moekit_neon_gemm1(&tile)
        case .portable: PortableKernels.gemm1(tile, scratch: scratch)
        }
    }

    /// Runs one GEMM 2 tile on this path. scratch: the portable path's `PortableKernels.scratchVectors` vectors.
    @inline(__always)
    func gemm2(_ tile: inout moekit_gemm2_tile, scratch: UnsafeMutablePointer<SIMD16<Float>>) {
        switch self {
        case .amxBF16: moekit_amxbf16_gemm2(&tile)
        case .avx512BF16: moekit_avx512bf16_gemm2(&tile)
        case .avx2: moekit_avx2_gemm2(&tile)
        case .neon: moekit_neon_gemm2(&tile)
        case .portable: PortableKernels.gemm2(tile, scratch: scratch)
        }
    }
}

/// ⌈a / b⌉ for b > 0 and any a.
@inline(__always)
func ceilingDivide(_ a: Int, _ b: Int) -> Int {
    a >= 0 ? (a + b - 1) / b : -((-a) / b)
}

/// Packs bf16 rows into a path's GEMM input layout (moekit_cpu.h).
enum ActivationPacking {
    /// rows: `count` bf16 rows of `columns` values; destination: [columns/2][count] pairs or [columns][count] floats.
    @inline(__always)
    static func pack(
        rows: UnsafePointer<UnsafeMutablePointer<UInt16>?>, count: Int, columns: Int, layout: ActivationLayout,
        into destination: UnsafeMutablePointer<UInt8>
    ) {
        switch layout {
        case .bf16Pairs:
            let pairs = UnsafeMutableRawPointer(destination).assumingMemoryBound(to: UInt32.self)
            for t in 0..<count {
                let row = rows[t]!
                for p in 0..<(columns / 2) { pairs[p * count + t] = UInt32(row[2 * p]) | UInt32(row[2 * p + 1]) << 16 }
            }
        case .float32:
            let values = UnsafeMutableRawPointer(destination).assumingMemoryBound(to: Float.self)
            for t in 0..<count {
                let row = rows[t]!
                for k in 0..<columns { values[k * count + t] = BF16.float(row[k]) }
            }
        case .bf16Rows:
            for t in 0..<count {
                UnsafeMutableRawPointer(destination + t * columns * 2).copyMemory(from: rows[t]!, byteCount: columns * 2)
            }
        }
    }
}
