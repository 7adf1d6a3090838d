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

/// MOE_CUDA_PLAN_READY=1 applies where one block writes the plan and GEMM 1 is resident (decode batches), nowhere else;
/// any value but 0 or 1 is an error naming the variable.
@Test func thePlanWordIsForResidentGemmsAfterAOneBlockPlan() throws {
    let config = MoEPreset.gptOss120b.config
    for tokens in [1, 3, 8, 64, 128] {
        let plan = LaunchPlan(tokens: tokens, config: config)
        #expect(plan.fusedRouting || plan.smallRouting, "T = \(tokens)")
        #expect(plan.waitsOnPlanWord(switchValue: "1") == plan.gemm1Variant.isResident, "T = \(tokens)")
        #expect(!plan.waitsOnPlanWord(switchValue: nil) && !plan.waitsOnPlanWord(switchValue: "0"), "T = \(tokens)")
    }
    #expect(LaunchPlan(tokens: 1, config: config).waitsOnPlanWord(switchValue: "1"))
    for tokens in [512, 2048] {
        let plan = LaunchPlan(tokens: tokens, config: config)
        #expect(!plan.smallRouting && !plan.waitsOnPlanWord(switchValue: "1"), "T = \(tokens)")
    }
    for good in [nil, "0", "1"] { try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: nil, inPlaceCounts: nil, planReady: good) }
    for bad in ["2", "", "on", "1 "] {
        do {
            try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: nil, inPlaceCounts: nil, planReady: bad)
            Issue.record("MOE_CUDA_PLAN_READY=\(bad) was accepted")
        } catch {
            #expect("\(error)".contains("MOE_CUDA_PLAN_READY=\(bad)") && "\(error)".contains("plan-ready word"))
        }
    }
}
