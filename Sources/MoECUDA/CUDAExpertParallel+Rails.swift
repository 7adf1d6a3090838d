import CCUDA

/// Where the ranks of a job sit: N nodes of L ranks each, rank = node·L + local. CUDA IPC (and so the symmetric
/// heap's one-sided stores and device barriers) reaches the L ranks of a node; the ranks with one local index, one
/// per node, form a RAIL, an NCCL communicator of N ranks that carries everything crossing nodes.
public struct NodeGrid: Sendable, Equatable {
    public let nodes: Int
    public let ranksPerNode: Int
    public var world: Int { nodes * ranksPerNode }

    public init(world: Int, nodes: Int) throws(CUDAError) {
        guard world >= 1, nodes >= 1, world % nodes == 0 else {
            throw .invalidArgument("\(world) ranks do not split evenly over \(nodes) nodes (every node needs the same number of ranks)")
        }
        self.nodes = nodes
        ranksPerNode = world / nodes
    }

    public func node(of rank: Int) -> Int { rank / ranksPerNode }
    public func local(of rank: Int) -> Int { rank % ranksPerNode }
    /// The ranks `rank` reaches through CUDA IPC (its own included).
    public func nodeRanks(of rank: Int) -> Range<Int> {
        let first = node(of: rank) * ranksPerNode
        return first..<(first + ranksPerNode)
    }
    /// `rank`'s rail peer on `node`: the rank with the same local index there.
    public func railPeer(of rank: Int, onNode node: Int) -> Int { node * ranksPerNode + local(of: rank) }
    /// The nodes other than `rank`'s, in order: the rail peers' indices in the rail communicator.
    public func otherNodes(of rank: Int) -> [Int] { (0..<nodes).filter { $0 != node(of: rank) } }
}

/// The NCCL transfers of one symmetric layer on a rail, at static sizes (the graph replays them as captured).
/// Peers are rail-communicator ranks (= node indices). Addresses are this rank's heap base plus the layout's
/// offsets, and `tokens`, this rank's [T_cap, H] input rows.
public struct RailTransfers: Sendable, Equatable {
    /// Route step: this rank's top-k rows (ids, weights) and its T_loc token rows to every rail peer; theirs into
    /// this rank's routing rows of the peer and into railTokens[peer node].
    public var route: [NCCLTransfer]
    /// Combine step: railCombineOut[m] (rows computed on this node for the rail peer on node m) to that peer;
    /// railCombineIn[m] from it.
    public var combine: [NCCLTransfer]

    public init(layout: CUDAExpertParallelLayout, grid: NodeGrid, rank: Int, tokensPerRank: Int, heap: CUdeviceptr, tokens: CUdeviceptr) {
        let slots = tokensPerRank * layout.topK
        let row = layout.hidden * 2
        func at(_ region: CUDAExpertParallelLayout.Region, _ byteOffset: Int) -> CUdeviceptr {
            heap + CUdeviceptr(layout.offset(of: region) + byteOffset)
        }
        route = []
        combine = []
        for node in grid.otherNodes(of: rank) {
            let source = grid.railPeer(of: rank, onNode: node)
            route += [
                NCCLTransfer(.send, peer: node, address: at(.routingIds, rank * slots * 4), bytes: slots * 4),
                NCCLTransfer(.send, peer: node, address: at(.routingWeights, rank * slots * 4), bytes: slots * 4),
                NCCLTransfer(.send, peer: node, address: tokens, bytes: tokensPerRank * row),
                NCCLTransfer(.receive, peer: node, address: at(.routingIds, source * slots * 4), bytes: slots * 4),
                NCCLTransfer(.receive, peer: node, address: at(.routingWeights, source * slots * 4), bytes: slots * 4),
                NCCLTransfer(.receive, peer: node, address: at(.railTokens, node * tokensPerRank * row), bytes: tokensPerRank * row),
            ]
            combine += [
                NCCLTransfer(.send, peer: node, address: at(.railCombineOut, node * slots * row), bytes: slots * row),
                NCCLTransfer(.receive, peer: node, address: at(.railCombineIn, node * slots * row), bytes: slots * row),
            ]
        }
    }
}

extension CUDAExpertParallelLayer {
    /// This rank's rail transfers for T_loc tokens per rank (a bucket's, or the heap's capacity).
    func railTransfers(tokensPerRank: Int) -> RailTransfers {
        RailTransfers(layout: layout, grid: grid, rank: rank, tokensPerRank: tokensPerRank, heap: heap.address, tokens: x.address)
    }

    /// The rail communicator, or an error saying why a multi-node symmetric layer cannot run without it.
    func requireRail() throws(CUDAError) -> NCCLCommunicator {
        guard let rail = railCommunicator else {
            throw .invalidArgument(
                "rank \(rank): the symmetric path across \(grid.nodes) nodes needs its rail's NCCL communicator (the ranks with local index \(grid.local(of: rank)) on every node); none was set up")
        }
        return rail
    }

    /// Connects the rail once, eagerly and watched (NCCL sets up a peer's connections at the first transfers that
    /// need them, which may block on the peer): the layer's own transfer lists at the heap's capacity, the largest
    /// messages any bucket sends, so that capturing a layer's graph later finds every connection made. The bytes land
    /// in routing and rail rows every layer rewrites before reading.
    public func connectRail() throws {
        guard grid.nodes > 1 else { return }
        let rail = try requireRail()
        let largest = railTransfers(tokensPerRank: capacity)
        try runtime.device.makeCurrent()
        try rail.exchange(largest.route + largest.combine, stream: stream, phase: "connecting the rail (NCCL, \(grid.nodes) nodes)")
    }

    /// The epoch word of this rank's device barriers (it advances at every barrier: the layer's progress), read
    /// on the side stream while the layer's stream may be busy.
    func barrierEpoch() -> UInt64? {
        guard (try? runtime.device.makeCurrent()) != nil else { return nil }
        var epoch: UInt64 = 0
        let address = heap.address + CUdeviceptr(layout.offset(of: .control) + CUDAExpertParallelLayout.Control.epoch)
        let result = withUnsafeMutableBytes(of: &epoch) { raw in
            runtime.driver.api.cuMemcpyDtoHAsync?(raw.baseAddress, address, 8, sideStream.handle)
        }
        guard result == 0, (try? sideStream.synchronize()) != nil else { return nil }
        return epoch
    }
}
