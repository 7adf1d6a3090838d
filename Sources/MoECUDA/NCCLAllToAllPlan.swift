/// Where every block of the all-to-all baseline goes, from the exchanged count matrix: the send/receive plan of
/// one rank, the same arithmetic for the NCCL transport (grouped ncclSend/ncclRecv) and the IPC one.
///
/// `counts` is [R·R], row = source rank: counts[s·R + d] (token, slot) rows go from rank s to rank d.
///
/// - Dispatch: this rank packs its rows by destination (destination order), so its block for d starts at
///   Σ_{d' < d} counts[rank·R + d'] in the packed send buffer; it receives from each source s into its
///   received rows at Σ_{s' < s} counts[s'·R + rank] (source order).
/// - Combine: the expert rows go back in received order: the block for source s leaves from where s's rows
///   arrived and lands, at s, where s packed them. So combine sends = dispatch receives, and combine
///   receives = dispatch sends.
public struct AllToAllPlan: Sendable, Equatable {
    /// `count` rows exchanged with `peer`, starting at row `offset` of this rank's buffer.
    public struct Block: Sendable, Equatable {
        public var peer: Int
        public var offset: Int
        public var count: Int

        public init(peer: Int, offset: Int, count: Int) {
            self.peer = peer
            self.offset = offset
            self.count = count
        }
    }

    public let rank: Int
    public let world: Int
    /// [R] this rank's packed rows for each destination (destination order).
    public let dispatchSends: [Block]
    /// [R] rows arriving from each source (source order).
    public let dispatchReceives: [Block]

    /// Expert rows going home: from where each source's rows arrived.
    public var combineSends: [Block] { dispatchReceives }
    /// Expert rows coming home: to where this rank packed them.
    public var combineReceives: [Block] { dispatchSends }
    public var sentRows: Int { dispatchSends.reduce(0) { $0 + $1.count } }
    public var receivedRows: Int { dispatchReceives.reduce(0) { $0 + $1.count } }

    /// - Parameters:
    ///   - sendCapacity: rows this rank's send buffer holds (T_cap·k).
    ///   - receiveCapacity: rows its receive region holds (R·T_cap·k).
    public init(counts: [Int32], world: Int, rank: Int, sendCapacity: Int, receiveCapacity: Int) throws(CUDAError) {
        guard world >= 1, rank >= 0, rank < world else { throw .invalidArgument("rank \(rank) is outside 0..<\(world)") }
        guard counts.count == world * world else {
            throw .invalidArgument("the count exchange returned \(counts.count) values for \(world) ranks (expected \(world * world))")
        }
        if let bad = counts.firstIndex(where: { $0 < 0 }) {
            throw .invalidArgument("rank \(bad / world) announced \(counts[bad]) rows for rank \(bad % world): counts must be ≥ 0")
        }
        func count(_ source: Int, _ destination: Int) -> Int { Int(counts[source * world + destination]) }
        var sends: [Block] = [], receives: [Block] = []
        var at = 0
        for destination in 0..<world {
            sends.append(Block(peer: destination, offset: at, count: count(rank, destination)))
            at += count(rank, destination)
        }
        guard at <= sendCapacity else {
            throw .invalidArgument("rank \(rank) would send \(at) rows; its send buffer holds \(sendCapacity) (T_cap·k)")
        }
        at = 0
        for source in 0..<world {
            receives.append(Block(peer: source, offset: at, count: count(source, rank)))
            at += count(source, rank)
        }
        guard at <= receiveCapacity else {
            throw .invalidArgument(
                "rank \(rank) would receive \(at) rows; its all-to-all region holds \(receiveCapacity) (R·T_cap·k): a peer announced more rows than any batch can route")
        }
        self.rank = rank
        self.world = world
        dispatchSends = sends
        dispatchReceives = receives
    }
}
