import CCUDA
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

/// By rows an expert (the default; `MOE_CUDA_POLICY_ROWS=0` goes by tokens): gpt-oss-120b's choice is unchanged at every
/// size; gpt-oss-20b (E = 32) crosses to the 32-, 48-, 64-, 96-, 128- and 192-token registered kernels (rounded
/// widths, then plain) at 50, 184, 272, 352, 672, 800 and 1344 tokens (120b's 200, 736, 1088, 1408, 2688, 3200 and 5376);
/// the decode rules (1 and 2–4 tokens) stay by tokens.
@Test func theRowsPolicyKeeps120bAndMoves20bsCrossovers() {
    for tokens in [1, 2, 3, 4, 5, 8, 31, 64, 65, 128, 199, 200, 255, 256, 257, 287, 288, 576, 577, 735, 736, 1024, 1087, 1088, 1407, 1408, 2687, 2688, 3199, 3200, 5375, 5376, 40000] {
        for hopper in [true, false] {
            #expect(GemmVariant.choose(tokens: tokens, hopper: hopper, byRows: true)
                == GemmVariant.choose(tokens: tokens, hopper: hopper, byRows: false), "T=\(tokens)")
        }
    }
    func small(_ tokens: Int, hopper: Bool = true, byRows: Bool = true) -> GemmVariant {
        GemmVariant.choose(tokens: tokens, experts: 32, topK: 4, hopper: hopper, byRows: byRows).gemm1
    }
    let thirtyTwo = GemmVariant.registered_1_32_4_3_1_1_2_1_0_24_0_2_1
    #expect(small(1) == .resident_1_1_4_2_3 && small(4) == .resident_1_1_4_1_4 && small(49) == .resident_1_1_8_1_3)
    #expect(small(50) == thirtyTwo && small(183) == thirtyTwo)
    #expect(small(184) == .registered_1_48_4_3_1_1_2_1_0_16_0_2_1 && small(271) == .registered_1_48_4_3_1_1_2_1_0_16_0_2_1)
    #expect(small(272) == .registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1 && small(351) == .registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1)
    #expect(small(352) == .registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1 && small(671) == .registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1)
    #expect(small(672) == .registered_1_128_4_4_1_1_2_1_0_16_0_1_1 && small(799) == .registered_1_128_4_4_1_1_2_1_0_16_0_1_1)
    #expect(small(800) == .registered_1_192_4_3_1_1_2_1_0_16_0_1_1 && small(1343) == .registered_1_192_4_3_1_1_2_1_0_16_0_1_1)
    #expect(small(1344) == .registered_1_192_4_3_1_1_2_1_0_16_0_1_1)
    #expect(small(512, hopper: false) == .staged_2_4_8_2 && small(513, hopper: false) == .staged_1_8_8_2)
    #expect(small(128, byRows: false) == .resident_1_1_8_1_3 && small(287, byRows: false) == thirtyTwo)
    #expect(small(64, hopper: false) == .resident_1_1_8_1_3 && small(65, hopper: false) == .staged_2_4_8_2)
    // The plan passes the model's E and k.
    let plan = LaunchPlan(tokens: 128, config: MoEPreset.gptOss20b.config)
    #expect(plan.gemm1Variant == GemmVariant.choose(tokens: 128, experts: 32, topK: 4).gemm1)
    // By rows is the default (run 50: −27% at 128 tokens on gpt-oss-20b); only MOE_CUDA_POLICY_ROWS=0 turns it off.
    #expect(GemmVariant.rowsPolicy == (currentEnvironment("MOE_CUDA_POLICY_ROWS") != "0"))
    if GemmVariant.rowsPolicy { #expect(plan.gemm1Variant == thirtyTwo) }
    #expect(LaunchPlan(tokens: 49, config: MoEPreset.gptOss20b.config).gemm1Variant == .resident_1_1_8_1_3)
}

@Test func variantsFollowTheTokenCount() {
    #expect(GemmVariant.choose(tokens: 1) == (.resident_1_1_4_2_3, .resident_1_1_2_4_3))
    #expect(GemmVariant.choose(tokens: 2) == (.resident_1_1_4_1_4, .resident_1_1_4_1_4))
    #expect(GemmVariant.choose(tokens: 4) == (.resident_1_1_4_1_4, .resident_1_1_4_1_4))
    #expect(GemmVariant.choose(tokens: 4, hopper: false) == (.resident_1_1_4_2_3, .resident_1_1_2_4_3))
    #expect(GemmVariant.choose(tokens: 5) == (.resident_1_1_8_1_3, .resident_1_1_8_1_3))
    #expect(GemmVariant.choose(tokens: 64) == (.resident_1_1_8_1_3, .resident_1_1_8_1_3))
    #expect(GemmVariant.choose(tokens: 128) == (.resident_1_1_8_1_3, .resident_1_1_8_1_3))
    #expect(GemmVariant.choose(tokens: 199) == (.resident_1_1_8_1_3, .resident_1_1_8_1_3))
    #expect(GemmVariant.choose(tokens: 256, hopper: false) == (.resident_1_1_8_1_3, .resident_1_1_8_1_3))
    #expect(GemmVariant.choose(tokens: 257, hopper: false) == (.staged_2_4_8_2, .staged_2_4_8_2))
    // Session 22's run 77: 32-token tiles with six consumer warps a scheduler at 256–799 tokens; 200–735 since run 90.
    let thirtyTwo = GemmVariant.registered_1_32_4_3_1_1_2_1_0_24_0_2_1
    #expect(GemmVariant.choose(tokens: 200) == (thirtyTwo, thirtyTwo) && GemmVariant.choose(tokens: 735) == (thirtyTwo, thirtyTwo))
    #expect(GemmVariant.choose(tokens: 576, hopper: false) == (.staged_2_4_8_2, .staged_2_4_8_2))
    // Session 20's run 67: 64-token narrow tiles, pipelined, at 577–1280 tokens; since runs 71–74 two blocks an SM,
    // from 288; since runs 77–79 from 1184; since runs 80–81 three consumer warpgroups with one A-fragment buffer, at
    // 1088–1407; since session 28 with n32, n40, n48 and n64 (run 93's A/B, run 95's stage check).
    let narrow = GemmVariant.registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1
    #expect(GemmVariant.choose(tokens: 1088) == (narrow, narrow) && GemmVariant.choose(tokens: 1407) == (narrow, narrow))
    let fortyEightPair = GemmVariant.choose(tokens: 736)
    #expect(fortyEightPair.gemm1 == .registered_1_48_4_3_1_1_2_1_0_16_0_2_1 && fortyEightPair == GemmVariant.choose(tokens: 1087))
    #expect(GemmVariant.choose(tokens: 288, hopper: false) == (.staged_2_4_8_2, .staged_2_4_8_2))
    #expect(narrow.tileRows == 64 && narrow.roundedWidths && narrow.usesTensorCopies && narrow.consumerWarpgroups == 3)
    #expect(GemmVariant.choose(tokens: 1024, hopper: false) == (.staged_2_4_8_2, .staged_2_4_8_2))
    #expect(GemmVariant.choose(tokens: 2048, hopper: false) == (.staged_2_4_8_2, .staged_2_4_8_2))
    // Session 21's runs 70–72: 96-token tiles at 1281–2304 tokens (since run 81 five consumer warpgroups a block, at
    // 1408–2687), 256-token tiles from 4096 (128 rows an expert; gone since runs 84–85).
    let ninetySix = GemmVariant.registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1
    #expect(GemmVariant.choose(tokens: 1408) == (ninetySix, ninetySix) && GemmVariant.choose(tokens: 2687) == (ninetySix, ninetySix))
    #expect(GemmVariant.choose(tokens: 2688) == (.registered_1_128_4_4_1_1_2_1_0_16_0_1_1, .registered_1_128_4_4_1_1_2_1_0_16_0_1_1))
    #expect(GemmVariant.choose(tokens: 3199) == (.registered_1_128_4_4_1_1_2_1_0_16_0_1_1, .registered_1_128_4_4_1_1_2_1_0_16_0_1_1))
    // Runs 84–85: 192-token tiles from 3072; runs 89–90: from 3200, with rounded widths (n128, n160, n192) to 5375,
    // n64 / n128 / n192 beyond; run 91: rounded widths with fitted tiles at every size from 3200.
    let roundedPair = (GemmVariant.registered_1_192_4_3_1_1_2_1_0_16_0_1_1, GemmVariant.registered_1_192_4_3_1_1_2_1_0_16_0_1_1)
    #expect(GemmVariant.choose(tokens: 3200) == roundedPair && GemmVariant.choose(tokens: 5375) == roundedPair)
    #expect(GemmVariant.choose(tokens: 5376) == roundedPair && GemmVariant.choose(tokens: 32768) == roundedPair)
    #expect(GemmVariant.choose(tokens: 32768).gemm1.usesTensorCopies && GemmVariant.choose(tokens: 1280).gemm1.roundedWidths)
    #expect(GemmVariant.choose(tokens: 32768, hopper: false) == (.staged_1_8_8_2, .staged_1_8_8_2))
    #expect(!GemmVariant.choose(tokens: 4096, hopper: false).gemm1.needsHopper)
    for tokens in [1, 8, 64, 65, 199, 200, 735, 736, 1087, 1088, 1407, 1408, 2688, 3199, 3200, 5375, 5376, 40000] {
        let pair = GemmVariant.choose(tokens: tokens)
        #expect(pair.gemm1.tileRows == pair.gemm2.tileRows)
    }
    #expect(GemmVariant.staged_2_8_8_3.tileRows == 64)
    #expect(GemmVariant.staged_2_8_8_3.warps == 8)
    #expect(GemmVariant.staged_2_4_8_2.stages == 2)
    #expect(GemmVariant.resident_1_1_2_4_3.warps == 8)
    #expect(GemmVariant.resident_1_1_2_2_4.ringSlots == 4)
    #expect(GemmVariant.resident_1_1_4_2_3.rowGroupsPerBlock == 4)
    #expect(GemmVariant.resident_1_1_8_1_3.kind == .resident)
    #expect(GemmVariant.staged_1_8_8_2.kind == .staged)
    // One activation row (5776 B) + split-K partials (8 warps × 512 B) + 8 warps × 3 slots × 2560 B.
    #expect(GemmVariant.resident_1_1_4_2_3.sharedBytes(k: 2880, residentRows: 1) == 5776 + 4096 + 8 * 3 * 2560)
    #expect(GemmVariant.staged_2_4_8_2.rowGroupsPerBlock == 16)
    #expect(GemmVariant.staged_1_8_8_2.rowGroupsPerBlock == 8)
    #expect(GemmVariant.warpgroup_2_2_64_3.rowGroupsPerBlock == 16)  // 2 warpgroups × 2 × 64 rows = 256 rows
    #expect(GemmVariant.warpgroup_2_2_64_3.warps == 8)
    #expect(GemmVariant.decoded_2_2_128_4.tileRows == 128)
    #expect(GemmVariant.warpgroup_2_2_64_3.sharedBytes(k: 2880, residentRows: 64) <= 227 * 1024)
    #expect(GemmVariant.warpgroup_2_2_64_3.needsHopper && !GemmVariant.staged_1_8_8_2.needsHopper)
    // Decoded kernels: 4 slots of [N × 64 bf16 | 512 B codes + 128 B scales per group] + 2 decoded chunks.
    #expect(GemmVariant.decoded_2_2_128_4.kind == .decoded && GemmVariant.decoded_2_2_128_4.needsHopper)
    #expect(GemmVariant.decoded_2_2_128_4.rowGroupsPerBlock == 16 && GemmVariant.decoded_2_2_128_4.warps == 8)
    #expect(GemmVariant.decoded_2_2_128_4.tileRows == 128 && GemmVariant.decoded_2_2_128_4.stages == 4)
    #expect(GemmVariant.decoded_2_2_128_4.sharedBytes(k: 2880, residentRows: 128) == 4 * (16384 + 16 * 640) + 2 * 16 * 2048)
    // Registered kernels: one producer warpgroup; load slots of [N × 64 bf16 activations | the block's codes and
    // scales, 640 B a 16-row group] on 1 KB, then a FULL and an EMPTY mbarrier (8 B each) a slot, after 1 KB of alignment
    // slack.
    let narrow64 = GemmVariant.registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1, four = GemmVariant.registered_1_128_4_4_1_1_2_1_0_16_0_1_1
    let oneNinetyTwo = GemmVariant.registered_1_192_4_3_1_1_2_1_0_0_0_1_1
    for variant in [narrow64, four, oneNinetyTwo] {
        #expect(variant.kind == GemmVariant.Kind.registered, "\(variant)")
        #expect(variant.needsHopper && variant.usesTensorCopies, "\(variant)")
        #expect(variant.stages == 4, "\(variant)")
    }
    // Four consumer warpgroups of 64 rows: 20 warps, 256 rows a block.
    #expect(four.warps == 20 && four.consumerWarpgroups == 4)
    #expect(four.rowGroupsPerBlock == 16 && four.tileRows == 128)
    #expect(four.sharedBytes(k: 2880, residentRows: 128) == 1024 + 4 * (128 * 64 * 2 + 16 * 640) + 4 * 16)
    // 64-token narrow tiles, two blocks an SM (K = 2) of three consumer warpgroups with one A-fragment buffer (F = 1):
    // 192 rows a block, slots of 64 activation rows and 12 groups (15,872 B: 16 KB); two blocks' shared memory fits an SM.
    #expect(narrow64.blocksPerSM == 2 && narrow64.warps == 16 && narrow64.rowGroupsPerBlock == 12 && narrow64.tileRows == 64)
    #expect(narrow64.roundedWidths && four.roundedWidths && !oneNinetyTwo.roundedWidths && narrow64.consumerWarpgroups == 3)
    #expect(narrow64.fragmentBuffers == 1 && four.fragmentBuffers == 2 && oneNinetyTwo.fragmentBuffers == 2)
    // The widths each registered kernel multiplies at (gemm_registered's lists), which fitted tiles take.
    #expect(narrow64.wgmmaWidths == [32, 40, 48, 64] && four.wgmmaWidths == [96, 128] && oneNinetyTwo.wgmmaWidths == [64, 128, 192])
    #expect(GemmVariant.registered_1_32_4_3_1_1_2_1_0_24_0_2_1.wgmmaWidths == [16, 24, 32])
    #expect(GemmVariant.registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1.wgmmaWidths == [48, 64, 80, 96])
    #expect(GemmVariant.registered_1_192_4_3_1_1_2_1_0_16_0_1_1.wgmmaWidths == [128, 160, 192])
    #expect(GemmVariant.resident_1_1_8_1_3.wgmmaWidths.isEmpty && GemmVariant.staged_1_8_8_2.wgmmaWidths.isEmpty)
    for variant in GemmVariant.allCases where variant.kind == .registered {
        #expect(RoutingPlan.validWidths(variant.wgmmaWidths, tileRows: variant.tileRows) && !variant.wgmmaWidths.isEmpty, "\(variant)")
        #expect(variant.wgmmaWidths.count <= Int(MOE_TILE_WIDTHS), "\(variant)")
    }
    #expect(LaunchPlan(tokens: 8192, config: MoEPreset.gptOss120b.config).tileWidths
        == (LaunchPlan.fitTilesSwitch ? [128, 160, 192] : []))
    #expect(LaunchPlan(tokens: 1, config: MoEPreset.gptOss120b.config).tileWidths.isEmpty)
    #expect(narrow64.sharedBytes(k: 2880, residentRows: 64) == 1024 + 4 * 16 * 1024 + 4 * 16)
    #expect(2 * narrow64.sharedBytes(k: 2880, residentRows: 64) <= 227 * 1024)
    #expect(four.blocksPerSM == 1 && oneNinetyTwo.blocksPerSM == 1)
    // 96-token tiles: five consumer warpgroups and one block an SM with one A-fragment buffer, 20 row groups a block
    // (GEMM 1 of 120b: 18 blocks across, GEMM 2: 9), slots of 96 activation rows (25,088 B: 25 KB).
    #expect(ninetySix.warps == 24 && ninetySix.rowGroupsPerBlock == 20 && ninetySix.tileRows == 96 && ninetySix.roundedWidths)
    #expect(ninetySix.fragmentBuffers == 1 && ninetySix.blocksPerSM == 1 && ninetySix.activationBoxRows == 32)
    #expect(ninetySix.sharedBytes(k: 2880, residentRows: 96) == 1024 + 6 * 25 * 1024 + 6 * 16 && ninetySix.stages == 6)
    let ninetySixPlan = LaunchPlan(tokens: 2048, config: MoEPreset.gptOss120b.config, variant: ninetySix)
    #expect(ninetySixPlan.gemm1Shape.grid.x == 18 && ninetySixPlan.gemm2Shape.grid.x == 9)
    #expect(ninetySixPlan.gemm1Shape.block == 768 && ninetySixPlan.maxTiles >= 2048 * 4 / 96)
    // 32-token tiles: six consumer warps a scheduler, as three warpgroups in two blocks an SM; boxes of 32 activation
    // rows; two blocks' shared memory fits an SM.
    #expect(thirtyTwo.tileRows == 32 && thirtyTwo.consumerWarpgroups == 3 && thirtyTwo.blocksPerSM == 2 && thirtyTwo.warps == 16)
    #expect(thirtyTwo.activationBoxRows == 32 && thirtyTwo.roundedWidths && thirtyTwo.rowGroupsPerBlock == 12)
    // Slots of 32 activation rows and 12 groups' codes and scales (11776 B) take 12 KB each.
    let thirtyTwoSlots = 1024 + 4 * 12 * 1024 + 4 * 16
    #expect(thirtyTwo.sharedBytes(k: 2880, residentRows: 32) == thirtyTwoSlots)
    #expect(2 * thirtyTwo.sharedBytes(k: 2880, residentRows: 32) <= 227 * 1024)
    let thirtyTwoPlan = LaunchPlan(tokens: 512, config: MoEPreset.gptOss120b.config, variant: thirtyTwo)
    #expect(thirtyTwoPlan.gemm1Shape.grid.x == 30 && thirtyTwoPlan.gemm2Shape.grid.x == 15)
    #expect(thirtyTwoPlan.maxTiles >= 128 + 512 * 4 / 32)
    // 48-token tiles: the same launch, boxes of 16 activation rows; slots of 48 rows and 12 groups (13824 B) take 14 KB.
    let fortyEight = GemmVariant.registered_1_48_4_3_1_1_2_1_0_16_0_2_1
    #expect(fortyEight.tileRows == 48 && fortyEight.activationBoxRows == 16 && fortyEight.blocksPerSM == 2)
    let fortyEightSlots = 1024 + 4 * 14 * 1024 + 4 * 16
    #expect(fortyEight.sharedBytes(k: 2880, residentRows: 48) == fortyEightSlots)
    #expect(2 * fortyEight.sharedBytes(k: 2880, residentRows: 48) <= 227 * 1024)
    #expect(LaunchPlan(tokens: 1024, config: MoEPreset.gptOss120b.config, variant: fortyEight).maxTiles >= 128 + 1024 * 4 / 48)
    // 192-token tiles: three consumer warpgroups, 192 rows a block, slots of 192 activation rows and 12 groups (32,256 B:
    // 32 KB); one block an SM.
    #expect(oneNinetyTwo.warps == 16 && oneNinetyTwo.rowGroupsPerBlock == 12 && oneNinetyTwo.activationBoxRows == 64)
    #expect(oneNinetyTwo.fragmentBuffers == 2 && oneNinetyTwo.blocksPerSM == 1 && oneNinetyTwo.tileRows == 192)
    #expect(oneNinetyTwo.sharedBytes(k: 2880, residentRows: 192) == 1024 + 4 * 32 * 1024 + 4 * 16)
    let oneNinetyTwoPlan = LaunchPlan(tokens: 8192, config: MoEPreset.gptOss120b.config, variant: oneNinetyTwo)
    #expect(oneNinetyTwoPlan.gemm1Shape.grid.x == 30 && oneNinetyTwoPlan.gemm2Shape.grid.x == 15)
    #expect(oneNinetyTwoPlan.maxTiles == 128 + 8192 * 4 / 192)
    // Every registered kernel has tensor copies and rounded widths (session 25) but the 192-token one's plain form, which
    // has the same launch.
    let rounded192 = GemmVariant.registered_1_192_4_3_1_1_2_1_0_16_0_1_1
    let registered: [GemmVariant] = [narrow64, thirtyTwo, fortyEight, ninetySix, four, oneNinetyTwo, rounded192]
    #expect(GemmVariant.allCases.filter { $0.kind == .registered } == registered)
    #expect(GemmVariant.allCases.filter(\.usesTensorCopies) == registered)
    #expect(GemmVariant.allCases.filter { $0.kind == .registered && !$0.roundedWidths } == [oneNinetyTwo])
    #expect(rounded192.warps == oneNinetyTwo.warps && rounded192.stages == oneNinetyTwo.stages && rounded192.fragmentBuffers == 2)
    #expect(rounded192.sharedBytes(k: 2880, residentRows: 192) == oneNinetyTwo.sharedBytes(k: 2880, residentRows: 192))
    for variant in GemmVariant.allCases where variant.usesWarpgroups {
        #expect(variant.sharedBytes(k: 2880, residentRows: variant.tileRows) <= 227 * 1024, "\(variant)")
    }
}

@Test func gptOss120bLaunchesFitInHopperSharedMemory() {
    let config = MoEPreset.gptOss120b.config
    for tokens in [1, 2, 3, 4, 8, 32, 128, 512, 2048, 8192, 32768] {
        let plan = LaunchPlan(tokens: tokens, config: config)
        #expect(plan.gemm1Shape.sharedBytes <= 227 * 1024)
        #expect(plan.gemm2Shape.sharedBytes <= 227 * 1024)
        #expect(plan.gemm1Shape.grid.x * plan.gemm1Variant.rowGroupsPerBlock * 16 >= 2 * config.intermediate)
        #expect(plan.gemm2Shape.grid.x * plan.gemm2Variant.rowGroupsPerBlock * 16 >= config.hidden)
        #expect(throws: Never.self) { try plan.validate(maxSharedPerBlock: 227 * 1024) }
        #expect(plan.gemm1Shape.grid.y == plan.maxTiles)
    }
    let decode = LaunchPlan(tokens: 1, config: config)
    // Decode grids: 360 blocks each (2.7 per SM on 132 SMs, resident at once).
    #expect(decode.gemm1Shape.grid.x * decode.gemm1Shape.grid.y == 360)
    #expect(decode.gemm2Shape.grid.x * decode.gemm2Shape.grid.y == 360)
    #expect(3 * decode.gemm1Shape.sharedBytes <= 227 * 1024 && 3 * decode.gemm2Shape.sharedBytes <= 227 * 1024)
    #expect(decode.smallRouting && decode.fusedRouting)
    // 2–4 tokens: 4-warp whole-K blocks for both GEMMs (bulk rings); by shared memory three per SM at 4 tokens (4
    // activation rows and four 4-slot rings: 64,064 B), four at 2; the tile hand-over and the fused sum as before.
    let four = LaunchPlan(tokens: 4, config: config)
    #expect(four.gemm1Variant == .resident_1_1_4_1_4 && four.gemm2Variant == .resident_1_1_4_1_4)
    #expect(four.gemm1Shape.block == 128 && four.gemm1Shape.grid.x == 90 && four.gemm2Shape.grid.x == 45)
    #expect(four.gemm1Shape.sharedBytes == 4 * 5776 + 4 * 4 * 2560 && 3 * four.gemm1Shape.sharedBytes <= 227 * 1024)
    #expect(4 * LaunchPlan(tokens: 2, config: config).gemm1Shape.sharedBytes <= 227 * 1024)
    #expect(four.tileHandOver && four.fusedReduce)
    #expect(decode.routeSmallKernel == "moe_route_small_1")
    #expect(LaunchPlan(tokens: 5, config: config).routeSmallKernel == "moe_route_small_8")
    #expect(decode.fusedRouterSlices == 3)  // 360 segments of 8 values, ≤ 128 per slice
    #expect(decode.routeSmallShape.grid == (16, 3, 1))
    #expect(LaunchPlan(tokens: 8, config: config).fusedRouting)
    #expect(!LaunchPlan(tokens: 9, config: config).fusedRouting && LaunchPlan(tokens: 9, config: config).smallRouting)
    #expect(decode.partialLogitFloats >= 3 * 128)
    #expect(decode.maxTiles == 4)  // 4 experts, one row each
    #expect(decode.residentRows == 1)
    #expect(decode.finishShape.sharedBytes == 4 * (128 + 8 + 256 + 1 + 128))
    #expect(LaunchPlan(tokens: 32, config: config).smallRouting)
    #expect(LaunchPlan(tokens: 128, config: config).smallRouting)  // 64 KB of logits + 8 KB of chunk rows
    #expect(LaunchPlan(tokens: 128, config: config).finishShape.sharedBytes <= 200 * 1024)
    #expect(!LaunchPlan(tokens: 129, config: config).smallRouting)
    // More than 4096 slots (a warp's 4 chunks of 32 × 32 warps) take the multi-kernel plan.
    #expect(!LaunchPlan(tokens: 128, config: MoEConfig(hidden: 64, intermediate: 64, experts: 64, topK: 33)).smallRouting)
    // Huge expert counts do not fit the last block's shared memory: the multi-kernel path takes over.
    #expect(!LaunchPlan(tokens: 32, config: MoEConfig(hidden: 64, intermediate: 64, experts: 4096, topK: 4)).smallRouting)
}

@Test func launchesThatCannotFitSharedMemoryAreATypedError() {
    // k = E = 4096: the plan scatter stages 32·k ids and weights (1 MiB).
    let plan = LaunchPlan(tokens: 64, config: MoEConfig(hidden: 64, intermediate: 64, experts: 4096, topK: 4096))
    #expect(throws: CUDAError.self) { try plan.validate(maxSharedPerBlock: 227 * 1024) }
}

/// The router splits K at small batches (4 expert tiles of 32 × one 64-token tile leave most SMs idle), never below
/// 8 steps of 32 per block, and not at all once the tiles fill the target; its partial logits always fit the
/// capacity expert parallelism allocates, and its tiles the arrival counters.
@Test func routerSplitsKOnlyWhereTheTilesLeaveTheGPUIdle() {
    let config = MoEPreset.gptOss120b.config  // H = 2880: 90 steps of 32
    // The default target (a run with MOE_CUDA_ROUTER_BLOCKS set moves the instance plans: the next test covers it).
    let target = Int(MOE_ROUTER_BLOCK_TARGET)
    #expect(LaunchPlan.routerSplits(tokens: 1, config: config, target: target) == 11)  // min(90 / 8, 128 / 4)
    #expect(LaunchPlan.routerShape(tokens: 1, splits: LaunchPlan.routerSplits(tokens: 1, config: config, target: target), config: config).grid == (4, 1, 11))
    #expect(LaunchPlan.routerSplits(tokens: 128, config: config, target: target) == 11)  // 8 tiles: 128 / 8 = 16, capped at 11
    #expect(LaunchPlan.routerSplits(tokens: 512, config: config, target: target) == 4)  // 32 tiles
    #expect(LaunchPlan.routerSplits(tokens: 1024, config: config, target: target) == 2)  // 64 tiles
    #expect(LaunchPlan.routerSplits(tokens: 2048, config: config, target: target) == 1)
    #expect(LaunchPlan.routerSplits(tokens: 2048, config: config, target: 256) == 2)  // session 29's target
    #expect(LaunchPlan.routerSplits(tokens: 8192, config: config, target: target) == 1)
    #expect(LaunchPlan(tokens: 8192, config: config).routerPartialFloats == 0)
    for preset in [MoEPreset.gptOss120b, .gptOss20b, .tiny] {
        let c = preset.config
        for tokens in [1, 2, 7, 31, 32, 33, 63, 64, 65, 100, 128, 300, 512, 1000, 2048, 4097, 8192, 32768] {
            let plan = LaunchPlan(tokens: tokens, config: c)
            #expect(plan.routerSplits >= 1 && plan.routerSplits <= max(1, c.hidden / 256))
            #expect(plan.routerPartialFloats <= LaunchPlan.routerPartialCapacity(c))
            let shape = plan.routerShape
            if plan.routerSplits > 1 { #expect(shape.grid.x * shape.grid.y <= Int(MOE_ROUTER_TILE_COUNTERS)) }
            #expect(shape.grid.x * (shape.block / 4) >= c.experts && shape.grid.y * 64 >= tokens)  // block / 4 experts a block
            #expect(shape.sharedBytes <= 96 * 1024)
        }
    }
}

/// MOE_CUDA_ROUTER_BLOCKS (an A/B knob) moves the block target: more slices where tiles are few, never a split grid
/// past the arrival counters or a partial buffer past the capacity sized by the same target; a bad value is an error
/// naming the variable, not the default run under its name.
@Test func routerBlockTargetMovesTheSplitsWithinTheBuffers() throws {
    let config = MoEPreset.gptOss120b.config
    #expect(LaunchPlan.routerSplits(tokens: 2048, config: config, target: 1024) == 8)  // 128 tiles
    #expect(LaunchPlan.routerSplits(tokens: 1024, config: config, target: 512) == 8)
    #expect(LaunchPlan.routerSplits(tokens: 512, config: config, target: 1024) == 11)  // capped at H / 32 / 8
    #expect(LaunchPlan.routerSplits(tokens: 4096, config: config, target: 1024) == 4)  // 256 tiles, the counters' number
    #expect(LaunchPlan.routerSplits(tokens: 4160, config: config, target: 1024) == 1)  // 260 tiles: past the counters
    #expect(LaunchPlan.routerSplits(tokens: 2048, config: config, target: Int(MOE_ROUTER_BLOCK_TARGET)) == 1)
    for preset in [MoEPreset.gptOss120b, .gptOss20b, .tiny] {
        let c = preset.config
        for target in [64, 128, 256, 512, 1000, 1024] {
            for tokens in [1, 9, 64, 65, 300, 512, 1000, 2048, 4096, 4097, 8192, 32768] {
                let splits = LaunchPlan.routerSplits(tokens: tokens, config: c, target: target)
                let tiles = LaunchPlan.routerExpertTiles(c) * ((tokens + 63) / 64)
                #expect(splits >= 1 && splits <= max(1, c.hidden / 256))
                if splits > 1 {
                    #expect(tiles <= Int(MOE_ROUTER_TILE_COUNTERS))
                    #expect(splits * tokens * c.experts <= LaunchPlan.routerPartialCapacity(c, target: target))
                }
            }
        }
    }
    #expect(LaunchPlan.parsedRouterBlockTarget("512") == 512 && LaunchPlan.parsedRouterBlockTarget(nil) == nil)
    for bad in ["0", "63", "1025", "many", "", "512 "] {
        #expect(LaunchPlan.parsedRouterBlockTarget(bad) == nil)
        #expect(throws: CUDAError.self) { try LaunchPlan.validateSwitches(routerBlocks: bad, fusedPlan: nil, inPlaceCounts: nil) }
    }
    do {
        try LaunchPlan.validateSwitches(routerBlocks: "many", fusedPlan: nil, inPlaceCounts: nil)
        Issue.record("MOE_CUDA_ROUTER_BLOCKS=many was accepted")
    } catch {
        #expect("\(error)".contains("MOE_CUDA_ROUTER_BLOCKS=many") && "\(error)".contains("64 to 1024"))
    }
    try LaunchPlan.validateSwitches(routerBlocks: "1024", fusedPlan: nil, inPlaceCounts: nil)
    try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: nil, inPlaceCounts: nil)
}

/// The wide router (128 experts a block, x read once) only where K is not split, E > 32 and the batch gives at least
/// 128 tiles of 64 tokens; its shape matches moe_routing.cu's router_mma<128> (512 threads, 5 stages of 192 rows of 80
/// bytes; with half blocks router_mma<128, 32>: 256 threads, the same stages), the narrow one router_mma<32> (128
/// threads, 6 stages of 96 rows), which half blocks leave alone. Either can be forced.
@Test func theWideRouterOnlyWhereTheBatchFillsTheGPU() {
    let big = MoEPreset.gptOss120b.config, small = MoEPreset.gptOss20b.config
    #expect(!LaunchPlan.routerIsWide(tokens: 8128, splits: 1, config: big, forced: nil))
    #expect(LaunchPlan.routerIsWide(tokens: 8192, splits: 1, config: big, forced: nil))
    #expect(LaunchPlan.routerIsWide(tokens: 32768, splits: 1, config: big, forced: nil))
    #expect(!LaunchPlan.routerIsWide(tokens: 32768, splits: 2, config: big, forced: nil))
    #expect(!LaunchPlan.routerIsWide(tokens: 32768, splits: 1, config: small, forced: nil))  // E = 32: one tile already
    #expect(LaunchPlan.routerIsWide(tokens: 1, splits: 11, config: small, forced: "wide"))
    #expect(!LaunchPlan.routerIsWide(tokens: 32768, splits: 1, config: big, forced: "narrow"))
    let half = LaunchPlan.routerShape(tokens: 8192, splits: 1, config: big, halfBlocks: true)
    #expect(half.grid == (1, 128, 1) && half.block == 256 && half.sharedBytes == 5 * 192 * 80)
    // The kernels' launch bounds are the blocks the host launches (a block past them fails to launch).
    let routing = String(decoding: KernelSource.routing.bytes, as: UTF8.self)
    #expect(routing.contains("__launch_bounds__(256, 2) moe_router_mma_wide(") && routing.contains("__launch_bounds__(512) moe_router_mma_wide("))
    #expect(LaunchPlan.routerShape(tokens: 2048, splits: 1, config: big, halfBlocks: true).block == 128)
    if LaunchPlan.routerSwitch == nil && !KernelBuildSwitches.wideRouterHalfBlocks {
        let wide = LaunchPlan(tokens: 8192, config: big).routerShape
        #expect(wide.grid == (1, 128, 1) && wide.block == 512 && wide.sharedBytes == 5 * 192 * 80)
        let narrow = LaunchPlan(tokens: 2048, config: big).routerShape
        let splits = LaunchPlan.routerSplits(tokens: 2048, config: big)  // 1 at the default block target
        #expect(narrow.grid == (4, 32, splits) && narrow.block == 128 && narrow.sharedBytes == 6 * 96 * 80)
    }
}

/// The router does the top-k itself (MOE_CUDA_ROUTER_TOPK=1) only where it is the wide one, unsplit, with every expert in
/// its block, and a moe_topk would otherwise run: not at decode sizes, not with K split, not for E past 128.
@Test func theRouterTakesTheTopKOnlyWhereItHoldsWholeRowsOfLogits() {
    let big = MoEPreset.gptOss120b.config, small = MoEPreset.gptOss20b.config
    #expect(LaunchPlan(tokens: 8192, config: big).routerFusesTopK(switchOn: true, forced: nil))
    #expect(LaunchPlan(tokens: 32768, config: big).routerFusesTopK(switchOn: true, forced: nil))
    #expect(!LaunchPlan(tokens: 8192, config: big).routerFusesTopK(switchOn: false, forced: nil))
    #expect(!LaunchPlan(tokens: 2048, config: big).routerFusesTopK(switchOn: true, forced: nil))  // the narrow router
    #expect(!LaunchPlan(tokens: 32768, config: small).routerFusesTopK(switchOn: true, forced: nil))  // E = 32: narrow
    #expect(LaunchPlan(tokens: 8192, config: small).routerFusesTopK(switchOn: true, forced: "wide"))
    #expect(!LaunchPlan(tokens: 8, config: big).routerFusesTopK(switchOn: true, forced: "wide"))  // decode routing
    #expect(!LaunchPlan(tokens: 300, config: small).routerFusesTopK(switchOn: true, forced: "wide"))  // K split
    var many = big
    many.experts = 256
    #expect(!LaunchPlan(tokens: 32768, config: many).routerFusesTopK(switchOn: true, forced: nil))
    // Expert parallelism asks with its rank's rows and the global plan's split.
    #expect(LaunchPlan.routerTakesTopK(tokens: 8192, splits: 1, config: big, switchOn: true, forced: nil))
    #expect(!LaunchPlan.routerTakesTopK(tokens: 8192, splits: 2, config: big, switchOn: true, forced: "wide"))  // wide, but split
}

/// The k-way sum rides on GEMM 2's last blocks only at decode sizes with the resident kernels.
@Test func theSumIsFusedIntoGemm2OnlyAtDecodeSizes() {
    let config = MoEPreset.gptOss120b.config
    #expect(LaunchPlan(tokens: 1, config: config).fusedReduce)
    #expect(LaunchPlan(tokens: 64, config: config).fusedReduce)
    #expect(!LaunchPlan(tokens: 65, config: config).fusedReduce)
    #expect(!LaunchPlan(tokens: 2048, config: config).fusedReduce)
    #expect(!LaunchPlan(tokens: 8, config: config, variant: .staged_2_4_8_2).fusedReduce)
}

/// GEMM 2 takes GEMM 1's tiles one by one where both run resident kernels (same tile schedule, per-tile counters) and
/// GEMM 1's last wave is a large share of it (decode sizes up to 8 tokens); with registered kernels where GEMM 1 runs
/// at most 8 waves by arithmetic (gemm1Waves; `MOE_CUDA_HANDOVER_REGISTERED` forces it), through their `_handover`
/// entry points.
@Test func gemm2TakesTilesOneByOneWhereGemm1RunsFewWaves() {
    let config = MoEPreset.gptOss120b.config
    #expect(LaunchPlan(tokens: 1, config: config).tileHandOver)
    #expect(LaunchPlan(tokens: 8, config: config).tileHandOver)
    #expect(!LaunchPlan(tokens: 9, config: config).tileHandOver)
    #expect(!LaunchPlan(tokens: 8, config: config).registeredHandOver)
    #expect(!LaunchPlan(tokens: 199, config: config).tileHandOver)
    // Session 26's measured points, by the arithmetic of gemm1Waves on 132 SMs: 20b 3.6 / 4.4 / 7.3 waves at 256 / 512 /
    // 1024 tokens (won), 120b 14.5 and more at 512 / 2048 / 8192 (lost).
    let small = MoEPreset.gptOss20b.config
    let waves = [256, 512, 1024].map { LaunchPlan(tokens: $0, config: small).gemm1Waves }
    #expect(abs(waves[0] - 960.0 / 264) < 1e-9 && abs(waves[1] - 576.0 / 132) < 1e-9 && abs(waves[2] - 960.0 / 132) < 1e-9, "\(waves)")
    #expect(LaunchPlan(tokens: 512, config: config).gemm1Waves > 14 && LaunchPlan(tokens: 2048, config: config).gemm1Waves > 17)
    let forced = LaunchPlan.registeredHandOverSwitch
    for tokens in [256, 512, 1024] {
        let plan = LaunchPlan(tokens: tokens, config: small)
        #expect(plan.registeredHandOver == (forced.map { $0 == "1" } ?? true), "20b T=\(tokens)")
    }
    for tokens in [256, 512, 2048, 8192, 32768] {
        let plan = LaunchPlan(tokens: tokens, config: config)
        #expect(plan.gemm1Variant.kind == .registered && plan.registeredHandOver == (forced.map { $0 == "1" } ?? false), "T=\(tokens)")
    }
    // Session 28's run 96: within those waves it lost at 80–96 rows an expert (20b at 640 / 700 / 768 tokens: 80 / 88 /
    // 96 rows) and won at 48, 64 and 128 (384 / 512 / 1024 tokens); session 29's run 99: won at 68 and 72 rows (544 / 576
    // tokens), level at 76 (608), lost when off at 100–120 (800–960). Off at 77–96.
    for (tokens, on) in [(384, true), (512, true), (544, true), (576, true), (608, true), (609, false), (640, false), (700, false),
                         (768, false), (769, true), (800, true), (960, true), (1024, true)] {
        let plan = LaunchPlan(tokens: tokens, config: small)
        #expect(plan.gemm1Waves <= 8, "20b T=\(tokens)")
        #expect(plan.registeredHandOver == (forced.map { $0 == "1" } ?? on), "20b T=\(tokens): \(plan.rowsPerExpert) rows")
    }
    // An expert-parallel rank's share or a smaller GPU changes the waves: half the SMs, twice the waves.
    let half = LaunchPlan(tokens: 1024, config: small, multiprocessors: 66)
    #expect(abs(half.gemm1Waves - 2 * waves[2]) < 1e-9 && half.registeredHandOver == (forced.map { $0 == "1" } ?? false))
}

/// GEMM 2 can be forced alone (experiments), but never onto a tile schedule of another height.
@Test func gemm2OverrideKeepsTheTileSchedule() {
    let config = MoEPreset.gptOss120b.config
    let forced = LaunchPlan(tokens: 8, config: config, gemm2: .resident_1_1_4_2_3)
    #expect(forced.gemm1Variant == .resident_1_1_8_1_3 && forced.gemm2Variant == .resident_1_1_4_2_3)
    let mismatched = LaunchPlan(tokens: 8, config: config, gemm2: .staged_2_4_8_2)
    #expect(mismatched.gemm2Variant == .resident_1_1_8_1_3)
}

/// Top-k runs a warp per token, 32 tokens a block, with each warp's logits and the block's histogram in shared memory
/// (moe_topk: 32·E floats when E ≤ MOE_TOPK_SHARED_EXPERTS, then E counters), small enough for its two blocks an SM.
@Test func topkStagesLogitsAndOneHistogramABlock() {
    for (preset, tokens) in [(MoEPreset.gptOss120b, 8192), (.gptOss20b, 33), (.tiny, 1000)] {
        let plan = LaunchPlan(tokens: tokens, config: preset.config)
        let e = preset.config.experts
        #expect(plan.topkShape.grid == ((tokens + 31) / 32, 1, 1) && plan.topkShape.block == 1024)
        #expect(plan.topkShape.sharedBytes == 32 * e * 4 + e * 4)
        #expect(2 * plan.topkShape.sharedBytes <= 227 * 1024)
    }
    let many = LaunchPlan(tokens: 64, config: MoEConfig(hidden: 64, intermediate: 64, experts: 2048, topK: 2))
    #expect(many.topkShape.sharedBytes == 2048 * 4)  // logits read from global memory past 1024 experts
}
