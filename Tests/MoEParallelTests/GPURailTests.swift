import CCUDA
import CMoEEPHost
import MoECore
import Testing

@testable import MoECUDA
@testable import MoEParallel

/// The symmetric layer's data movement, one node and across nodes, with moe_ep.cu's own phase blocks
/// (Kernels/moe_ep_node.cuh, compiled for the host by CMoEEPHost) over every rank's heap in host memory, and the
/// rail's NCCL groups as copies driven by `RailTransfers` itself (a rank's sends to rail peer m matched in order with
/// that peer's receives from this rank's node, as NCCL matches them). The plan and the GEMMs are host stand-ins: a
/// stable sort by expert, and a byte transform of each dispatched row. It checks what the kernels and the transfer
/// lists do together: every rank sees the global routing, every routed row lands at its owner's global sorted
/// position, and every expert row comes home to its (token, slot). On a GPU: scripts/gpu/ep-check.sh, steps
/// `check` and `nodes`.
final class RailModel {
    let grid: NodeGrid
    let layout: CUDAExpertParallelLayout
    let perRank: Int, capacity: Int, topK: Int, experts: Int
    let hidden = 64, row = 128
    let owner: [Int]
    /// The global routing: [R·T_loc·k] ids (−1: padding), and each rank's real tokens.
    let ids: [Int32]
    let valid: [Int]
    private var allocations: [UnsafeMutableRawPointer] = []
    private(set) var heaps: [UnsafeMutableRawPointer] = []
    private(set) var tokens: [UnsafeMutableRawPointer] = []
    private var parameters: [CUDAExpertParallelParams] = []
    private var maxTiles = 0

    init(nodes: Int, ranksPerNode: Int, perRank: Int, capacity: Int, topK: Int, experts: Int, validTokens: Int, owner: [Int], seed: UInt64) throws {
        let world = nodes * ranksPerNode
        grid = try NodeGrid(world: world, nodes: nodes)
        layout = try CUDAExpertParallelLayout(ranks: world, capacity: capacity, topK: topK, hidden: 64, nodes: nodes)
        (self.perRank, self.capacity, self.topK, self.experts) = (perRank, capacity, topK, experts)
        self.owner = owner
        var state = seed
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        var ids: [Int32] = []
        for rank in 0..<world {
            for t in 0..<perRank {
                var chosen: [Int32] = []
                while chosen.count < topK {
                    let e = Int32(next() % UInt64(experts))
                    if !chosen.contains(e) { chosen.append(e) }
                }
                // Real tokens are a prefix of the batch, the last ranks padded (as CUDAExpertParallelLayer.share).
                ids += rank * perRank + t < validTokens ? chosen : Array(repeating: -1, count: topK)
            }
        }
        self.ids = ids
        valid = (0..<world).map { max(0, min(perRank, validTokens - $0 * perRank)) }
        try build(next)
    }

    deinit { for pointer in allocations { pointer.deallocate() } }

    var slots: Int { perRank * topK }
    var world: Int { grid.world }

    private func allocate(_ bytes: Int, fill: UInt8 = 0) -> UnsafeMutableRawPointer {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 16), alignment: 256)
        pointer.initializeMemory(as: UInt8.self, repeating: fill, count: max(bytes, 16))
        allocations.append(pointer)
        return pointer
    }

    private func address(_ pointer: UnsafeRawPointer) -> UInt64 { UInt64(UInt(bitPattern: pointer)) }

    /// Heaps, token rows, the plan and each rank's parameters, as the layer sets them up.
    private func build(_ next: () -> UInt64) throws {
        let (R, S) = (world, slots)
        heaps = (0..<R).map { _ in allocate(layout.totalBytes, fill: 0xEE) }
        tokens = (0..<R).map { _ in allocate(capacity * row) }
        for rank in 0..<R {
            let bytes = tokens[rank].assumingMemoryBound(to: UInt8.self)
            for b in 0..<(capacity * row) { bytes[b] = UInt8(truncatingIfNeeded: next()) }
        }
        let owners = allocate(experts * 4).assumingMemoryBound(to: Int32.self)
        for e in 0..<experts { owners[e] = Int32(owner[e]) }
        let (toSorted, toSlot) = (allocate(R * S * 4).assumingMemoryBound(to: Int32.self), allocate(R * S * 4).assumingMemoryBound(to: Int32.self))
        for (slot, position) in slotToSorted.enumerated() {
            toSorted[slot] = Int32(position)
            if position >= 0 { toSlot[position] = Int32(slot) }
        }
        for rank in 0..<R {
            let localIds = allocate(S * 4).assumingMemoryBound(to: Int32.self)
            for s in 0..<S { localIds[s] = ids[rank * S + s] }
            let peers = allocate(R * 8).assumingMemoryBound(to: UInt64.self)
            for q in 0..<R { peers[q] = grid.nodeRanks(of: rank).contains(q) ? address(heaps[q]) : 0 }
            // This rank's experts' tiles of ≤ 8 rows, in sorted order (what moe_ep_local_tiles keeps).
            var tiles: [MoETile] = []
            var start = 0
            for e in 0..<experts {
                let count = ids.filter { $0 == Int32(e) }.count
                var at = 0
                while owner[e] == rank && at < count {
                    let n = min(8, count - at)
                    tiles.append(MoETile(expert: Int32(e), rowStart: Int32(start + at), rowCount: Int32(n), reserved: 0))
                    at += n
                }
                start += count
            }
            maxTiles = max(maxTiles, tiles.count)
            let localTiles = allocate(max(1, tiles.count) * MemoryLayout<MoETile>.stride).assumingMemoryBound(to: MoETile.self)
            for (i, tile) in tiles.enumerated() { localTiles[i] = tile }
            let localTileCount = allocate(4).assumingMemoryBound(to: Int32.self)
            localTileCount.pointee = Int32(tiles.count)
            var p = CUDAExpertParallelParams()
            p.peerHeaps = address(peers)
            p.ownHeap = address(heaps[rank])
            p.setRegionOffsets(layout)
            p.ownerOfExpert = address(owners)
            p.x = address(tokens[rank])
            p.localIds = address(localIds)
            p.localWeights = address(allocate(S * 4))
            p.slotToSorted = address(toSorted)
            p.sortedToSlot = address(toSlot)
            p.localTiles = address(localTiles)
            p.localTileCount = address(localTileCount)
            p.expertRows = address(allocate(R * S * row))
            (p.rank, p.world, p.tokensPerRank, p.validTokens) = (Int64(rank), Int64(R), Int64(perRank), Int64(valid[rank]))
            (p.topK, p.hidden, p.experts) = (Int64(topK), Int64(hidden), Int64(experts))
            (p.nodeRanks, p.nodes) = (Int64(grid.ranksPerNode), Int64(grid.nodes))
            parameters.append(p)
        }
    }

    /// The global plan: slots sorted by expert, slot order within an expert (what moe_routing.cu computes).
    var slotToSorted: [Int] {
        var positions = [Int](repeating: -1, count: ids.count)
        var next = 0
        for e in 0..<experts {
            for (slot, id) in ids.enumerated() where id == Int32(e) {
                positions[slot] = next
                next += 1
            }
        }
        return positions
    }

    func run(_ phase: MoEEPHostPhase, rank: Int, grid gridX: Int, _ gridY: Int = 1, block: Int) {
        withUnsafePointer(to: parameters[rank]) { moe_ep_host_run(Int32(phase.rawValue), $0, Int32(gridX), Int32(gridY), Int32(block)) }
    }

    /// One NCCL group on every rail: each rank's transfer list, sends matched in order with the peer's receives.
    func exchange(_ lists: [[NCCLTransfer]]) {
        var copies: [(to: UInt64, from: UInt64, bytes: Int)] = []
        for a in 0..<world {
            for m in grid.otherNodes(of: a) {
                let b = grid.railPeer(of: a, onNode: m)
                let sends = lists[a].filter { $0.direction == .send && $0.peer == m }
                let receives = lists[b].filter { $0.direction == .receive && $0.peer == grid.node(of: a) }
                #expect(sends.map(\.bytes) == receives.map(\.bytes), "rank \(a) → rank \(b): sizes must match in order")
                for (send, receive) in zip(sends, receives) { copies.append((receive.address, send.address, send.bytes)) }
            }
        }
        // Every send reads what was there before the group (NCCL's receives land after its sends read).
        let staged = copies.map { Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt($0.from)), count: $0.bytes)) }
        for (copy, bytes) in zip(copies, staged) {
            bytes.withUnsafeBytes { UnsafeMutableRawPointer(bitPattern: UInt(copy.to))!.copyMemory(from: $0.baseAddress!, byteCount: copy.bytes) }
        }
    }

    func transfers(_ rank: Int) -> RailTransfers {
        RailTransfers(
            layout: layout, grid: grid, rank: rank, tokensPerRank: perRank, heap: address(heaps[rank]), tokens: address(tokens[rank]))
    }

    func bytes(_ pointer: UnsafeRawPointer, _ offset: Int, _ count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer + offset, count: count))
    }

    static func expertRow(_ input: [UInt8]) -> [UInt8] { input.reversed().map { $0 &+ 1 } }

    /// Runs the layer's data movement with the kernels' blocks; returns (routing seen by every rank, dispatch
    /// correct, combine correct).
    func runLayer() -> (routing: Bool, dispatch: Bool, combine: Bool) {
        let (R, S, k, N) = (world, slots, topK, grid.nodes)
        let plan = slotToSorted
        // 1. publish into the node's routing regions; the rail exchange; forward the rail's rows.
        for r in 0..<R { run(MOE_EP_HOST_PUBLISH, rank: r, grid: (S + 255) / 256, block: 256) }
        exchange((0..<R).map { transfers($0).route })
        if N > 1 { for r in 0..<R { run(MOE_EP_HOST_FORWARD_ROUTING, rank: r, grid: (S + 255) / 256, N, block: 256) } }
        let routing = (0..<R).allSatisfy { r in
            let region = (heaps[r] + layout.offset(of: .routingIds)).assumingMemoryBound(to: Int32.self)
            return (0..<(R * S)).allSatisfy { region[$0] == ids[$0] }
        }
        // 3. dispatch (own slots owned on this node) and dispatch_forward (the rail peers' slots owned here).
        for r in 0..<R {
            run(MOE_EP_HOST_DISPATCH, rank: r, grid: S, block: 128)
            if N > 1 { run(MOE_EP_HOST_DISPATCH_FORWARD, rank: r, grid: S, N, block: 128) }
        }
        var dispatch = true
        for (slot, id) in ids.enumerated() where id >= 0 {
            let (home, t) = (slot / S, slot % S / k)
            dispatch = dispatch
                && bytes(heaps[owner[Int(id)]], layout.offset(of: .dispatch) + plan[slot] * row, row) == bytes(tokens[home], t * row, row)
        }
        // 4. the GEMMs' stand-in: each owner's rows, transformed, at their sorted positions.
        for (slot, id) in ids.enumerated() where id >= 0 {
            let o = owner[Int(id)]
            let value = Self.expertRow(bytes(heaps[o], layout.offset(of: .dispatch) + plan[slot] * row, row))
            let rows = UnsafeMutableRawPointer(bitPattern: UInt(parameters[o].expertRows))!
            value.withUnsafeBytes { (rows + plan[slot] * row).copyMemory(from: $0.baseAddress!, byteCount: row) }
        }
        // 5. combine: each expert row to its home, or to the home's rail forwarder on this node; the rail; collect.
        for r in 0..<R { run(MOE_EP_HOST_COMBINE, rank: r, grid: maxTiles, block: 128) }
        exchange((0..<R).map { transfers($0).combine })
        if N > 1 { for r in 0..<R { run(MOE_EP_HOST_COMBINE_COLLECT, rank: r, grid: S, block: 128) } }
        var combine = true
        for (slot, id) in ids.enumerated() where id >= 0 {
            let (home, s) = (slot / S, slot % S)
            let expected = Self.expertRow(bytes(tokens[home], s / k * row, row))
            combine = combine && bytes(heaps[home], layout.offset(of: .combine) + s * row, row) == expected
        }
        return (routing, dispatch, combine)
    }
}

@Test func theHostBuildOfTheKernelParametersHasTheSwiftLayout() {
    #expect(Int(moe_ep_host_params_bytes()) == MemoryLayout<CUDAExpertParallelParams>.size)
    // The fused plan-and-tiles kernel's parameters: Swift's struct of the two lays them out where C does.
    #expect(Int(moe_ep_host_plan_params_ep_offset()) == MemoryLayout<CUDAExpertParallelPlanParams>.offset(of: \.ep))
    #expect(Int(moe_ep_host_plan_params_bytes()) == MemoryLayout<CUDAExpertParallelPlanParams>.size)
}

@Test func railsDeliverTheGlobalRoutingEveryRowAndEveryExpertRow() throws {
    for (nodes, ranksPerNode) in [(1, 3), (2, 1), (2, 2), (3, 1), (3, 2), (4, 1), (2, 3)] {
        try railCase(nodes: nodes, ranksPerNode: ranksPerNode)
    }
}

func railCase(nodes: Int, ranksPerNode: Int) throws {
    let world = nodes * ranksPerNode
    let experts = 8
    for (perRank, topK, mapSeed) in [(1, 2, 0), (3, 4, 1), (5, 4, 2)] {
        let maps: [[Int]] = [
            (0..<experts).map { $0 * world / experts },  // contiguous
            (0..<experts).map { ($0 * 5 + mapSeed) % world },  // scattered
            Array(repeating: world - 1, count: experts),  // every expert on the last rank (other nodes get nothing)
        ]
        for (index, owner) in maps.enumerated() {
            let valid = world * perRank - (perRank > 1 ? perRank + 1 : 0)  // padding on the last ranks
            let model = try RailModel(
                nodes: nodes, ranksPerNode: ranksPerNode, perRank: perRank, capacity: perRank + 2, topK: topK,
                experts: experts, validTokens: max(1, valid), owner: owner, seed: UInt64(100 * world + 10 * perRank + index))
            let result = model.runLayer()
            let label = "N=\(nodes) L=\(ranksPerNode) T_loc=\(perRank) k=\(topK) map \(index)"
            #expect(result.routing, "every rank sees the global routing: \(label)")
            #expect(result.dispatch, "every row at its owner's sorted position: \(label)")
            #expect(result.combine, "every expert row at its home's (token, slot): \(label)")
        }
    }
}

extension RailTransfers {
    /// Bytes this rank sends per layer (route, combine): what crosses nodes.
    var sentBytes: (route: Int, combine: Int) {
        func sent(_ list: [NCCLTransfer]) -> Int { list.filter { $0.direction == .send }.reduce(0) { $0 + $1.bytes } }
        return (sent(route), sent(combine))
    }
}

@Test func railTransfersSendOnlyAcrossNodesAtStaticSizes() throws {
    let layout = try CUDAExpertParallelLayout(ranks: 6, capacity: 9, topK: 4, hidden: 64, nodes: 3)
    let grid = try NodeGrid(world: 6, nodes: 3)
    for rank in 0..<6 {
        let t = RailTransfers(layout: layout, grid: grid, rank: rank, tokensPerRank: 7, heap: 1 << 40, tokens: 1 << 39)
        #expect(Set(t.route.map(\.peer)) == Set(grid.otherNodes(of: rank)))
        #expect(t.route.count == 6 * 2 && t.combine.count == 2 * 2)
        // Route: top-k (ids + weights) and the T_loc token rows to each of the 2 other nodes; combine: T_loc·k rows.
        #expect(t.sentBytes.route == 2 * (2 * 7 * 4 * 4 + 7 * 128))
        #expect(t.sentBytes.combine == 2 * 7 * 4 * 128)
        // Receives stay inside their regions and never overlap.
        let receives = (t.route + t.combine).filter { $0.direction == .receive }
            .map { (Int($0.address - (1 << 40)), $0.bytes) }.sorted { $0.0 < $1.0 }
        for (a, b) in zip(receives, receives.dropFirst()) { #expect(a.0 + a.1 <= b.0) }
        #expect(receives.allSatisfy { $0.0 + $0.1 <= layout.totalBytes })
    }
    // One node: no rail traffic.
    let single = try CUDAExpertParallelLayout(ranks: 2, capacity: 4, topK: 4, hidden: 64)
    let alone = RailTransfers(layout: single, grid: try NodeGrid(world: 2, nodes: 1), rank: 1, tokensPerRank: 4, heap: 0, tokens: 0)
    #expect(alone.route.isEmpty && alone.combine.isEmpty)
}

@Test func nodeGridsSplitRanksEvenlyAndNameRails() throws {
    let grid = try NodeGrid(world: 8, nodes: 2)
    #expect(grid.ranksPerNode == 4)
    #expect(grid.node(of: 5) == 1 && grid.local(of: 5) == 1)
    #expect(grid.nodeRanks(of: 6) == 4..<8)
    #expect(grid.railPeer(of: 6, onNode: 0) == 2)
    #expect(grid.otherNodes(of: 1) == [1])
    #expect(throws: CUDAError.self) { try NodeGrid(world: 6, nodes: 4) }
    #expect(throws: CUDAError.self) { try CUDAExpertParallelLayout(ranks: 6, capacity: 4, topK: 4, hidden: 64, nodes: 4) }
}

/// On one node the rail regions are empty and every other region sits where it did before nodes existed.
@Test func railRegionsAreEmptyOnOneNodeAndSizedAcrossNodes() throws {
    let one = try CUDAExpertParallelLayout(ranks: 4, capacity: 33, topK: 4, hidden: 2880)
    for region in [CUDAExpertParallelLayout.Region.railTokens, .railCombineOut, .railCombineIn] {
        #expect(one.byteCount(of: region) == 0)
    }
    let two = try CUDAExpertParallelLayout(ranks: 4, capacity: 33, topK: 4, hidden: 2880, nodes: 2)
    for region in CUDAExpertParallelLayout.Region.allCases where region.rawValue < CUDAExpertParallelLayout.Region.railTokens.rawValue {
        #expect(one.offset(of: region) == two.offset(of: region) && one.byteCount(of: region) == two.byteCount(of: region))
    }
    #expect(two.byteCount(of: .railTokens) == 2 * 33 * 2880 * 2)
    #expect(two.byteCount(of: .railCombineOut) == 2 * 33 * 4 * 2880 * 2)
    #expect(two.byteCount(of: .railCombineIn) == two.byteCount(of: .railCombineOut))
}

@Test func thePeerCopyCeilingSaysWhatWasCopiedAndReadsPhaseBandwidth() {
    let peers = PeerCopyCeiling(bytes: 64 << 20, perRankGBps: [[310, 290, 305, 300], [350, 340, 345, 330]], targets: [1, 0, 3, 2])
    #expect(!peers.isLocal)
    // The faster engine (SM stores here) is the ceiling; its slowest rank is reported.
    #expect(peers.medianGBps >= 340 && peers.medianGBps <= 345)
    #expect(peers.minimumGBps == 330)
    #expect(peers.description.contains("64.0 MiB") && peers.description.contains("CUDA IPC mapping"))
    #expect(peers.description.contains("cuMemcpyDtoDAsync") && peers.description.contains("SM stores"))
    let alone = PeerCopyCeiling(bytes: 1 << 20, perRankGBps: [[1500, 1400], [1200, 1300]], targets: [0, 1])
    #expect(alone.isLocal && alone.description.contains("device-local"))
    #expect(alone.minimumGBps == 1400)
    // 4 ranks moved 8 GB in all during a 10 ms phase: 200 GB/s each.
    #expect(abs(PeerCopyCeiling.perRankGBps(remoteBytes: 8e9, ranks: 4, microseconds: 10_000) - 200) < 1e-9)
    #expect(PeerCopyCeiling.perRankGBps(remoteBytes: 1, ranks: 0, microseconds: 1) == 0)
}

@Test func theSymmetricPathAcrossNodesNeedsNCCLOnEveryRankAndSaysWhichLacksIt() {
    func placements(_ loaded: [Bool], nodes: Int) -> [GPUPlacement] {
        loaded.enumerated().map {
            GPUPlacement(rank: $0.offset, node: $0.offset * nodes / loaded.count, host: 1, deviceOrdinal: 0, ncclLoaded: $0.element)
        }
    }
    let one = RankEnvironment(jobID: "j", rank: 0, world: 2)
    #expect(GPUExpertParallelRunner.symmetricRefusal(environment: one, placements: placements([false, false], nodes: 1), loadFailure: "x") == nil)
    let two = RankEnvironment(jobID: "j", rank: 0, world: 4, localRank: 0, localWorld: 2, nodeRank: 0, nodes: 2, master: "h:1")
    #expect(GPUExpertParallelRunner.symmetricRefusal(environment: two, placements: placements([true, true, true, true], nodes: 2), loadFailure: nil) == nil)
    let refusal = GPUExpertParallelRunner.symmetricRefusal(
        environment: two, placements: placements([true, false, true, false], nodes: 2), loadFailure: "dlopen failed")
    #expect(refusal?.contains("ranks 1, 3") == true, "\(refusal ?? "nil")")
    #expect(refusal?.contains("MOE_CUDA_LIBRARY_PATH") == true && refusal?.contains("dlopen failed") == true)
}
