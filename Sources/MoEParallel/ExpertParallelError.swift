#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in the per-layer protocol, used to name where a rank was when something went wrong.
///
/// Raw values are stored in shared memory (the low byte of every barrier arrival word): never renumber them.
public enum ExpertParallelPhase: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Joining: every rank has mapped every peer's heap.
    case setup = 1
    /// Symmetric path: top-k of every rank stored into every peer's routing region.
    case route = 2
    /// Symmetric path: token rows stored into their owners' dispatch regions.
    case dispatch = 3
    /// Symmetric path: weighted expert rows stored into their home ranks' combine regions.
    case combine = 4
    /// All-to-all path: per-destination token and slot counts exchanged (the host synchronisation).
    case allToAllCounts = 5
    /// All-to-all path: packed token rows copied to their destinations.
    case allToAllDispatch = 6
    /// All-to-all path: expert rows copied back to their home ranks.
    case allToAllCombine = 7
    /// Start of a timed step (benchmarks align the ranks with it).
    case step = 8
    /// Gathering results (outputs, timings) on rank 0.
    case gather = 9
    /// Every rank is done with the heap.
    case finish = 10
    /// Serving: the ranks wait, without a timeout, for rank 0's next batch (or its stop).
    case serve = 11

    public var description: String {
        switch self {
        case .setup: "setup"
        case .route: "route"
        case .dispatch: "dispatch"
        case .combine: "combine"
        case .allToAllCounts: "all-to-all counts"
        case .allToAllDispatch: "all-to-all dispatch"
        case .allToAllCombine: "all-to-all combine"
        case .step: "step start"
        case .gather: "gather"
        case .finish: "finish"
        case .serve: "next batch"
        }
    }
}

/// Where a late or failed peer was last seen.
public struct PeerStatus: Sendable, Equatable, CustomStringConvertible {
    public var rank: Int
    /// The last barrier the peer arrived at (nil: none since it created its heap).
    public var lastPhase: ExpertParallelPhase?
    public var lastLayer: Int
    public var pid: Int32

    public init(rank: Int, lastPhase: ExpertParallelPhase?, lastLayer: Int, pid: Int32) {
        self.rank = rank
        self.lastPhase = lastPhase
        self.lastLayer = lastLayer
        self.pid = pid
    }

    public var description: String {
        guard let lastPhase else { return "rank \(rank) (pid \(pid)), which never reached a barrier" }
        return "rank \(rank) (pid \(pid)), last seen at barrier '\(lastPhase)' of layer \(lastLayer)"
    }
}

/// Runtime failures of expert parallelism. Each names the rank(s) and phase involved and what to do.
public enum ExpertParallelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The expert → rank map is unusable.
    case invalidAssignment(String)
    /// Ranks, tokens or options that cannot work together.
    case invalidArgument(String)
    /// A POSIX call failed (names the call, the object and errno).
    case system(call: String, object: String, errno: Int32)
    /// Peers did not arrive at a barrier before the timeout.
    case barrierTimeout(phase: ExpertParallelPhase, layer: Int, seconds: Double, late: [PeerStatus])
    /// A peer's process is gone while we waited for it.
    case peerDied(phase: ExpertParallelPhase, layer: Int, peer: PeerStatus)
    /// A peer on another node dropped its connection while we waited for it.
    case peerLost(phase: ExpertParallelPhase, layer: Int, peer: PeerStatus)
    /// A peer closed its heap normally before reaching a barrier we wait at (ranks ran different programs).
    case peerFinished(phase: ExpertParallelPhase, layer: Int, peer: PeerStatus)
    /// A peer failed and told everyone why.
    case peerAborted(rank: Int, message: String)
    /// A peer arrived at the same barrier number with a different phase (ranks disagree about what runs).
    case phaseMismatch(expected: ExpertParallelPhase, layer: Int, rank: Int, actual: ExpertParallelPhase)
    /// A peer joined with a different model, config, assignment or heap layout.
    case mismatchedPeer(rank: Int, field: String, mine: String, theirs: String)
    /// A peer never created its heap (wrong job id, rank not started, or it died while starting).
    case joinTimeout(rank: Int, seconds: Double, segment: String)
    /// The heap was already closed or aborted by this rank.
    case heapClosed

    public var description: String {
        switch self {
        case .invalidAssignment(let why): "invalid expert assignment: \(why)"
        case .invalidArgument(let why): why
        case .system(let call, let object, let errno):
            "\(call)(\(object)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case .barrierTimeout(let phase, let layer, let seconds, let late):
            "timed out after \(Self.format(seconds)) s at barrier '\(phase)' of layer \(layer) waiting for "
                + late.map(\.description).joined(separator: "; ")
                + ": a rank is stalled or much slower (raise --timeout if that is expected)"
        case .peerDied(let phase, let layer, let peer):
            "\(peer) died (its process is gone) while this rank waited at barrier '\(phase)' of layer \(layer)"
        case .peerLost(let phase, let layer, let peer):
            "\(peer) on another node disconnected (its process died or the network failed) while this rank waited "
                + "at barrier '\(phase)' of layer \(layer)"
        case .peerFinished(let phase, let layer, let peer):
            "\(peer) closed its heap before reaching barrier '\(phase)' of layer \(layer): "
                + "the ranks ran different sequences of layers"
        case .peerAborted(let rank, let message): "rank \(rank) failed: \(message)"
        case .phaseMismatch(let expected, let layer, let rank, let actual):
            "rank \(rank) arrived at barrier '\(actual)' while this rank is at '\(expected)' of layer \(layer): "
                + "the ranks run different programs (same --comm, layers and options on every rank?)"
        case .mismatchedPeer(let rank, let field, let mine, let theirs):
            "rank \(rank) was started with a different \(field) (this rank: \(mine); rank \(rank): \(theirs)); "
                + "every rank must load the same model with the same options"
        case .joinTimeout(let rank, let seconds, let segment):
            "rank \(rank) did not join within \(Self.format(seconds)) s (its shared-memory heap \(segment) "
                + "never became ready): is it running, with the same MOE_JOB_ID?"
        case .heapClosed: "the symmetric heap is closed"
        }
    }

    static func format(_ seconds: Double) -> String {
        let tenths = (seconds * 10).rounded() / 10
        return tenths == tenths.rounded() ? String(Int(tenths)) : String(tenths)
    }
}
