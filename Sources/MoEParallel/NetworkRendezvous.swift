/// How the ranks of a multi-node job find each other: node 0's rendezvous at `master`, and which ranks share
/// this node's memory (the others are reached over TCP).
public struct NetworkRendezvous: Sendable, Equatable {
    /// host:port of node 0's launcher.
    public var master: String
    /// The global ranks on this node.
    public var localRanks: Range<Int>

    public init(master: String, localRanks: Range<Int>) {
        self.master = master
        self.localRanks = localRanks
    }

    /// The rendezvous of `environment`'s job: nil on one node; on several, node 0's address and this node's ranks
    /// (a missing master address is an error naming the flag).
    public static func forJob(_ environment: RankEnvironment) throws -> NetworkRendezvous? {
        guard environment.nodes > 1 else { return nil }
        guard let master = environment.master else {
            throw ExpertParallelError.invalidArgument("a \(environment.nodes)-node job needs MOE_MASTER (moe launch --master)")
        }
        let first = environment.nodeRank * environment.localWorld
        return NetworkRendezvous(master: master, localRanks: first..<(first + environment.localWorld))
    }

    /// Registers this rank with the rendezvous, then connects to every rank on other nodes: to lower ranks
    /// (which listen) and from higher ranks (which connect to us). Returns the connections, handshaken.
    func connect(
        rank: Int, world: Int, layout: SymmetricHeapLayout, identity: HeapIdentity, ownBase: UnsafeMutableRawPointer,
        deadline: Double
    ) throws -> [NetworkPeer] {
        let registration = try TCPSocket.connect(to: master, until: deadline, label: "the rendezvous at \(master)")
        // Listen on the interface that reaches the master: that address reaches us too.
        var address = registration.localAddress
        address.sin_port = 0
        let listener = try TCPSocket.listen(on: address, label: "rank \(rank)'s listener")
        let advertised = TCPSocket.describe(listener.localAddress)
        let fingerprint = [
            "config=\(hex(identity.configDigest))", "weights=\(hex(identity.weightsDigest))",
            "map=\(hex(identity.assignmentDigest))", "layout=\(hex(layout.digest))",
        ].joined(separator: "/")
        let table = try RendezvousClient.registerRank(
            registration, rank: rank, world: world, address: advertised, identity: fingerprint, deadline: deadline)
        registration.close()

        var peers: [NetworkPeer] = []
        for peer in 0..<rank where !localRanks.contains(peer) {
            let socket = try TCPSocket.connect(to: table[peer], until: deadline, label: "rank \(peer)")
            try NetworkPeer.sendHello(socket, rank: rank, layout: layout)
            let hello = try NetworkPeer.receiveHello(socket, layout: layout)
            guard hello.rank == peer else {
                throw ExpertParallelError.invalidArgument("\(table[peer]) answered as rank \(hello.rank), expected rank \(peer)")
            }
            peers.append(NetworkPeer(rank: peer, ownRank: rank, socket: socket, layout: layout, ownBase: ownBase, pid: hello.pid))
        }
        var expected = Set((rank + 1)..<world).subtracting(localRanks)
        while !expected.isEmpty {
            guard let socket = try listener.accept(until: deadline, label: "a peer rank") else {
                throw ExpertParallelError.joinTimeout(
                    rank: expected.min()!, seconds: 0, segment: "a TCP connection to \(advertised)")
            }
            let hello = try NetworkPeer.receiveHello(socket, layout: layout)
            guard expected.remove(hello.rank) != nil else {
                throw ExpertParallelError.invalidArgument("rank \(hello.rank) connected to rank \(rank) unexpectedly")
            }
            try NetworkPeer.sendHello(socket, rank: rank, layout: layout)
            peers.append(NetworkPeer(
                rank: hello.rank, ownRank: rank, socket: TCPSocket(descriptor: socket.takeDescriptor(), label: "rank \(hello.rank)"),
                layout: layout, ownBase: ownBase, pid: hello.pid))
        }
        listener.close()
        return peers
    }

    private func hex(_ value: UInt64) -> String { String(value, radix: 16) }
}
