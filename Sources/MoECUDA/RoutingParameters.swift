import CCUDA
import MoECore

extension MoERoutingParams {
    /// What every routing launch's parameters share: the batch's shape, the routing mode and the tile bounds (one
    /// block of top-k and plan work per MOE_TOKENS_PER_BLOCK tokens). The single-GPU forward and expert parallelism's
    /// local and global routing each add their buffers.
    static func shaped(tokens: Int, config: MoEConfig, mode: RoutingMode, tileRows: Int, maxTiles: Int) -> MoERoutingParams {
        var p = MoERoutingParams()
        p.tokens = Int32(tokens)
        p.hidden = Int32(config.hidden)
        p.experts = Int32(config.experts)
        p.topK = Int32(config.topK)
        p.mode = mode == .renormalize ? MOE_ROUTING_RENORMALIZE : MOE_ROUTING_SOFTMAX_FIRST
        p.tileRows = Int32(tileRows)
        p.maxTiles = Int32(maxTiles)
        p.tokenBlocks = Int32(LaunchPlan.tokenBlocks(tokens: tokens))
        return p
    }
}
