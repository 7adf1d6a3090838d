import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a serving group needs of one rank's runner: `ExpertParallelRunner` (CPU ranks) and
/// `GPUExpertParallelRunner` (one process per GPU) both provide it.
public protocol ExpertParallelServingMember: AnyObject {
    var heap: SymmetricHeap { get }
    var config: MoEConfig { get }
    var rank: Int { get }
    var world: Int { get }
    /// What runs, for `/health` and logs.
    var servingDetail: String { get }
    /// The most tokens per rank one step can take (a larger share fails the step, and with it the group).
    var servingTokensPerRankLimit: Int { get }
    /// This rank's share [T_r, H] through the layers; its output rows.
    func servingForward(_ share: [Float], tokens: Int, mode: RoutingMode, comm: CommMode, profiler: Profiler?) throws -> [Float]
    /// Every rank's output rows on rank 0 (nil elsewhere); called by every rank.
    func gather(_ rows: [Float], tokens: Int) throws -> [Float]?
    /// The first layer's top-k of the whole batch on rank 0 (nil elsewhere); called by every rank after the step.
    /// `globalInput` is the batch on rank 0 as bf16 bits, nil elsewhere.
    func globalRouting(globalInput: [UInt16]?, tokens: Int, mode: RoutingMode) throws -> (ids: [Int32], weights: [Float])?
    /// Marks this rank done (peers waiting for it fail at once) and releases its resources.
    func close()
}

/// A long-running expert-parallel job that serves batches: rank 0 takes them (from the HTTP server) and the other
/// ranks follow, step by step, until rank 0 stops them.
///
/// A step: rank 0 stores each follower's token rows (bf16: the layer's own input precision, so nothing is lost)
/// into the follower's dispatch region and a step header into row 0 of its results region, then the `serve`
/// barrier; each follower copies its rows out, a `step` barrier hands the regions back to the layer, and every rank
/// runs its share and gathers the output (and the top-k) on rank 0. Followers wait for the next step at the `serve`
/// barrier without a timeout (an idle server is not a stalled rank); a rank that dies, disconnects or aborts still
/// ends the wait at once, and every barrier inside a step keeps the job's timeout.
public final class ExpertParallelServingGroup: @unchecked Sendable {
    public let member: any ExpertParallelServingMember
    public let comm: CommMode
    /// The most tokens one step takes (every rank's share of it must fit a dispatch region).
    public let maxBatchTokens: Int
    /// Why the group can no longer serve (a peer died, a barrier timed out); nil while it can.
    public private(set) var failure: String?
    private var sequence: UInt64 = 0

    enum Command: UInt64 { case run = 1, stop = 2 }
    /// Header words in row 0 of a follower's results region: magic, sequence, command, tokens, routing mode.
    static let magic: UInt64 = 0x4D4F_4553_4552_5645  // "MOESERVE"
    static let headerWords = 5

    public init(member: any ExpertParallelServingMember, comm: CommMode, maxBatchTokens: Int) throws {
        self.member = member
        self.comm = comm
        self.maxBatchTokens = maxBatchTokens
        let layout = member.heap.layout
        let perRank = GlobalBatch.range(rank: 0, world: member.world, tokens: maxBatchTokens).count
        let rowsThatFit = layout.byteCount(of: .dispatch) / (member.config.hidden * 2)
        let limit = min(rowsThatFit, member.servingTokensPerRankLimit)
        guard maxBatchTokens >= 1, perRank <= limit else {
            throw ExpertParallelError.invalidArgument(
                "a batch of \(maxBatchTokens) tokens puts \(perRank) on each of \(member.world) ranks; a step here takes at most "
                    + "\(limit) per rank: lower --max-batch-tokens or raise --max-tokens-per-rank")
        }
    }

    private var isRoot: Bool { member.rank == 0 }
    private var hidden: Int { member.config.hidden }

    // MARK: rank 0

    /// One batch through the layer on every rank (rank 0 only). Bad input is refused before any rank sees it, so
    /// the group keeps serving; a failure of the group itself (a peer died or stalled) aborts every rank and
    /// makes every later call fail with the reason.
    public func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler? = nil) throws -> MoEForwardResult {
        precondition(isRoot, "only rank 0 takes batches; the other ranks call serveFollower()")
        if let failure {
            throw ExpertParallelError.invalidArgument("the expert-parallel group stopped serving: \(failure)")
        }
        try InputCheck.validate(input, tokens: tokens, hidden: hidden)
        guard tokens <= maxBatchTokens else {
            throw MoEError.shapeMismatch("a batch of \(tokens) tokens is more than this group's \(maxBatchTokens) (--max-batch-tokens)")
        }
        let heap = member.heap
        do {
            sequence += 1
            let header: [UInt64] = [Self.magic, sequence, Command.run.rawValue, UInt64(tokens), routing == .renormalize ? 0 : 1]
            let bits = input.map(BF16.bits)  // once: the followers' rows and rank 0's top-k
            for peer in 1..<member.world {
                let range = GlobalBatch.range(rank: peer, world: member.world, tokens: tokens)
                try bits.withUnsafeBytes { raw in
                    try heap.store(
                        to: peer, .dispatch, byteOffset: 0, from: raw.baseAddress! + range.lowerBound * hidden * 2,
                        count: range.count * hidden * 2)
                }
                try heap.store(to: peer, .results, byteOffset: 0, from: header, count: header.count * 8)
            }
            try heap.barrier(.serve, layer: 0)
            try heap.barrier(.step, layer: 0)
            let own = GlobalBatch.range(rank: 0, world: member.world, tokens: tokens)
            let share = Array(input[(own.lowerBound * hidden)..<(own.upperBound * hidden)])
            let rows = try member.servingForward(share, tokens: tokens, mode: routing, comm: comm, profiler: profiler)
            let output = try member.gather(rows, tokens: tokens)
            let routed = try member.globalRouting(globalInput: bits, tokens: tokens, mode: routing)
            guard let output, let routed else {
                throw ExpertParallelError.invalidArgument("rank 0 got no gathered output (internal error)")
            }
            return MoEForwardResult(hidden: output, topkIds: routed.ids, topkWeights: routed.weights)
        } catch {
            failure = "\(error)"
            heap.abort(message: "rank 0 while serving a batch of \(tokens) tokens: \(error)")
            throw error
        }
    }

    /// Tells the followers to return from `serveFollower` (rank 0 only). Does nothing once the group failed.
    public func stop() throws {
        precondition(isRoot, "only rank 0 stops the group")
        guard failure == nil else { return }
        sequence += 1
        let header: [UInt64] = [Self.magic, sequence, Command.stop.rawValue, 0, 0]
        do {
            for peer in 1..<member.world {
                try member.heap.store(to: peer, .results, byteOffset: 0, from: header, count: header.count * 8)
            }
            try member.heap.barrier(.serve, layer: 0)
        } catch {
            failure = "\(error)"
            throw error
        }
    }

    // MARK: the other ranks

    /// Runs rank 0's steps until it stops the group (every rank but 0). Throws when the group fails; the rank has
    /// then told its peers (aborted its heap).
    public func serveFollower() throws {
        precondition(!isRoot, "rank 0 takes batches with forward(_:tokens:routing:)")
        let heap = member.heap
        var steps = 0
        do {
            while true {
                try heap.barrier(.serve, layer: 0, waitsIndefinitely: true)
                let words = heap.pointer(to: .results, rank: member.rank, as: UInt64.self)
                let header = (0..<Self.headerWords).map { words[$0] }
                guard header[0] == Self.magic, let command = Command(rawValue: header[2]) else {
                    throw ExpertParallelError.invalidArgument(
                        "rank \(member.rank) found no serving step from rank 0 (header \(header)): is rank 0 a server of the same build?")
                }
                if command == .stop { return }
                let tokens = Int(header[3])
                guard tokens >= 1, tokens <= maxBatchTokens else {
                    throw ExpertParallelError.invalidArgument(
                        "rank 0 sent a step of \(tokens) tokens; this rank serves at most \(maxBatchTokens) (same --max-batch-tokens on every rank?)")
                }
                let mode: RoutingMode = header[4] == 0 ? .renormalize : .softmaxFirst
                let range = GlobalBatch.range(rank: member.rank, world: member.world, tokens: tokens)
                let landing = heap.pointer(to: .dispatch, rank: member.rank, as: UInt16.self)
                let share = (0..<(range.count * hidden)).map { BF16.float(landing[$0]) }
                try heap.barrier(.step, layer: 0)
                let rows = try member.servingForward(share, tokens: tokens, mode: mode, comm: comm, profiler: nil)
                _ = try member.gather(rows, tokens: tokens)
                _ = try member.globalRouting(globalInput: nil, tokens: tokens, mode: mode)
                steps += 1
            }
        } catch {
            failure = "\(error)"
            heap.abort(message: "rank \(member.rank) after \(steps) served step\(steps == 1 ? "" : "s"): \(error)")
            throw error
        }
    }
}

/// Rank 0's side of a serving group as a backend, for `MoEServer`: each forward pass is one step of the group.
public final class ExpertParallelServingBackend: MoEBackend {
    public let group: ExpertParallelServingGroup
    public let name: String
    public var detail: String { group.member.servingDetail + ", \(group.comm)" }
    public var config: MoEConfig { group.member.config }
    /// Called once, with the reason, when the group fails (the server should stop: it cannot serve any more).
    public var onFailure: (@Sendable (String) -> Void)?

    public init(group: ExpertParallelServingGroup, name: String) {
        self.group = group
        self.name = name
    }

    /// A failure of the group (not of the batch) is `MoEError.backendUnavailable`, which the server answers with 503.
    public func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        let failedBefore = group.failure != nil
        do {
            return try group.forward(input, tokens: tokens, routing: routing, profiler: profiler)
        } catch {
            guard let failure = group.failure else { throw error }
            if !failedBefore { onFailure?(failure) }
            throw MoEError.backendUnavailable(backend: detail, reason: failure)
        }
    }
}

extension ExpertParallelRunner: ExpertParallelServingMember {
    public var servingDetail: String { "cpu expert-parallel, \(world) ranks × \(workers) thread\(workers == 1 ? "" : "s")" }
    /// Any: a share above the heap's capacity runs in chunks.
    public var servingTokensPerRankLimit: Int { .max }

    public func servingForward(_ share: [Float], tokens: Int, mode: RoutingMode, comm: CommMode, profiler: Profiler?) throws -> [Float] {
        try forwardShare(share, tokens: tokens, mode: mode, comm: comm, profiler: profiler)
    }

    /// Rank 0 recomputes the top-k with the same router kernel the home ranks ran (per token, deterministic).
    public func globalRouting(globalInput: [UInt16]?, tokens: Int, mode: RoutingMode) throws -> (ids: [Int32], weights: [Float])? {
        guard let globalInput else { return nil }
        var ids = [Int32](repeating: 0, count: tokens * config.topK)
        var weights = [Float](repeating: 0, count: tokens * config.topK)
        globalInput.withUnsafeBufferPointer {
            backends[0].route(x: $0.baseAddress!, tokens: tokens, mode: mode, ids: &ids, weights: &weights, profiler: nil)
        }
        return (ids, weights)
    }
}

extension GPUExpertParallelRunner: ExpertParallelServingMember {
    public var servingDetail: String { "cuda expert-parallel, \(world) ranks" }
    /// The GPU heaps' capacity: the layer refuses larger shares (no chunking on the device).
    public var servingTokensPerRankLimit: Int { capacity }

    /// The layer graphs of the symmetric path (the all-to-all baseline runs eagerly); no per-stage profile.
    public func servingForward(_ share: [Float], tokens: Int, mode: RoutingMode, comm: CommMode, profiler: Profiler?) throws -> [Float] {
        try forwardShare(share, tokens: tokens, mode: mode, comm: comm)
    }

    /// The top-k each home rank's router computed, gathered.
    public func globalRouting(globalInput: [UInt16]?, tokens: Int, mode: RoutingMode) throws -> (ids: [Int32], weights: [Float])? {
        try gatherRouting(layer: 0, tokens: tokens)
    }
}
