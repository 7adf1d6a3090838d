import CMoEAtomics

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Who this process is in a launched job, from the variables `moe launch` sets for every rank.
///
/// | variable | meaning |
/// |---|---|
/// | MOE_JOB_ID | unique job id; shared-memory names embed it |
/// | MOE_RANK, MOE_WORLD_SIZE | global rank and number of ranks |
/// | MOE_LOCAL_RANK, MOE_LOCAL_WORLD_SIZE | rank and ranks on this node (host) |
/// | MOE_NODE_RANK, MOE_NODES | this node and the number of nodes |
/// | MOE_MASTER | host:port of the node-0 rendezvous (multi-node only) |
/// | MOE_COMM | symmetric or alltoall, when the launcher was given --comm |
/// | MOE_A2A_TRANSPORT | auto, nccl or ipc: the GPU all-to-all baseline's transport (--a2a-transport) |
/// | MOE_TIMEOUT | seconds a rank waits for a peer before failing |
public struct RankEnvironment: Sendable, Equatable {
    public var jobID: String
    public var rank: Int
    public var world: Int
    public var localRank: Int
    public var localWorld: Int
    public var nodeRank: Int
    public var nodes: Int
    public var master: String?
    public var comm: CommMode?
    public var allToAllTransport: AllToAllTransportChoice?
    public var timeoutSeconds: Double

    public init(
        jobID: String, rank: Int, world: Int, localRank: Int? = nil, localWorld: Int? = nil, nodeRank: Int = 0,
        nodes: Int = 1, master: String? = nil, comm: CommMode? = nil, allToAllTransport: AllToAllTransportChoice? = nil,
        timeoutSeconds: Double = 60
    ) {
        self.jobID = jobID
        self.rank = rank
        self.world = world
        self.localRank = localRank ?? rank
        self.localWorld = localWorld ?? world
        self.nodeRank = nodeRank
        self.nodes = nodes
        self.master = master
        self.comm = comm
        self.allToAllTransport = allToAllTransport
        self.timeoutSeconds = timeoutSeconds
    }

    /// The environment of this process, or nil when it was not started as a rank (MOE_RANK unset).
    /// Throws when the variables are present but inconsistent.
    public static func current() throws -> RankEnvironment? {
        try parse { name in getenv(name).map { String(cString: $0) } }
    }

    /// Parses the variables through `lookup` (tests pass a dictionary).
    public static func parse(_ lookup: (String) -> String?) throws -> RankEnvironment? {
        guard let rankText = lookup("MOE_RANK") else { return nil }
        func integer(_ name: String, _ text: String?) throws -> Int {
            guard let text, let value = Int(text), value >= 0 else {
                throw ExpertParallelError.invalidArgument("\(name)=\(text ?? "(unset)") must be a non-negative integer (set by moe launch)")
            }
            return value
        }
        let rank = try integer("MOE_RANK", rankText)
        let world = try integer("MOE_WORLD_SIZE", lookup("MOE_WORLD_SIZE"))
        guard let jobID = lookup("MOE_JOB_ID"), !jobID.isEmpty else {
            throw ExpertParallelError.invalidArgument("MOE_RANK is set but MOE_JOB_ID is not: start ranks with moe launch")
        }
        let localRank = try lookup("MOE_LOCAL_RANK").map { try integer("MOE_LOCAL_RANK", $0) } ?? rank
        let localWorld = try lookup("MOE_LOCAL_WORLD_SIZE").map { try integer("MOE_LOCAL_WORLD_SIZE", $0) } ?? world
        let nodeRank = try lookup("MOE_NODE_RANK").map { try integer("MOE_NODE_RANK", $0) } ?? 0
        let nodes = try lookup("MOE_NODES").map { try integer("MOE_NODES", $0) } ?? 1
        var comm: CommMode?
        if let text = lookup("MOE_COMM"), !text.isEmpty {
            guard let mode = CommMode(rawValue: text) else {
                throw ExpertParallelError.invalidArgument("MOE_COMM=\(text) must be symmetric or alltoall")
            }
            comm = mode
        }
        var transport: AllToAllTransportChoice?
        if let text = lookup("MOE_A2A_TRANSPORT"), !text.isEmpty {
            guard let choice = AllToAllTransportChoice(rawValue: text) else {
                throw ExpertParallelError.invalidArgument("MOE_A2A_TRANSPORT=\(text) must be auto, nccl or ipc")
            }
            transport = choice
        }
        var timeout = 60.0
        if let text = lookup("MOE_TIMEOUT") {
            guard let value = Double(text), value > 0 else {
                throw ExpertParallelError.invalidArgument("MOE_TIMEOUT=\(text) must be a positive number of seconds")
            }
            timeout = value
        }
        let environment = RankEnvironment(
            jobID: jobID, rank: rank, world: world, localRank: localRank, localWorld: localWorld, nodeRank: nodeRank,
            nodes: nodes, master: lookup("MOE_MASTER"), comm: comm, allToAllTransport: transport, timeoutSeconds: timeout)
        try environment.validate()
        return environment
    }

    public func validate() throws {
        guard world >= 1, rank < world else {
            throw ExpertParallelError.invalidArgument("MOE_RANK=\(rank) is outside MOE_WORLD_SIZE=\(world)")
        }
        guard nodes >= 1, nodeRank < nodes, localWorld >= 1, localRank < localWorld, localWorld * nodes == world,
            rank == nodeRank * localWorld + localRank
        else {
            throw ExpertParallelError.invalidArgument(
                "inconsistent rank variables: rank \(rank) of \(world), local \(localRank) of \(localWorld), node \(nodeRank) of \(nodes)")
        }
    }

    /// What a rank process does before it joins its job, CPU or GPU: refuses batch limits below 1, flushes stdout per
    /// line (the launcher's pipes prefix each line as it arrives), and asks for SIGTERM when the launcher that started
    /// it dies, even by SIGKILL (the handler removes its shared-memory segment).
    public static func prepareRankProcess(maxBatchTokens: Int, maxTokensPerRank: Int) throws {
        guard maxBatchTokens >= 1, maxTokensPerRank >= 1 else {
            throw ExpertParallelError.invalidArgument("batch and --max-tokens-per-rank must be ≥ 1")
        }
        moe_line_buffer_stdout()
        if let launcher = getenv("MOE_LAUNCHER_PID").flatMap({ Int32(String(cString: $0)) }), launcher == getppid() {
            _ = moe_die_with_parent(SIGTERM)
        }
    }

    /// The variables that describe this environment (what the launcher sets).
    public var variables: [(String, String)] {
        var list = [
            ("MOE_JOB_ID", jobID), ("MOE_RANK", "\(rank)"), ("MOE_WORLD_SIZE", "\(world)"),
            ("MOE_LOCAL_RANK", "\(localRank)"), ("MOE_LOCAL_WORLD_SIZE", "\(localWorld)"),
            ("MOE_NODE_RANK", "\(nodeRank)"), ("MOE_NODES", "\(nodes)"), ("MOE_TIMEOUT", "\(timeoutSeconds)"),
        ]
        if let master { list.append(("MOE_MASTER", master)) }
        if let comm { list.append(("MOE_COMM", comm.rawValue)) }
        if let allToAllTransport { list.append(("MOE_A2A_TRANSPORT", allToAllTransport.rawValue)) }
        return list
    }

    /// Ranks on the same node as `rank` share memory; others are reached over the network.
    public func isOnThisNode(_ peer: Int) -> Bool { peer / localWorld == nodeRank }
}
