import CCUDA
import MoECore

extension MoERoutingParams {
    /// What every routing launch's parameters share: the batch's shape, the routing mode and the tile bounds (one
    /// block of top-k and plan work per MOE_TOKENS_PER_BLOCK tokens; tiles fitted to `tileWidths`, RoutingPlan.tileSizes).
    /// The single-GPU forward and expert parallelism's local and global routing each add their buffers.
    static func shaped(
        tokens: Int, config: MoEConfig, mode: RoutingMode, tileRows: Int, maxTiles: Int, tileWidths: [Int] = []
    ) -> MoERoutingParams {
        precondition(RoutingPlan.validWidths(tileWidths, tileRows: tileRows) && tileWidths.count <= Int(MOE_TILE_WIDTHS))
        var p = MoERoutingParams()
        p.tokens = Int32(tokens)
        p.hidden = Int32(config.hidden)
        p.experts = Int32(config.experts)
        p.topK = Int32(config.topK)
        p.mode = mode == .renormalize ? MOE_ROUTING_RENORMALIZE : MOE_ROUTING_SOFTMAX_FIRST
        p.tileRows = Int32(tileRows)
        withUnsafeMutableBytes(of: &p.tileWidths) { bytes in
            for (i, width) in tileWidths.enumerated() { bytes.storeBytes(of: Int32(width), toByteOffset: 4 * i, as: Int32.self) }
        }
        p.maxTiles = Int32(maxTiles)
        p.tokenBlocks = Int32(LaunchPlan.tokenBlocks(tokens: tokens))
        return p
    }
}
