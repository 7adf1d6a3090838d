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
    #expect(GemmVariant.choose(tokens: 1) == (.resident_1_1_8_1, .resident_1_1_4_2))
    #expect(GemmVariant.choose(tokens: 64) == (.resident_1_1_8_1, .resident_1_1_4_2))
    #expect(GemmVariant.choose(tokens: 128) == (.resident_1_1_8_1, .resident_1_1_8_1))
    #expect(GemmVariant.choose(tokens: 512) == (.staged_2_4_8, .staged_2_4_8))
    #expect(GemmVariant.choose(tokens: 32768) == (.staged_2_8_8, .staged_2_8_8))
    for tokens in [1, 8, 64, 65, 256, 257, 1024, 1025] {
        let pair = GemmVariant.choose(tokens: tokens)
        #expect(pair.gemm1.tileRows == pair.gemm2.tileRows)
    }
    #expect(GemmVariant.staged_2_8_8.tileRows == 64)
    #expect(GemmVariant.staged_2_8_8.warps == 8)
    #expect(GemmVariant.resident_1_1_4_2.warps == 8)
    #expect(GemmVariant.resident_1_1_4_2.rowGroupsPerBlock == 4)
    #expect(GemmVariant.staged_2_4_8.rowGroupsPerBlock == 16)
}

@Test func gptOss120bLaunchesFitInHopperSharedMemory() {
    let config = MoEPreset.gptOss120b.config
    for tokens in [1, 8, 32, 128, 512, 2048, 8192, 32768] {
        let plan = LaunchPlan(tokens: tokens, config: config)
        #expect(plan.gemm1Shape.sharedBytes <= 227 * 1024)
        #expect(plan.gemm2Shape.sharedBytes <= 227 * 1024)
        #expect(plan.gemm1Shape.grid.x * plan.gemm1Variant.rowGroupsPerBlock * 16 >= 2 * config.intermediate)
        #expect(plan.gemm2Shape.grid.x * plan.gemm2Variant.rowGroupsPerBlock * 16 >= config.hidden)
        #expect(throws: Never.self) { try plan.validate(maxSharedPerBlock: 227 * 1024) }
        #expect(plan.gemm1Shape.grid.y == plan.maxTiles)
    }
    let decode = LaunchPlan(tokens: 1, config: config)
    // Decode grids fit one wave at two blocks per SM on 132 SMs.
    #expect(decode.gemm1Shape.grid.x * decode.gemm1Shape.grid.y <= 264)
    #expect(decode.gemm2Shape.grid.x * decode.gemm2Shape.grid.y <= 264)
    #expect(decode.smallRouting)
    #expect(decode.maxTiles == 4)  // 4 experts, one row each
    #expect(decode.residentRows == 1)
    #expect(decode.routerSplits == 3)  // 360 segments of 8 values, ≤ 128 per slice
    #expect(decode.routeSmallShape.grid == (16, 3, 1))
    #expect(LaunchPlan(tokens: 32, config: config).smallRouting)
    #expect(!LaunchPlan(tokens: 33, config: config).smallRouting)
    // Huge expert counts do not fit the last block's shared memory: the multi-kernel path takes over.
    #expect(!LaunchPlan(tokens: 32, config: MoEConfig(hidden: 64, intermediate: 64, experts: 4096, topK: 4)).smallRouting)
}

@Test func launchesThatCannotFitSharedMemoryAreATypedError() {
    // k = E = 4096: the plan scatter stages 32·k ids and weights (1 MiB).
    let plan = LaunchPlan(tokens: 64, config: MoEConfig(hidden: 64, intermediate: 64, experts: 4096, topK: 4096))
    #expect(throws: CUDAError.self) { try plan.validate(maxSharedPerBlock: 227 * 1024) }
}
