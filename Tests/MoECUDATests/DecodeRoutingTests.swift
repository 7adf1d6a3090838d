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
