import MoECore

extension ExpertParallelEngine {
    /// DESIGN §4 for one chunk. Three barriers; every destination is computed, never exchanged:
    ///
    /// 1. route: router + top-k on the rank's T_r tokens; rows T_r..<T_loc are padding (id −1).
    /// 2. metadata: the [T_loc, k] ids and weights are stored into every peer's routing region at row
    ///    rank·T_loc; barrier; every rank builds the same global `RoutingPlan` over R·T_loc tokens.
    /// 3. dispatch: each (token, slot) row is stored into its expert owner's dispatch region at the slot's
    ///    global sorted position; barrier. Across nodes (the GPU path's rails, docs/ep.md): a token row crosses to
    ///    another node once, whatever number of its k experts live there. In step 2 it goes to the rank of this
    ///    rank's rail on that node (`railTokens`, row rank·T_cap + t), and in step 3 that rank stores it at the
    ///    sorted positions of its node's owners. So step 3 stores only to this node's ranks.
    /// 4. experts: the backend's grouped GEMMs on this rank's experts read and write rows at those sorted
    ///    positions (no index tables), weights applied per sorted row.
    /// 5. combine: every computed row is stored into its home rank's combine region at the (token, slot)
    ///    index; barrier.
    /// 6. reduce: the k rows of each local token summed in slot order (`MoEPipeline.reduce`).
    ///
    /// Region reuse across layers is safe with these three barriers alone: each region is written by peers
    /// only between the barrier that opens its phase and the one that closes it, and read by its owner only
    /// after that closing barrier and before its next opening one.
    func symmetricStep(
        _ step: Step, kernels: some MoEStageKernels, profiler: Profiler?, measured: inout LayerMeasurement
    ) throws {
        let (R, r, k, H, E) = (world, rank, config.topK, config.hidden, config.experts)
        let (tokensPerRank, valid) = (step.tokensPerRank, step.validTokens)
        let rowBytes = H * 2
        var clock = PhaseClock(profiler: profiler, path: .symmetric)

        routeLocalTokens(step, kernels: kernels, profiler: profiler)
        clock.lap(.route, &measured)

        // Metadata: this rank's top-k into every peer's routing region, then the global plan.
        let routingBytes = tokensPerRank * k * 4
        for peer in 0..<R {
            try heap.store(to: peer, .routingIds, byteOffset: r * routingBytes, from: localIds, count: routingBytes)
            try heap.store(to: peer, .routingWeights, byteOffset: r * routingBytes, from: localWeights, count: routingBytes)
        }
        // Across nodes: each token row once to this rank's rail peer on every node that owns one of its experts.
        let L = ranksPerNode
        let node = r / L
        let capacity = heap.layout.capacity
        var railRows = 0
        if L < R {
            for t in 0..<valid {
                let row = UnsafeRawPointer(tokenBits + t * H)
                func nodeOfSlot(_ j: Int) -> Int { assignment.owner(of: Int(localIds[t * k + j])) / L }
                // Once per node: at the token's first slot on that node.
                for j in 0..<k where nodeOfSlot(j) != node && !(0..<j).contains(where: { nodeOfSlot($0) == nodeOfSlot(j) }) {
                    try heap.store(
                        to: nodeOfSlot(j) * L + r % L, .railTokens, byteOffset: (r * capacity + t) * rowBytes, from: row, count: rowBytes)
                    railRows += 1
                }
            }
        }
        try publishStepShape(step)
        try barrier(.route, step, charging: .metadata, &measured)
        try checkStepShapes(step)
        let globalSlots = R * tokensPerRank * k
        let globalIds = heap.pointer(to: .routingIds, rank: r, as: Int32.self)
        let globalWeights = heap.pointer(to: .routingWeights, rank: r, as: Float.self)
        let plan = profiler.scope(.plan, cost: StageCost(bytes: Double(globalSlots * 4 * 4))) {
            RoutingPlan(
                topkIds: Array(UnsafeBufferPointer(start: globalIds, count: globalSlots)),
                tokens: R * tokensPerRank, topK: k, experts: E)
        }
        clock.lap(
            .metadata, &measured, moved: 2 * routingBytes * R + railRows * rowBytes,
            remote: 2 * routingBytes * (R - 1) + railRows * rowBytes)

        // Dispatch: each (token, slot) row owned on this node to its owner's dispatch region, at its global sorted
        // position: this rank's own tokens, and its rail peers' tokens that arrived in railTokens.
        var (movedRows, remoteRows) = (0, 0)
        try plan.slotToSorted.withUnsafeBufferPointer { slotToSorted in
            try profiler.scope(.dispatch, cost: StageCost(bytes: Double(valid * k * rowBytes * 2))) {
                func place(source: Int, t: Int, row: UnsafeRawPointer) throws {
                    for j in 0..<k {
                        let slot = (source * tokensPerRank + t) * k + j
                        let id = globalIds[slot]
                        guard id >= 0 else { continue }
                        let owner = assignment.owner(of: Int(id))
                        guard owner / L == node else { continue }
                        let position = Int(slotToSorted[slot])
                        try heap.store(to: owner, .dispatch, byteOffset: position * rowBytes, from: row, count: rowBytes)
                        movedRows += 1
                        if owner != r { remoteRows += 1 }
                    }
                }
                for t in 0..<valid { try place(source: r, t: t, row: UnsafeRawPointer(tokenBits + t * H)) }
                let railTokens = heap.address(of: .railTokens, rank: r)
                for m in 0..<(R / L) where m != node {
                    let source = m * L + r % L
                    for t in 0..<tokensPerRank {
                        try place(source: source, t: t, row: UnsafeRawPointer(railTokens + (source * capacity + t) * rowBytes))
                    }
                }
            }
        }
        try barrier(.dispatch, step, charging: .dispatch, &measured)
        clock.lap(.dispatch, &measured, moved: movedRows * rowBytes, remote: remoteRows * rowBytes)

        // Experts: this rank's experts on their rows of the dispatch region, in place by sorted position.
        var ownedRows = 0
        plan.sortedToSlot.withUnsafeBufferPointer { sortedToSlot in
            for e in localExperts {
                for p in Int(plan.expertOffsets[e])..<Int(plan.expertOffsets[e + 1]) {
                    rowWeights[p] = globalWeights[Int(sortedToSlot[p])]
                }
                ownedRows += Int(plan.expertCounts[e])
            }
        }
        if ownedRows > 0 {
            kernels.runExperts(
                plan: plan, experts: localExperts, rowWeights: rowWeights,
                input: RowAddressing(base: heap.pointer(to: .dispatch, rank: r, as: UInt16.self), stride: H),
                output: RowAddressing(base: expertRows, stride: H), profiler: profiler)
        }
        clock.lap(.experts, &measured)

        // Combine: every computed row home, at its (token, slot) index in the home rank's combine region.
        remoteRows = 0
        let slotsPerRank = tokensPerRank * k
        try plan.sortedToSlot.withUnsafeBufferPointer { sortedToSlot in
            try profiler.scope(.combine, cost: StageCost(bytes: Double(ownedRows * rowBytes * 2))) {
                for e in localExperts {
                    for p in Int(plan.expertOffsets[e])..<Int(plan.expertOffsets[e + 1]) {
                        let slot = Int(sortedToSlot[p])
                        let home = slot / slotsPerRank
                        try heap.store(
                            to: home, .combine, byteOffset: (slot - home * slotsPerRank) * rowBytes,
                            from: expertRows + p * H, count: rowBytes)
                        if home != r { remoteRows += 1 }
                    }
                }
            }
        }
        try barrier(.combine, step, charging: .combine, &measured)
        clock.lap(.combine, &measured, moved: ownedRows * rowBytes, remote: remoteRows * rowBytes)

        // Reduce: the k rows of each local token, slot order, fp32, rounded to bf16.
        if let output = step.output, valid > 0 {
            profiler.scope(.reduce, cost: StageCost.reduce(tokens: valid, config: config)) {
                plan.slotToSorted.withUnsafeBufferPointer { slotToSorted in
                    MoEPipeline.reduce(
                        combine: heap.pointer(to: .combine, rank: r, as: UInt16.self),
                        slotToSorted: slotToSorted.baseAddress! + r * slotsPerRank, tokens: valid, topK: k, hidden: H,
                        output: output)
                }
            }
        }
        clock.lap(.reduce, &measured)
    }
}
