import MoECore
import Testing

@testable import MoECUDA

@Test func theTileBoundCoversEveryRouting() {
    var rng = SeededGenerator(seed: 11)
    for _ in 0..<200 {
        let experts = Int(rng.next() % 40) + 1
        let k = Int(rng.next() % UInt64(experts)) + 1
        let tokens = Int(rng.next() % 300) + 1
        let tileRows = [8, 16, 32, 64][Int(rng.next() % 4)]
        // Skewed routings: a few experts take most tokens, some get none.
        var ids: [Int32] = []
        for _ in 0..<tokens {
            var chosen = Set<Int32>()
            while chosen.count < k {
                let e = rng.next() % 3 == 0 ? Int32(rng.next() % UInt64(experts)) : Int32(rng.next() % UInt64(min(experts, k + 1)))
                chosen.insert(e)
            }
            ids += chosen.sorted()
        }
        let plan = RoutingPlan(topkIds: ids, tokens: tokens, topK: k, experts: experts, tileRows: tileRows)
        let bound = LaunchPlan.tileBound(slots: tokens * k, experts: experts, tileRows: tileRows)
        #expect(plan.tiles.count <= bound, "T=\(tokens) k=\(k) E=\(experts) rows=\(tileRows)")
        #expect(plan.expertCounts.allSatisfy { Int($0) <= tokens })  // why residentRows = min(tileRows, T) suffices
    }
}

@Test func allTokensOnOneExpertStillFitsTheBound() {
    let tokens = 100
    let ids = [Int32](repeating: 3, count: tokens)
    let plan = RoutingPlan(topkIds: ids, tokens: tokens, topK: 1, experts: 8, tileRows: 8)
    #expect(plan.tiles.count <= LaunchPlan.tileBound(slots: tokens, experts: 8, tileRows: 8))
}

@Test func variantsFollowTheTokenCount() {
    #expect(GemmVariant.choose(tokens: 1) == .resident_1_1_4)
    #expect(GemmVariant.choose(tokens: 64) == .resident_1_1_4)
    #expect(GemmVariant.choose(tokens: 128) == .resident_1_2_4)
    #expect(GemmVariant.choose(tokens: 512) == .streamed_2_4_4)
    #expect(GemmVariant.choose(tokens: 32768) == .streamed_2_8_4)
    #expect(GemmVariant.streamed_2_8_4.tileRows == 64)
    #expect(GemmVariant.resident_1_1_4.rowGroupsPerBlock == 1)
    #expect(GemmVariant.streamed_2_4_4.rowGroupsPerBlock == 8)
}

@Test func gptOss120bLaunchesFitInHopperSharedMemory() {
    let config = MoEPreset.gptOss120b.config
    for tokens in [1, 8, 32, 128, 512, 2048, 8192, 32768] {
        let plan = LaunchPlan(tokens: tokens, config: config)
        #expect(plan.gemm1Shape.sharedBytes <= 227 * 1024)
        #expect(plan.gemm2Shape.sharedBytes <= 227 * 1024)
        #expect(plan.gemm1Shape.grid.x * plan.variant.rowGroupsPerBlock * 16 >= 2 * config.intermediate)
        #expect(plan.gemm2Shape.grid.x * plan.variant.rowGroupsPerBlock * 16 >= config.hidden)
        #expect(plan.gemm1Shape.grid.y == plan.maxTiles)
    }
    let decode = LaunchPlan(tokens: 1, config: config)
    #expect(decode.smallRouting)
    #expect(decode.maxTiles == 4)  // 4 experts, one row each
    #expect(decode.residentRows == 1)
    #expect(!LaunchPlan(tokens: 33, config: config).smallRouting)
}
