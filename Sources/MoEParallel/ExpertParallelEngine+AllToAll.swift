import MoECore

extension ExpertParallelEngine {
    /// The baseline for one chunk, as an all-to-all library path runs it (era-A triton_kernels / DeepEP
    /// "normal" mode): a token travels once to every rank owning one of its experts, with its whole top-k.
    ///
    /// 1. route: router + top-k on the rank's tokens (same kernels as the symmetric path).
    /// 2. metadata: per-destination token and slot counts; the count matrix is all-gathered through every
    ///    peer's `allToAllCounts`; barrier — the host synchronisation: only now are the receive sizes known,
    ///    and buffers are sized from them (dynamic shapes, fresh allocations, as eager code does).
    /// 3. dispatch: rows packed per destination (x, ids, weights), then each packed block copied into the
    ///    destination's receive regions at an offset derived from the counts; barrier.
    /// 4. experts: the receiver masks slots of experts it does not own, builds a local routing plan over the
    ///    received tokens and runs the backend's grouped GEMMs with gather/scatter index tables.
    /// 5. combine: each computed (token, slot) row packed per source rank, copied home into its
    ///    `allToAllReturn` region; barrier; the home rank unpacks rows to (token, slot) order.
    /// 6. reduce: as the symmetric path (slot order, fp32), so both paths agree bit for bit.
    ///
    /// Rows come home one per (token, slot), not pre-summed per rank as DeepEP does, so the k-way sum keeps
    /// the single-rank order.
    func allToAllStep(
        _ step: Step, kernels: some MoEStageKernels, profiler: Profiler?, measured: inout LayerMeasurement
    ) throws {
        let (R, r, k, H, E) = (world, rank, config.topK, config.hidden, config.experts)
        let valid = step.validTokens
        let rowBytes = H * 2
        let capacity = heap.layout.capacity
        var clock = PhaseClock(profiler: profiler, path: .alltoall)

        routeLocalTokens(step, kernels: kernels, profiler: profiler)
        clock.lap(.route, &measured)

        // Metadata: how many tokens (and slots) go to each rank; all-gather the matrix; host sync.
        var tokensTo = [Int](repeating: 0, count: R)
        var slotsTo = [Int](repeating: 0, count: R)
        var sentTo = [Bool](repeating: false, count: R)
        for t in 0..<valid {
            for d in 0..<R { sentTo[d] = false }
            for j in 0..<k {
                let d = assignment.owner(of: Int(localIds[t * k + j]))
                slotsTo[d] += 1
                if !sentTo[d] {
                    sentTo[d] = true
                    tokensTo[d] += 1
                }
            }
        }
        var countsRow = [Int32](repeating: 0, count: 2 * R)
        for d in 0..<R {
            countsRow[2 * d] = Int32(tokensTo[d])
            countsRow[2 * d + 1] = Int32(slotsTo[d])
        }
        for peer in 0..<R {
            try heap.store(to: peer, .allToAllCounts, byteOffset: r * R * 2 * 4, from: countsRow, count: 2 * R * 4)
        }
        try publishStepShape(step)
        try barrier(.allToAllCounts, step, charging: .metadata, &measured)
        try checkStepShapes(step)
        let counts = heap.pointer(to: .allToAllCounts, rank: r, as: Int32.self)
        func tokens(from source: Int, to destination: Int) -> Int { Int(counts[(source * R + destination) * 2]) }
        func slots(from source: Int, to destination: Int) -> Int { Int(counts[(source * R + destination) * 2 + 1]) }
        let receivedTokens = (0..<R).reduce(0) { $0 + tokens(from: $1, to: r) }
        precondition(receivedTokens <= R * capacity, "receive region overflow: counts are inconsistent")
        // Buffers sized by what the exchange said. An eager framework takes them from a caching allocator; so do
        // we (`allToAllBuffers` keeps the largest of each and never clears: every element read is written first).
        let sendTokens = tokensTo.reduce(0, +)
        let buffers = allToAllBuffers
        let sendRows = buffers.sendRows.reserve(sendTokens * H)
        let sendIds = buffers.sendIds.reserve(sendTokens * k)
        let sendWeights = buffers.sendWeights.reserve(sendTokens * k)
        let expertOutput = buffers.expertOutput.reserve(receivedTokens * k * H)
        let combineRows = buffers.combineRows.reserve(valid * k * H)
        clock.lap(.metadata, &measured, moved: 2 * R * R * 4, remote: 2 * R * (R - 1) * 4)

        // Dispatch: pack per destination (token order), then copy each block into the destination's receive
        // regions after the blocks of lower source ranks.
        var sendStart = [Int](repeating: 0, count: R + 1)
        for d in 0..<R { sendStart[d + 1] = sendStart[d] + tokensTo[d] }
        var cursor = sendStart
        for t in 0..<valid {
            for d in 0..<R { sentTo[d] = false }
            for j in 0..<k { sentTo[assignment.owner(of: Int(localIds[t * k + j]))] = true }
            for d in 0..<R where sentTo[d] {
                let n = cursor[d]
                cursor[d] += 1
                (sendRows + n * H).update(from: tokenBits + t * H, count: H)
                for j in 0..<k {
                    sendIds[n * k + j] = localIds[t * k + j]
                    sendWeights[n * k + j] = localWeights[t * k + j]
                }
            }
        }
        var remoteTokens = 0
        for d in 0..<R where tokensTo[d] > 0 {
            let offset = (0..<r).reduce(0) { $0 + tokens(from: $1, to: d) }
            let count = tokensTo[d]
            let first = sendStart[d]
            try heap.store(to: d, .allToAllRows, byteOffset: offset * rowBytes, from: sendRows + first * H, count: count * rowBytes)
            try heap.store(to: d, .allToAllIds, byteOffset: offset * k * 4, from: sendIds + first * k, count: count * k * 4)
            try heap.store(to: d, .allToAllWeights, byteOffset: offset * k * 4, from: sendWeights + first * k, count: count * k * 4)
            if d != r { remoteTokens += count }
        }
        try barrier(.allToAllDispatch, step, charging: .dispatch, &measured)
        let tokenBytes = rowBytes + k * 8
        clock.lap(.dispatch, &measured, moved: 2 * sendTokens * tokenBytes, remote: remoteTokens * tokenBytes)

        // Experts: local plan over the received tokens, slots of other ranks' experts masked out.
        let receivedIds = heap.pointer(to: .allToAllIds, rank: r, as: Int32.self)
        let receivedWeights = heap.pointer(to: .allToAllWeights, rank: r, as: Float.self)
        var maskedIds = [Int32](repeating: -1, count: receivedTokens * k)
        for i in 0..<(receivedTokens * k) where assignment.owner(of: Int(receivedIds[i])) == r {
            maskedIds[i] = receivedIds[i]
        }
        let plan = RoutingPlan(topkIds: maskedIds, tokens: receivedTokens, topK: k, experts: E)
        let rowWeights = buffers.rowWeights.reserve(plan.routedSlots)
        for p in 0..<plan.routedSlots { rowWeights[p] = receivedWeights[Int(plan.sortedToSlot[p])] }
        if plan.routedSlots > 0 {
            plan.sortedToSlot.withUnsafeBufferPointer { order in
                kernels.runExperts(
                    plan: plan, experts: localExperts, rowWeights: rowWeights,
                    input: RowAddressing(
                        base: heap.pointer(to: .allToAllRows, rank: r, as: UInt16.self), indices: order.baseAddress!,
                        divisor: Int32(k), stride: H),
                    output: RowAddressing(base: expertOutput, indices: order.baseAddress!, stride: H),
                    profiler: profiler)
            }
        }
        clock.lap(.experts, &measured)

        // Combine: pack computed rows per source rank (its tokens in order, slots ascending), copy each block
        // home after the blocks of lower destination ranks, then the home rank unpacks to slot order.
        let returnRows = buffers.returnRows.reserve(plan.routedSlots * H)
        var returnStart = [Int](repeating: 0, count: R + 1)
        var packed = 0
        var firstToken = 0
        for source in 0..<R {
            returnStart[source] = packed
            let count = tokens(from: source, to: r)
            for n in firstToken..<(firstToken + count) {
                for j in 0..<k where maskedIds[n * k + j] >= 0 {
                    (returnRows + packed * H).update(from: expertOutput + (n * k + j) * H, count: H)
                    packed += 1
                }
            }
            firstToken += count
        }
        returnStart[R] = packed
        var remoteSlots = 0
        for source in 0..<R where returnStart[source + 1] > returnStart[source] {
            let offset = (0..<r).reduce(0) { $0 + slots(from: source, to: $1) }
            let count = returnStart[source + 1] - returnStart[source]
            precondition(count == slots(from: source, to: r), "returned rows disagree with the exchanged slot counts")
            try heap.store(
                to: source, .allToAllReturn, byteOffset: offset * rowBytes, from: returnRows + returnStart[source] * H,
                count: count * rowBytes)
            if source != r { remoteSlots += count }
        }
        try barrier(.allToAllCombine, step, charging: .combine, &measured)
        let returned = heap.pointer(to: .allToAllReturn, rank: r, as: UInt16.self)
        var next = 0
        for d in 0..<R {
            for t in 0..<valid {
                for j in 0..<k where assignment.owner(of: Int(localIds[t * k + j])) == d {
                    (combineRows + (t * k + j) * H).update(from: returned + next * H, count: H)
                    next += 1
                }
            }
        }
        let localSlots = valid * k
        clock.lap(.combine, &measured, moved: (2 * packed + localSlots) * rowBytes, remote: remoteSlots * rowBytes)

        // Reduce: identical to the symmetric path.
        if let output = step.output, valid > 0 {
            let routed = [Int32](repeating: 0, count: localSlots)
            profiler.scope(.reduce, cost: StageCost.reduce(tokens: valid, config: config)) {
                MoEPipeline.reduce(
                    combine: combineRows, slotToSorted: routed, tokens: valid, topK: k, hidden: H, output: output)
            }
        }
        clock.lap(.reduce, &measured)
    }
}

/// The all-to-all baseline's per-layer buffers, kept at their largest size like a caching allocator's blocks.
final class AllToAllBuffers: @unchecked Sendable {
    let sendRows = GrowableBuffer<UInt16>()
    let sendIds = GrowableBuffer<Int32>()
    let sendWeights = GrowableBuffer<Float>()
    let expertOutput = GrowableBuffer<UInt16>()
    let combineRows = GrowableBuffer<UInt16>()
    let returnRows = GrowableBuffer<UInt16>()
    let rowWeights = GrowableBuffer<Float>()
}

/// Uninitialised storage that grows to the largest size asked for and is reused (trivial element types).
final class GrowableBuffer<T: BitwiseCopyable> {
    private var storage: UnsafeMutablePointer<T>
    private var capacity = 1

    init() { storage = .allocate(capacity: 1) }
    deinit { storage.deallocate() }

    /// Room for `count` elements; contents are unspecified.
    func reserve(_ count: Int) -> UnsafeMutablePointer<T> {
        if count > capacity {
            storage.deallocate()
            capacity = count
            storage = .allocate(capacity: count)
        }
        return storage
    }
}
