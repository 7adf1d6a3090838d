import CCUDA
import MoECore

/// The grouped-GEMM kernels built into moe_experts.cu (names must match its MOE_RESIDENT / MOE_STAGED lines).
public enum GemmVariant: String, CaseIterable, Sendable, Equatable {
    /// Decode: 64 weight rows × 8 tokens per block (4 warps × 16 rows, K split over 2), activations resident.
    case resident_1_1_4_2
    /// 64 rows × 16 tokens.
    case resident_1_2_4_2
    /// 256 weight rows × 32 tokens per block (8 warps × 32 rows), codes and activations staged through shared memory.
    case staged_2_4_8
    /// 256 rows × 64 tokens.
    case staged_2_8_8

    public var kernelName: String { "moe_gemm_" + rawValue }
    private var numbers: [Int] { rawValue.split(separator: "_").dropFirst().map { Int($0)! } }
    public var isResident: Bool { rawValue.hasPrefix("resident") }
    /// 16-row groups per warp.
    public var rowGroupsPerWarp: Int { numbers[0] }
    /// Tokens per tile: 8 per n8 fragment.
    public var tileRows: Int { 8 * numbers[1] }
    /// Warps along the output rows.
    public var warpsAcrossRows: Int { numbers[2] }
    /// Warps splitting K (resident kernels).
    public var warpsAcrossK: Int { isResident ? numbers[3] : 1 }
    public var warps: Int { warpsAcrossRows * warpsAcrossK }
    /// Weight row groups (16 rows) one block covers.
    public var rowGroupsPerBlock: Int { rowGroupsPerWarp * warpsAcrossRows }

    /// The default choice for a token count: decode sizes stream weights straight into registers with small
    /// tiles; larger batches stage codes and activations through shared memory with larger tiles, so each
    /// decoded weight feeds more MMAs.
    public static func choose(tokens: Int) -> GemmVariant {
        switch tokens {
        case ...64: .resident_1_1_4_2
        case ...256: .resident_1_2_4_2
        case ...1024: .staged_2_4_8
        default: .staged_2_8_8
        }
    }

    /// Dynamic shared memory for a GEMM with reduction width `k` and at most `residentRows` rows per tile.
    public func sharedBytes(k: Int, residentRows: Int) -> Int {
        let chunks = (k + 63) / 64
        if isResident {
            return residentRows * (64 * chunks + 8) * 2 + warps * rowGroupsPerWarp * (tileRows / 8) * 32 * 4 * 4
        }
        let groups = rowGroupsPerBlock
        return 3 * (tileRows * (256 + 8) * 2 + groups * 4 * 512 + groups * 128)
    }
}

/// Static sizes of one token-count bucket: buffer sizes, the tile bound, grids. Pure arithmetic (tested on CPU).
public struct LaunchPlan: Sendable, Equatable {
    public let tokens: Int
    public let config: MoEConfig
    public let variant: GemmVariant
    /// The one-launch routing path: at most 32 tokens whose logits and plan fit the last block's shared memory.
    public var smallRouting: Bool {
        tokens <= Int(MOE_SMALL_ROUTING_MAX_TOKENS) && smallRoutingPlanBytes <= 160 * 1024
    }
    /// Slices of H in the small-batch router (each ≤ 128 segments of 8 values: 4 per lane).
    public var routerSplits: Int {
        let segments = config.hidden / 8
        return (segments + Int(MOE_SMALL_ROUTING_SEGMENTS) - 1) / Int(MOE_SMALL_ROUTING_SEGMENTS)
    }
    /// Shared memory of the small-batch router's last block: logits, ids, weights, counts, offsets.
    var smallRoutingPlanBytes: Int { 4 * (tokens * config.experts + 2 * slots + 2 * config.experts + 1) }
    public var slots: Int { tokens * config.topK }
    public var tileRows: Int { variant.tileRows }
    /// Rows any tile can hold: an expert gets at most T rows (a token's k experts are distinct).
    public var residentRows: Int { min(tileRows, tokens) }
    public var tokenBlocks: Int { (tokens + Int(MOE_TOKENS_PER_BLOCK) - 1) / Int(MOE_TOKENS_PER_BLOCK) }

    /// Upper bound on Σ_e ceil(count_e / tileRows): each non-empty expert adds at most one partial tile.
    public var maxTiles: Int { LaunchPlan.tileBound(slots: slots, experts: config.experts, tileRows: tileRows) }

    public static func tileBound(slots: Int, experts: Int, tileRows: Int) -> Int {
        min(experts, slots) + slots / tileRows
    }

    public init(tokens: Int, config: MoEConfig, variant: GemmVariant? = nil) {
        self.tokens = tokens
        self.config = config
        self.variant = variant ?? GemmVariant.choose(tokens: tokens)
    }

    /// GEMM 1 writes a [slots, I]; GEMM 2 reads it and writes combine [slots, H].
    public func gemmShape(outputRows n: Int, reduction k: Int) -> LaunchShape {
        let groups = n / 16
        return LaunchShape(
            grid: ((groups + variant.rowGroupsPerBlock - 1) / variant.rowGroupsPerBlock, maxTiles, 1),
            block: 32 * variant.warps,
            sharedBytes: variant.sharedBytes(k: k, residentRows: residentRows))
    }

    public var gemm1Shape: LaunchShape { gemmShape(outputRows: 2 * config.intermediate, reduction: config.hidden) }
    public var gemm2Shape: LaunchShape { gemmShape(outputRows: config.hidden, reduction: config.intermediate) }

    public var routeSmallShape: LaunchShape {
        let warps = Int(MOE_SMALL_ROUTING_WARPS)
        let sliceBytes = tokens * ((config.hidden / 8 + routerSplits - 1) / routerSplits) * 16
        return LaunchShape(
            grid: ((config.experts + warps - 1) / warps, routerSplits, 1), block: 32 * warps,
            sharedBytes: max(sliceBytes, smallRoutingPlanBytes))
    }
    public var routerMMAShape: LaunchShape {
        LaunchShape(grid: ((config.experts + 63) / 64, (tokens + 63) / 64, 1), block: 128)
    }
    public var topkShape: LaunchShape { LaunchShape(grid: (tokenBlocks, 1, 1), block: 1024) }
    public var scanShape: LaunchShape { LaunchShape(grid: (1, 1, 1), block: 1024) }
    public var scatterShape: LaunchShape { LaunchShape(grid: (tokenBlocks, 1, 1), block: 256) }
    public var reduceShape: LaunchShape {
        LaunchShape(grid: (tokens, (config.hidden / 8 + 127) / 128, 1), block: 128)
    }
}
