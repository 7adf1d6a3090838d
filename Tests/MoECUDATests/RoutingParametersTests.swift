import CCUDA
import MoECore
import Testing

@testable import MoECUDA

/// The fields the single-GPU forward and expert parallelism's local and global routing share come from one place:
/// the shape, the mode's constant and one block of top-k and plan work per 32 tokens.
@Test func routingParametersShareTheirShapeFields() {
    let config = MoEPreset.gptOss20b.config
    for (tokens, blocks) in [(1, 1), (32, 1), (33, 2), (2048, 64), (2049, 65)] {
        let p = MoERoutingParams.shaped(tokens: tokens, config: config, mode: .softmaxFirst, tileRows: 96, maxTiles: 123)
        #expect(p.tokens == Int32(tokens) && p.tokenBlocks == Int32(blocks), "T=\(tokens)")
        #expect(p.hidden == 2880 && p.experts == 32 && p.topK == 4 && p.tileRows == 96 && p.maxTiles == 123)
        #expect(p.mode == MOE_ROUTING_SOFTMAX_FIRST && p.x == 0 && p.topkIds == 0)
    }
    #expect(MoERoutingParams.shaped(tokens: 7, config: config, mode: .renormalize, tileRows: 8, maxTiles: 1).mode
        == MOE_ROUTING_RENORMALIZE)
}
