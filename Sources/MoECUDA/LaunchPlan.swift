import CCUDA
import MoECore

/// The grouped-GEMM kernels built into moe_experts.cu (names must match its MOE_RESIDENT / MOE_STREAMED lines).
public enum GemmVariant: String, CaseIterable, Sendable, Equatable {
    /// Activation tile kept whole in shared memory, 4 warps splitting K; 16 weight rows × 8 tokens.
    case resident_1_1_4
    /// Same, 16 rows × 16 tokens.
    case resident_1_2_4
    /// K staged through a cp.async ring; 4 warps × 32 rows = 128 rows × 32 tokens.
    case streamed_2_4_4
    /// 128 rows × 64 tokens.
    case streamed_2_8_4

    public var kernelName: String { "moe_gemm_" + rawValue }
    var parts: (kind: Substring, mi: Int, nj: Int, warps: Int) {
        let p = rawValue.split(separator: "_")
        return (p[0], Int(p[1])!, Int(p[2])!, Int(p[3])!)
    }
    public var isResident: Bool { parts.kind == "resident" }
    /// Rows of weights (output features) per MMA fragment row group count per warp.
    public var rowGroupsPerWarp: Int { parts.mi }
    /// Tokens per tile: 8 per n8 fragment.
    public var tileRows: Int { 8 * parts.nj }
    public var warps: Int { parts.warps }
    /// Weight row groups (16 rows) one block covers.
    public var rowGroupsPerBlock: Int { isResident ? parts.mi : parts.mi * parts.warps }

    /// The default choice for a token count: decode sizes stream weights with small tiles; large batches use
    /// larger tiles so each decoded weight feeds more MMAs.
    public static func choose(tokens: Int) -> GemmVariant {
        switch tokens {
        case ...64: .resident_1_1_4
        case ...384: .resident_1_2_4
        case ...1536: .streamed_2_4_4
        default: .streamed_2_8_4
        }
    }

    /// Dynamic shared memory for a GEMM with reduction width `k` and at most `residentRows` rows per tile.
    public func sharedBytes(k: Int, residentRows: Int) -> Int {
        let chunks = (k + 63) / 64
        if isResident {
            return residentRows * (64 * chunks + 8) * 2 + warps * parts.mi * parts.nj * 32 * 4 * 4
        }
        return 3 * tileRows * (256 + 8) * 2
    }
}

/// Static sizes of one token-count bucket: buffer sizes, the tile bound, grids. Pure arithmetic (tested on CPU).
public struct LaunchPlan: Sendable, Equatable {
    public let tokens: Int
    public let config: MoEConfig
    public let variant: GemmVariant
    public var smallRouting: Bool { tokens <= Int(MOE_SMALL_ROUTING_MAX_TOKENS) }
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

    public var routeSmallShape: LaunchShape { LaunchShape(grid: ((config.experts + 3) / 4, 1, 1), block: 128) }
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
