import CCUDA
import Dispatch
import MoECore

extension CUDAExpertParallelLayer {
    /// The all-to-all baseline (DESIGN §4's comparison), run eagerly as the library path it replaces:
    ///
    /// 1. route: router + top-k on the local rows; the ids come to the host (a synchronisation).
    /// 2. metadata: per-destination (token, slot) counts; exchanged through the host (CPU heap + barrier).
    /// 3. dispatch: rows packed by destination; a variable-size all-to-all puts each block at its receiver, at
    ///    the offset the counts give (`AllToAllPlan`).
    /// 4. experts: the receiver orders its rows by expert on the host, uploads the order and tiles, runs both
    ///    grouped GEMMs (rows of the same kernel variant as the single-rank forward: same bits per row).
    /// 5. combine: each received block goes back to its sender, in send order (the all-to-all back); unpacked
    ///    to (token, slot) order.
    /// 6. reduce: the same slot-order k-way sum.
    ///
    /// The all-to-all's transport: with `allToAllCommunicator` set, one NCCL group of ncclSend/ncclRecv per
    /// direction (rows, ids, weights with every peer; the library path, one GPU per rank, any number of nodes);
    /// otherwise cuMemcpyDtoDAsync through the IPC-mapped peer heaps followed by a host barrier (ranks sharing
    /// a GPU, which NCCL refuses: "Duplicate GPU detected").
    ///
    /// Phase times are host wall time (each phase ends in a host synchronisation by design).
    public func forwardAllToAll(
        _ input: [Float], tokens: Int, mode: RoutingMode, host: CUDAExpertParallelHost, poison: Bool = false
    ) throws -> CUDAExpertParallelResult {
        try KernelBuildSwitches.refuseAliasedExperts("an expert-parallel layer's outputs")
        let device = runtime.device
        try device.makeCurrent()
        let b = try bucket(tokens: tokens)
        let (R, k, H) = (world, config.topK, config.hidden)
        let row = H * 2
        var seconds = [Double](repeating: 0, count: 6)
        var moved = [Double](repeating: 0, count: 6), remote = [Double](repeating: 0, count: 6)
        // The hidden states are on the device before the layer and stay there after it (as in the library path and the
        // symmetric path's timing): the upload and the final download are outside the phase times.
        try upload(input, bucket: b, poison: poison)
        var last = DispatchTime.now().uptimeNanoseconds
        func lap(_ phase: CUDAExpertParallelPhase) {
            let now = DispatchTime.now().uptimeNanoseconds
            seconds[phase.rawValue] += Double(now - last) * 1e-9
            last = now
        }
        func copy(to destination: CUdeviceptr, from source: CUdeviceptr, bytes: Int) throws(CUDAError) {
            guard bytes > 0 else { return }
            try runtime.driver.call(
                "cuMemcpyDtoDAsync", runtime.driver.api.cuMemcpyDtoDAsync?(destination, source, bytes, stream.handle))
        }
        func region(_ peer: Int, _ r: CUDAExpertParallelLayout.Region) -> CUdeviceptr {
            peerBaseAddress(peer) + CUdeviceptr(layout.offset(of: r))
        }

        // 1. route
        var untraced = SymmetricLaunchTrace()
        try enqueueLocalRouting(b, mode: mode, trace: &untraced)
        try waitForDevice()
        let slots = b.validTokens * k
        let ids = slots > 0 ? try localIds.download(Int32.self, count: slots) : []
        let weights = slots > 0 ? try localWeights.download(Float.self, count: slots) : []
        lap(.route)

        // 2. metadata: counts per destination, exchanged through the host.
        var lists = [[Int]](repeating: [], count: R)
        for s in 0..<slots { lists[ownerOfExpert[Int(ids[s])]].append(s) }
        let counts = try host.exchangeCounts(lists.map { Int32($0.count) })
        let plan = try AllToAllPlan(
            counts: counts, world: R, rank: rank, sendCapacity: capacity * k, receiveCapacity: R * capacity * k)
        func count(_ source: Int, _ destination: Int) -> Int { Int(counts[source * R + destination]) }
        let nccl = allToAllCommunicator
        if nccl == nil { try requireMappedPeers("the all-to-all baseline over CUDA IPC") }
        moved[1] = Double(R * R * 4)
        remote[1] = Double(R * (R - 1) * 4)
        lap(.metadata)

        // 3. dispatch: pack by destination, copy each block to its receiver, host barrier.
        let packed = lists.flatMap { $0 }
        if !packed.isEmpty {
            try packIndex.uploadAsync(packed.map { Int32($0 / k) }, stream: stream)
            try sendIds.uploadAsync(packed.map { ids[$0] }, stream: stream)
            try sendWeights.uploadAsync(packed.map { weights[$0] }, stream: stream)
            try gatherRowsKernel.launch(
                LaunchShape(grid: (packed.count, 1, 1), block: 128), stream: stream,
                arguments: [.u64(sendRows.address), .u64(x.address), .u64(packIndex.address), .u64(UInt64(H))])
            moved[2] += Double(packed.count * row)
        }
        for block in plan.dispatchSends where block.count > 0 {
            moved[2] += Double(block.count * (row + 8))
            if block.peer != rank { remote[2] += Double(block.count * (row + 8)) }
        }
        if let nccl {
            var transfers: [NCCLTransfer] = []
            for b in plan.dispatchSends where b.count > 0 {
                transfers.append(NCCLTransfer(.send, peer: b.peer, address: sendRows.address + CUdeviceptr(b.offset * row), bytes: b.count * row))
                transfers.append(NCCLTransfer(.send, peer: b.peer, address: sendIds.address + CUdeviceptr(b.offset * 4), bytes: b.count * 4))
                transfers.append(NCCLTransfer(.send, peer: b.peer, address: sendWeights.address + CUdeviceptr(b.offset * 4), bytes: b.count * 4))
            }
            for b in plan.dispatchReceives where b.count > 0 {
                transfers.append(NCCLTransfer(.receive, peer: b.peer, address: region(rank, .allToAllRows) + CUdeviceptr(b.offset * row), bytes: b.count * row))
                transfers.append(NCCLTransfer(.receive, peer: b.peer, address: region(rank, .allToAllIds) + CUdeviceptr(b.offset * 4), bytes: b.count * 4))
                transfers.append(NCCLTransfer(.receive, peer: b.peer, address: region(rank, .allToAllWeights) + CUdeviceptr(b.offset * 4), bytes: b.count * 4))
            }
            // The group's completion on this stream is the synchronisation: every block for this rank has landed.
            try nccl.exchange(transfers, stream: stream, phase: "all-to-all dispatch")
        } else {
            for b in plan.dispatchSends where b.count > 0 {
                // This rank's rows land at the receiver after the rows of lower source ranks.
                let at = (0..<rank).reduce(0) { $0 + count($1, b.peer) }
                try copy(to: region(b.peer, .allToAllRows) + CUdeviceptr(at * row), from: sendRows.address + CUdeviceptr(b.offset * row), bytes: b.count * row)
                try copy(to: region(b.peer, .allToAllIds) + CUdeviceptr(at * 4), from: sendIds.address + CUdeviceptr(b.offset * 4), bytes: b.count * 4)
                try copy(to: region(b.peer, .allToAllWeights) + CUdeviceptr(at * 4), from: sendWeights.address + CUdeviceptr(b.offset * 4), bytes: b.count * 4)
            }
            try waitForDevice()
            try host.hostBarrier(phase: 6)
        }
        lap(.dispatch)

        // 4. experts: order the received rows by expert (stable), tiles of the single-rank variant's rows, each naming
        //    its expert by where this GPU holds its weights.
        let received = plan.receivedRows
        if received > 0 {
            let receivedIds = try heap.download(Int32.self, count: received, offsetBytes: layout.offset(of: .allToAllIds))
            let receivedWeights = try heap.download(Float.self, count: received, offsetBytes: layout.offset(of: .allToAllWeights))
            let (order, tileList) = try Self.receivedRowTiles(
                ids: receivedIds, ownerOfExpert: ownerOfExpert, heldExpertIndex: heldExpertIndex, rank: rank,
                tileRows: b.plan.tileRows, tileWidths: b.plan.tileWidths)
            try permutation.uploadAsync(order, stream: stream)
            try a2aSortedWeights.uploadAsync(order.map { receivedWeights[Int($0)] }, stream: stream)
            try a2aTiles.uploadAsync(tileList, stream: stream)
            try a2aTileCount.uploadAsync([Int32(tileList.count)], stream: stream)
            let rows = region(rank, .allToAllRows)
            try kernels.gemm(b.plan.gemm1Variant).launch(
                gemmShape(b, first: true, tiles: tileList.count), stream: stream,
                parameters: try withTensorMaps(
                    gemmParameters(
                        b, first: true, input: rows, inputIndex: permutation.address, output: intermediate.address, outputIndex: 0,
                        rowWeights: 0, tiles: a2aTiles.address, tileCount: a2aTileCount.address, maxTiles: tileList.count),
                    variant: b.plan.gemm1Variant, inputRows: 0))
            try kernels.gemm(b.plan.gemm2Variant).launch(
                gemmShape(b, first: false, tiles: tileList.count), stream: stream,
                parameters: try withTensorMaps(
                    gemmParameters(
                        b, first: false, input: intermediate.address, inputIndex: 0, output: expertRows.address,
                        outputIndex: permutation.address, rowWeights: a2aSortedWeights.address, tiles: a2aTiles.address,
                        tileCount: a2aTileCount.address, maxTiles: tileList.count),
                    variant: b.plan.gemm2Variant, inputRows: world * capacity * config.topK))
            try waitForDevice()
        }
        lap(.experts)

        // 5. combine: each source's block back to it, at its send offset for this rank; barrier; unpack.
        for b in plan.combineSends where b.count > 0 {
            moved[4] += Double(b.count * row)
            if b.peer != rank { remote[4] += Double(b.count * row) }
        }
        if let nccl {
            var transfers: [NCCLTransfer] = []
            for b in plan.combineSends where b.count > 0 {
                transfers.append(NCCLTransfer(.send, peer: b.peer, address: expertRows.address + CUdeviceptr(b.offset * row), bytes: b.count * row))
            }
            for b in plan.combineReceives where b.count > 0 {
                transfers.append(NCCLTransfer(.receive, peer: b.peer, address: region(rank, .allToAllReturn) + CUdeviceptr(b.offset * row), bytes: b.count * row))
            }
            try nccl.exchange(transfers, stream: stream, phase: "all-to-all combine")
        } else {
            for b in plan.combineSends where b.count > 0 {
                // Lands at the source where it packed its rows for this rank.
                let to = (0..<rank).reduce(0) { $0 + count(b.peer, $1) }
                try copy(to: region(b.peer, .allToAllReturn) + CUdeviceptr(to * row), from: expertRows.address + CUdeviceptr(b.offset * row), bytes: b.count * row)
            }
            try waitForDevice()
            try host.hostBarrier(phase: 7)
        }
        if !packed.isEmpty {
            try unpackIndex.uploadAsync(packed.map { Int32($0) }, stream: stream)
            try scatterRowsKernel.launch(
                LaunchShape(grid: (packed.count, 1, 1), block: 128), stream: stream,
                arguments: [.u64(a2aCombine.address), .u64(region(rank, .allToAllReturn)), .u64(unpackIndex.address), .u64(UInt64(H))])
            moved[4] += Double(packed.count * row)
        }
        lap(.combine)

        // 6. reduce (every valid slot is routed: the marks are zeros).
        try kernels.reduce.launch(
            reduceShape(b), stream: stream, parameters: reduceParameters(b, combine: a2aCombine.address, marks: routedMarks.address))
        try waitForDevice()
        lap(.reduce)
        let hidden = try downloadOutput(b)
        return CUDAExpertParallelResult(hidden: hidden, phaseSeconds: seconds, bytesMoved: moved, bytesRemote: remote, layerSeconds: nil)
    }
}

extension CUDAExpertParallelLayer {
    /// The received rows of the all-to-all baseline in expert order (stable: `order[i]` is the received row at sorted
    /// position i) and their tiles of at most `tileRows` rows (RoutingPlan.tileSizes, fitted to `tileWidths`), each
    /// naming its expert by where this GPU holds it.
    static func receivedRowTiles(
        ids: [Int32], ownerOfExpert: [Int], heldExpertIndex: [Int], rank: Int, tileRows: Int, tileWidths: [Int] = []
    ) throws(CUDAError) -> (order: [Int32], tiles: [MoETile]) {
        var byExpert = [[Int32]](repeating: [], count: ownerOfExpert.count)
        for (i, id) in ids.enumerated() {
            guard id >= 0, Int(id) < ownerOfExpert.count, ownerOfExpert[Int(id)] == rank else {
                throw CUDAError.invalidArgument("rank \(rank) received a row for expert \(id), which it does not own")
            }
            byExpert[Int(id)].append(Int32(i))
        }
        var order: [Int32] = []
        var tiles: [MoETile] = []
        for (expert, rows) in byExpert.enumerated() where !rows.isEmpty {
            var start = order.count
            for count in RoutingPlan.tileSizes(rows: rows.count, tileRows: tileRows, widths: tileWidths) {
                tiles.append(MoETile(
                    expert: Int32(heldExpertIndex[expert]), rowStart: Int32(start), rowCount: Int32(count), reserved: 0))
                start += count
            }
            order += rows
        }
        return (order, tiles)
    }
}
