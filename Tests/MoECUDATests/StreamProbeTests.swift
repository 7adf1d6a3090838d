import Testing

import MoECore
@testable import MoECUDA

/// The probe's sweep at gpt-oss-120b's GEMM 1 size on an H200-like SM count: the resident geometry comes first, every
/// layout reads whole steps, stays within the requested bytes, fits the block's shared memory, and the one-wave grids
/// keep all their blocks resident.
@Test func theStreamProbeSweepsOnlyLayoutsThatFitAndReadWholeSteps() {
    let bytes = 4 * (5760 * 2880 / 2 + 5760 * 2880 / 32)
    let layouts = StreamProbe.layouts(bytes: bytes, multiprocessors: 132, maxSharedPerBlock: 227 * 1024, residentBlocks: 360)
    #expect(layouts.first == StreamProbe.Layout(
        copy: .perLane, blocks: 360, warpsPerBlock: 8, stepBytes: 2048, slots: 2, regionBytes: 6 * 2048))  // 12.0 of 12.24 KB
    for layout in layouts {
        #expect(layout.regionBytes % layout.stepBytes == 0 && layout.regionBytes >= layout.stepBytes, "\(layout)")
        #expect(abs(layout.totalBytes - bytes) <= layout.warps * layout.stepBytes / 2, "\(layout)")  // nearest whole step
        #expect(abs(layout.totalBytes - bytes) < bytes / 4, "\(layout)")
        #expect(layout.sharedBytes <= 227 * 1024, "\(layout)")
        if layout.copy != .registers && layout.blocks % 132 == 0 {
            #expect(layout.blocks / 132 * (layout.sharedBytes + 1024) <= 228 * 1024, "\(layout)")
        }
    }
    #expect(Set(layouts.map(\.copy)) == [.perLane, .bulk, .registers])
    // 8 KB slots × 8 for one 8-warp block a SM is 520 KB: never offered
    #expect(!layouts.contains { $0.stepBytes == 8192 && $0.slots == 8 })
    #expect(layouts.contains { $0.copy == .bulk && $0.blocks == 132 && $0.warpsPerBlock == 8 && $0.stepBytes == 4096 && $0.slots == 6 })
    // GEMM 2's size at its 1-token grid (360 × 8 warps): 6.1 KB a warp is read as 3 steps of 2 KB, not 2.
    let gemm2 = 4 * (2880 * 2880 / 2 + 2880 * 2880 / 32)
    let down = StreamProbe.layouts(bytes: gemm2, multiprocessors: 132, maxSharedPerBlock: 227 * 1024, residentBlocks: 360)
    #expect(down.first?.regionBytes == 3 * 2048 && down.first!.totalBytes > gemm2)
    // A smaller SM (99 KB) drops the deep rings.
    let small = StreamProbe.layouts(bytes: bytes, multiprocessors: 132, maxSharedPerBlock: 99 * 1024, residentBlocks: 360)
    #expect(small.count < layouts.count && small.allSatisfy { $0.sharedBytes <= 99 * 1024 })
}

/// Every ring depth the sweep uses is instantiated in the kernel module, per-lane and bulk.
@Test func theStreamProbeKernelsTheHostLaunchesExist() {
    let source = String(decoding: KernelSource.ceilings.bytes, as: UTF8.self)
    for slots in StreamProbe.ringSlots { #expect(source.contains("MOE_STREAM_PROBE(\(slots))"), "\(slots)") }
    #expect(source.contains("moe_stream_probe_cp_##S(") && source.contains("moe_stream_probe_bulk_##S("))
    #expect(source.contains("moe_stream_probe_registers("))
}

/// The aliased measurement build (every expert reads expert 0's weights) refuses to produce outputs or time them, and
/// says which variable to unset; the normal build passes.
@Test func theAliasedExpertsBuildRefusesOutputs() throws {
    try KernelBuildSwitches.refuseAliasedExperts("outputs", aliased: false)
    #expect(throws: MoEError.self) { try KernelBuildSwitches.refuseAliasedExperts("outputs", aliased: true) }
    do {
        try KernelBuildSwitches.refuseAliasedExperts("a forward pass's outputs", aliased: true)
    } catch {
        #expect("\(error)".contains("MOE_CUDA_ALIAS_EXPERTS=1") && "\(error)".contains("unset it"))
    }
    #expect(KernelBuildSwitches.all.contains { ($0.variable, $0.symbol, $0.module) == ("MOE_CUDA_ALIAS_EXPERTS", "MOE_ALIAS_EXPERTS", "moe_experts.cu") })
}
