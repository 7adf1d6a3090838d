import MoECore
import Testing

@testable import MoECUDA
@testable import MoEParallel

/// The symmetric path across nodes (moe_ep.cu with N > 1): every rank's heap as host bytes, each kernel as the
/// loop it runs, and the rail's NCCL groups as byte copies driven by `RailTransfers` itself (a rank's sends to
/// rail peer m matched in order with that peer's receives from this rank's node, as NCCL matches them). It
/// checks the index arithmetic the kernels and the transfer lists share: every rank sees the global routing,
/// every routed row lands at its owner's global sorted position, and every expert row comes home to its
/// (token, slot). The kernels themselves run on a GPU (scripts/gpu/ep-check.sh, step `nodes`).
struct RailModel {
    let grid: NodeGrid
    let layout: CUDAExpertParallelLayout
    let perRank: Int, topK: Int, experts: Int, row: Int
    let owner: [Int]
    var heaps: [[UInt8]]
    var tokens: [[UInt8]]
    /// The global routing: [R·T_loc·k] ids (−1: padding).
    let ids: [Int32]

    static func heapBase(_ rank: Int) -> UInt64 { UInt64(rank + 1) << 40 }
    static func tokensBase(_ rank: Int) -> UInt64 { heapBase(rank) | (1 << 39) }

    init(nodes: Int, ranksPerNode: Int, perRank: Int, capacity: Int, topK: Int, experts: Int, valid: Int, owner: [Int], seed: UInt64) throws {
        let world = nodes * ranksPerNode
        grid = try NodeGrid(world: world, nodes: nodes)
        layout = try CUDAExpertParallelLayout(ranks: world, capacity: capacity, topK: topK, hidden: 8, nodes: nodes)
        (self.perRank, self.topK, self.experts, row) = (perRank, topK, experts, 16)
        self.owner = owner
        heaps = Array(repeating: [UInt8](repeating: 0xEE, count: layout.totalBytes), count: world)
        tokens = Array(repeating: [UInt8](repeating: 0, count: capacity * 16), count: world)
        var state = seed
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        var ids: [Int32] = []
        for rank in 0..<world {
            for t in 0..<perRank {
                // Valid tokens: a prefix of the batch, the last ranks padded (as CUDAExpertParallelLayer.share).
                let isValid = rank * perRank + t < valid
                var chosen: [Int32] = []
                while chosen.count < topK {
                    let e = Int32(next() % UInt64(experts))
                    if !chosen.contains(e) { chosen.append(e) }
                }
                ids += isValid ? chosen : Array(repeating: -1, count: topK)
                for b in 0..<16 { tokens[rank][t * 16 + b] = UInt8(truncatingIfNeeded: rank &* 31 &+ t &* 7 &+ b &* 13 &+ Int(next() % 3)) }
            }
        }
        self.ids = ids
    }

    var slots: Int { perRank * topK }
    var world: Int { grid.world }

    func offset(_ region: CUDAExpertParallelLayout.Region) -> Int { layout.offset(of: region) }

    mutating func copy(to rank: Int, at: Int, from bytes: ArraySlice<UInt8>) {
        heaps[rank].replaceSubrange(at..<(at + bytes.count), with: bytes)
    }

    func read(_ rank: Int, _ at: Int, _ count: Int) -> ArraySlice<UInt8> { heaps[rank][at..<(at + count)] }

    func id(in rank: Int, at slot: Int) -> Int32 {
        heaps[rank].withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset(.routingIds) + slot * 4, as: Int32.self) }
    }

    /// The bytes at a device address of the model (a heap or a token buffer).
    func bytes(at address: UInt64, count: Int) -> ArraySlice<UInt8> {
        let rank = Int(address >> 40) - 1
        if address & (1 << 39) != 0 {
            let at = Int(address - Self.tokensBase(rank))
            return tokens[rank][at..<(at + count)]
        }
        return read(rank, Int(address - Self.heapBase(rank)), count)
    }

    /// One NCCL group on every rail: each rank's transfer list, sends matched in order with the peer's receives.
    mutating func exchange(_ lists: [[NCCLTransfer]]) {
        let list = { (rank: Int) in lists[rank] }
        var received: [(rank: Int, at: Int, bytes: ArraySlice<UInt8>)] = []
        for a in 0..<world {
            for m in grid.otherNodes(of: a) {
                let b = grid.railPeer(of: a, onNode: m)
                let sends = list(a).filter { $0.direction == .send && $0.peer == m }
                let receives = list(b).filter { $0.direction == .receive && $0.peer == grid.node(of: a) }
                #expect(sends.map(\.bytes) == receives.map(\.bytes), "rank \(a) → rank \(b): sizes must match in order")
                for (send, receive) in zip(sends, receives) {
                    #expect(receive.address >> 40 == UInt64(b + 1) && receive.address & (1 << 39) == 0)
                    received.append((b, Int(receive.address - Self.heapBase(b)), bytes(at: send.address, count: send.bytes)))
                }
            }
        }
        for r in received { copy(to: r.rank, at: r.at, from: r.bytes) }
    }

    func transfers(_ rank: Int) -> RailTransfers {
        RailTransfers(
            layout: layout, grid: grid, rank: rank, tokensPerRank: perRank, heap: Self.heapBase(rank), tokens: Self.tokensBase(rank))
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

    static func expertRow(_ input: ArraySlice<UInt8>) -> [UInt8] { input.reversed().map { $0 &+ 1 } }

    /// Runs the layer's data movement; returns (routing seen by every rank, dispatch correct, combine correct).
    mutating func run() -> (routing: Bool, dispatch: Bool, combine: Bool) {
        let (k, S) = (topK, slots)
        let plan = slotToSorted
        // 1. publish into the node's routing regions; the rail exchange; forward the rail's rows.
        for r in 0..<world {
            for q in grid.nodeRanks(of: r) {
                for s in 0..<S {
                    var id = ids[r * S + s]
                    copy(to: q, at: offset(.routingIds) + (r * S + s) * 4, from: withUnsafeBytes(of: &id) { Array($0) }[...])
                }
            }
        }
        exchange((0..<world).map { transfers($0).route })
        for r in 0..<world {
            for m in grid.otherNodes(of: r) {
                let source = grid.railPeer(of: r, onNode: m)
                let rows = read(r, offset(.routingIds) + source * S * 4, S * 4)
                for q in grid.nodeRanks(of: r) where q != r { copy(to: q, at: offset(.routingIds) + source * S * 4, from: rows) }
            }
        }
        let routing = (0..<world).allSatisfy { r in (0..<(world * S)).allSatisfy { id(in: r, at: $0) == ids[$0] } }
        // 3. dispatch (own slots owned on this node) and dispatch_forward (the rail peers' slots owned here).
        for r in 0..<world {
            for s in 0..<S where ids[r * S + s] >= 0 && grid.node(of: owner[Int(ids[r * S + s])]) == grid.node(of: r) {
                let o = owner[Int(ids[r * S + s])]
                copy(to: o, at: offset(.dispatch) + plan[r * S + s] * row, from: tokens[r][(s / k * row)..<(s / k * row + row)])
            }
            for m in grid.otherNodes(of: r) {
                let source = grid.railPeer(of: r, onNode: m)
                for s in 0..<S {
                    let id = id(in: r, at: source * S + s)
                    guard id >= 0, grid.node(of: owner[Int(id)]) == grid.node(of: r) else { continue }
                    let from = offset(.railTokens) + (m * perRank + s / k) * row
                    copy(to: owner[Int(id)], at: offset(.dispatch) + plan[source * S + s] * row, from: read(r, from, row))
                }
            }
        }
        var dispatch = true
        for (slot, id) in ids.enumerated() where id >= 0 {
            let (home, t) = (slot / S, slot % S / k)
            dispatch = dispatch && read(owner[Int(id)], offset(.dispatch) + plan[slot] * row, row) == tokens[home][(t * row)..<(t * row + row)]
        }
        // 5. combine: each expert row to its home, or to the home's rail forwarder on this node; the rail; collect.
        for (slot, id) in ids.enumerated() where id >= 0 {
            let o = owner[Int(id)]
            let (home, local) = (slot / S, slot % S)
            let value = Self.expertRow(read(o, offset(.dispatch) + plan[slot] * row, row))
            if grid.node(of: home) == grid.node(of: o) {
                copy(to: home, at: offset(.combine) + local * row, from: value[...])
            } else {
                let forwarder = grid.railPeer(of: home, onNode: grid.node(of: o))
                copy(to: forwarder, at: offset(.railCombineOut) + (grid.node(of: home) * S + local) * row, from: value[...])
            }
        }
        exchange((0..<world).map { transfers($0).combine })
        for r in 0..<world {
            for s in 0..<S where ids[r * S + s] >= 0 {
                let node = grid.node(of: owner[Int(ids[r * S + s])])
                guard node != grid.node(of: r) else { continue }
                copy(to: r, at: offset(.combine) + s * row, from: read(r, offset(.railCombineIn) + (node * S + s) * row, row))
            }
        }
        var combine = true
        for (slot, id) in ids.enumerated() where id >= 0 {
            let (home, s) = (slot / S, slot % S)
            let expected = Self.expertRow(tokens[home][(s / k * row)..<(s / k * row + row)])
            combine = combine && Array(read(home, offset(.combine) + s * row, row)) == expected
        }
        return (routing, dispatch, combine)
    }
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
            var model = try RailModel(
                nodes: nodes, ranksPerNode: ranksPerNode, perRank: perRank, capacity: perRank + 2, topK: topK,
                experts: experts, valid: max(1, valid), owner: owner, seed: UInt64(100 * world + 10 * perRank + index))
            let result = model.run()
            let label = "N=\(nodes) L=\(ranksPerNode) T_loc=\(perRank) k=\(topK) map \(index)"
            #expect(result.routing, "every rank sees the global routing: \(label)")
            #expect(result.dispatch, "every row at its owner's sorted position: \(label)")
            #expect(result.combine, "every expert row at its home's (token, slot): \(label)")
        }
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
