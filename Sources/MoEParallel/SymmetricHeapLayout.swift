/// The byte layout every rank's symmetric heap shares (DESIGN §4): one control block and named regions, each
/// starting on a 128-byte boundary (a GPU cache line; also keeps CPU regions off each other's lines).
///
/// Sized from R ranks, the capacity T_cap (the most tokens one rank contributes to one step), k and H:
///
/// | region | shape | written by | read by |
/// |---|---|---|---|
/// | control | header, doorbell, abort message, step shapes [R], arrivals [R] | every rank | owner |
/// | routingIds | [R·T_cap, k] i32 | rank q at rows q·T_loc… | owner (global plan) |
/// | routingWeights | [R·T_cap, k] f32 | same | owner |
/// | dispatch | [R·T_cap·k, H] bf16, rows at global sorted positions | token's home rank | owner (experts) |
/// | combine | [T_cap·k, H] bf16, rows at (token, slot) | expert's owner | owner (reduce) |
/// | allToAllCounts | [R, R, 2] i32 (tokens, slots) per (source, destination) | rank q at row q | owner |
/// | allToAllRows | [R·T_cap, H] bf16 received token rows | sources | owner |
/// | allToAllIds, allToAllWeights | [R·T_cap, k] i32 / f32 for those rows | sources | owner |
/// | allToAllReturn | [T_cap·k, H] bf16 expert rows coming home | expert owners | owner |
/// | results | [R, resultWords] f64 (timings, gathered values) | rank q at row q | owner |
/// | railTokens | [R·T_cap, H] bf16 token rows of rail peers on other nodes, row q·T_cap + t | rail peers | owner (forwards) |
///
/// Shared-memory pages are only backed once written, so regions a run does not use cost address space only.
public struct SymmetricHeapLayout: Sendable, Hashable {
    public enum Region: Int, CaseIterable, Sendable, CustomStringConvertible {
        case control, routingIds, routingWeights, dispatch, combine
        case allToAllCounts, allToAllRows, allToAllIds, allToAllWeights, allToAllReturn, results, railTokens

        public var description: String {
            switch self {
            case .control: "control"
            case .routingIds: "routing ids"
            case .routingWeights: "routing weights"
            case .dispatch: "dispatch"
            case .combine: "combine"
            case .allToAllCounts: "all-to-all counts"
            case .allToAllRows: "all-to-all rows"
            case .allToAllIds: "all-to-all ids"
            case .allToAllWeights: "all-to-all weights"
            case .allToAllReturn: "all-to-all return"
            case .results: "results"
            case .railTokens: "rail tokens"
            }
        }
    }

    public static let alignment = 128

    /// R.
    public let ranks: Int
    /// T_cap: tokens per rank per step; larger batches run in chunks of T_cap.
    public let capacity: Int
    /// k.
    public let topK: Int
    /// H.
    public let hidden: Int
    /// f64 words per rank in `results`.
    public let resultWords: Int
    /// Byte offset of each region (indexed by `Region.rawValue`).
    public let offsets: [Int]
    /// Byte size of each region.
    public let sizes: [Int]
    public let totalBytes: Int

    public init(ranks: Int, capacity: Int, topK: Int, hidden: Int, resultWords: Int = 4096) throws {
        guard ranks >= 1, ranks <= ControlBlock.maximumRanks else {
            throw ExpertParallelError.invalidArgument("ranks must be in 1...\(ControlBlock.maximumRanks), got \(ranks)")
        }
        guard capacity >= 1 else { throw ExpertParallelError.invalidArgument("heap capacity must be ≥ 1 token per rank, got \(capacity)") }
        guard topK >= 1, hidden >= 1, resultWords >= 1 else {
            throw ExpertParallelError.invalidArgument("heap layout needs k ≥ 1, H ≥ 1 (got k=\(topK), H=\(hidden))")
        }
        // Sorted positions and slot indices are Int32 (RoutingPlan): R·T_cap·k must fit.
        guard ranks * capacity * topK < Int(Int32.max) else {
            throw ExpertParallelError.invalidArgument(
                "R·T_cap·k = \(ranks)·\(capacity)·\(topK) exceeds 2³¹; lower the capacity (--max-tokens-per-rank)")
        }
        self.ranks = ranks
        self.capacity = capacity
        self.topK = topK
        self.hidden = hidden
        self.resultWords = resultWords
        let (R, T, k, H) = (ranks, capacity, topK, hidden)
        let row = H * 2
        var sizes = [Int](repeating: 0, count: Region.allCases.count)
        sizes[Region.control.rawValue] = ControlBlock.byteCount(ranks: R)
        sizes[Region.routingIds.rawValue] = R * T * k * 4
        sizes[Region.routingWeights.rawValue] = R * T * k * 4
        sizes[Region.dispatch.rawValue] = R * T * k * row
        sizes[Region.combine.rawValue] = T * k * row
        sizes[Region.allToAllCounts.rawValue] = R * R * 2 * 4
        sizes[Region.allToAllRows.rawValue] = R * T * row
        sizes[Region.allToAllIds.rawValue] = R * T * k * 4
        sizes[Region.allToAllWeights.rawValue] = R * T * k * 4
        sizes[Region.allToAllReturn.rawValue] = T * k * row
        sizes[Region.results.rawValue] = R * resultWords * 8
        sizes[Region.railTokens.rawValue] = R * T * row
        var offsets = [Int](repeating: 0, count: sizes.count)
        var cursor = 0
        for region in Region.allCases {
            offsets[region.rawValue] = cursor
            cursor += Self.alignUp(sizes[region.rawValue])
        }
        self.sizes = sizes
        self.offsets = offsets
        self.totalBytes = cursor
    }

    @inlinable public func offset(of region: Region) -> Int { offsets[region.rawValue] }
    @inlinable public func byteCount(of region: Region) -> Int { sizes[region.rawValue] }

    /// A fingerprint of the layout (every offset and size), compared between ranks at rendezvous.
    public var digest: UInt64 {
        var hash = Fingerprint()
        for value in [ranks, capacity, topK, hidden, resultWords, totalBytes] + offsets + sizes { hash.mix(UInt64(value)) }
        return hash.value
    }

    static func alignUp(_ bytes: Int) -> Int { (bytes + alignment - 1) / alignment * alignment }
}

/// Byte offsets inside the control region. The owner writes the header and its diagnostics; peers write their
/// step shapes, arrival words and rings of the doorbell.
///
/// ```
///   0 magic u64 · 8 version u32 · 12 state u32 · 16 rank u32 · 20 world u32 · 24 pid i32
///  32 total bytes u64 · 40 layout digest u64 · 48 config digest · 56 weights digest · 64 assignment digest
///  72 capacity u64 · 80 last arrival u64 (epoch << 8 | phase) · 88 last layer u64
/// 128 doorbell u32 · 132 sleepers u32                         (own 64-byte line)
/// 256 identity text [256] (what this rank loaded, for messages)
/// 512 abort message [512]
/// 1024 published length u32 · 1028 published bytes [252] (e.g. a CUDA IPC handle of the rank's device heap)
/// 1280 step shapes [R] × (tokensPerRank u32, validTokens u32)
///  …  arrivals [R] × 64 bytes (arrival word of rank q at q·64, each on its own line)
/// ```
enum ControlBlock {
    static let maximumRanks = 1024
    static let magicValue: UInt64 = 0x3150_4145_4845_4F4D  // "MOEHEAP1" little-endian
    static let version: UInt32 = 2

    static let magic = 0
    static let versionField = 8
    static let state = 12
    static let rank = 16
    static let world = 20
    static let pid = 24
    static let totalBytes = 32
    static let layoutDigest = 40
    static let configDigest = 48
    static let weightsDigest = 56
    static let assignmentDigest = 64
    static let capacity = 72
    static let lastArrival = 80
    static let lastLayer = 88
    static let doorbell = 128
    static let sleepers = 132
    static let identityText = 256
    static let identityTextBytes = 256
    static let abortMessage = 512
    static let abortMessageBytes = 512
    static let published = 1024
    static let publishedBytes = 252
    static let stepShapes = 1280

    static func arrivals(ranks: Int) -> Int { SymmetricHeapLayout.alignUp(stepShapes + ranks * 8) }
    static func byteCount(ranks: Int) -> Int { arrivals(ranks: ranks) + ranks * 64 }

    /// Values of `state`.
    enum State: UInt32 {
        case creating = 0, ready = 1, finished = 2, aborted = 3
        /// Only in a remote peer's shadow block: its connection dropped without a goodbye.
        case lost = 4
    }
}
