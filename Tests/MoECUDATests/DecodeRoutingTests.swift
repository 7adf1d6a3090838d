import CCUDA
import MoECore
import Testing

@testable import MoECUDA

/// The marks a trace build times inside the decode kernels sit after the kernels' phases, each kernel's in the order of
/// its MOE_MARK_* indices, so a kernel writing mark i lands on the name the host prints for it.
@Test func traceMarksFollowTheKernelsMarkIndices() {
    typealias Phase = TokenBucket.Phase
    typealias Mark = TokenBucket.Mark
    #expect(Mark.routePartials.index == Int32(Phase.allCases.count))
    #expect(Phase.route.firstMark == Mark.routePartials.index)
    #expect(Mark.routeElected.index - Phase.route.firstMark == MOE_MARK_ROUTE_ELECTED)
    #expect(Mark.routeTopk.index - Phase.route.firstMark == MOE_MARK_ROUTE_TOPK)
    #expect(Mark.routeTiles.index - Phase.route.firstMark == MOE_MARK_ROUTE_TILES)
    #expect(Phase.gemm1.firstMark - Phase.route.firstMark == MOE_MARK_ROUTE_COUNT)
    for phase in [Phase.gemm1, .gemm2] {
        let marks = Mark.allCases.filter { $0.rawValue.hasPrefix(phase.rawValue + "·") }
        #expect(marks.count == Int(MOE_MARK_GEMM_COUNT), "\(phase)")
        #expect(marks.map(\.index) == (0..<MOE_MARK_GEMM_COUNT).map { phase.firstMark + $0 }, "\(phase)")
    }
    #expect(Phase.gemm2.firstMark - Phase.gemm1.firstMark == MOE_MARK_GEMM_COUNT)
    for phase in Phase.allCases where ![.route, .gemm1, .gemm2].contains(phase) { #expect(phase.firstMark == -1) }
    #expect(Mark.traceNames.count == Phase.allCases.count + Mark.allCases.count)
    #expect(Set(Mark.traceNames).count == Mark.traceNames.count)
}

/// MOE_CUDA_ROUTE_CLUSTER=8|16 routes decode batches in one cluster: every expert's slices over the cluster's warps, block 0
/// holding the partials, the bias and x (or the plan); past 200 KiB a block the one-launch router stays, and any value but
/// 8 or 16 is an error naming the variable.
@Test func theClusterRouterIsOneClusterWithBlockZerosPartials() throws {
    let big = MoEPreset.gptOss120b.config, small = MoEPreset.gptOss20b.config
    for tokens in [1, 3, 8] {
        let plan = LaunchPlan(tokens: tokens, config: big)
        #expect(plan.fusedRouting)
        #expect(plan.routeCluster(switchValue: nil) == nil && plan.routeCluster(switchValue: "8") == 8)
        let bound = tokens == 3 ? 4 : tokens
        #expect(plan.routeSmallKernel(cluster: 8) == "moe_route_cluster_\(bound)")
        #expect(plan.routeSmallKernel(cluster: nil) == "moe_route_small_\(bound)")
        let shape = plan.routeSmallShape(cluster: 8)
        #expect(shape.grid == (8, 1, 1) && shape.block == 512 && shape.cluster == 8)
        // 8 blocks × 16 warps = 128 = E: one slice an expert
        #expect(shape.sharedBytes == 4 * (tokens * 128 + 128) + 16 + tokens * 2880 * 2)
        #expect(plan.routeSmallShape(cluster: nil).cluster == 1)
    }
    // gpt-oss-20b: 32 experts over 16 × 16 warps, eight slices of H each
    let shape = LaunchPlan(tokens: 8, config: small).routeSmallShape(cluster: 16)
    #expect(shape.grid == (16, 1, 1) && shape.cluster == 16)
    #expect(shape.sharedBytes == 4 * (8 * 8 * 32 + 32) + 16 + 8 * 2880 * 2)
    // a plan larger than x (tiny hidden): block 0's plan sets the size
    let narrow = LaunchPlan(tokens: 8, config: MoEConfig(hidden: 32, intermediate: 32, experts: 64, topK: 4))
    #expect(narrow.routeSmallShape(cluster: 8).sharedBytes == 4 * (2 * 8 * 64 + 64) + narrow.smallRoutingPlanBytes)
    // past 200 KiB a block: the one-launch router
    let wide = LaunchPlan(tokens: 8, config: MoEConfig(hidden: 16384, intermediate: 256, experts: 128, topK: 4))
    #expect(wide.fusedRouting && wide.routeCluster(switchValue: "8") == nil)
    for good in [nil, "8", "16"] {
        try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: nil, inPlaceCounts: nil, routeCluster: good)
    }
    for bad in ["4", "", "eight", "8 ", "32"] {
        #expect(LaunchPlan(tokens: 1, config: big).routeCluster(switchValue: bad) == nil)
        do {
            try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: nil, inPlaceCounts: nil, routeCluster: bad)
            Issue.record("MOE_CUDA_ROUTE_CLUSTER=\(bad) was accepted")
        } catch {
            #expect("\(error)".contains("MOE_CUDA_ROUTE_CLUSTER=\(bad)") && "\(error)".contains("8 or 16"))
        }
    }
}
