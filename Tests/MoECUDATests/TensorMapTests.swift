import CCUDA
import MoECore
import Testing

@testable import MoECUDA

/// gpt-oss-120b's GEMM parameters as TokenBucket fills them (addresses made up, 256-byte aligned).
private func gemmParameters(first: Bool) -> MoEGemmParams {
    let c = MoEPreset.gptOss120b.config
    var p = MoEGemmParams()
    let n = first ? 2 * c.intermediate : c.hidden, k = first ? c.hidden : c.intermediate
    (p.codes, p.scales, p.input) = (0x1_0000_0000, 0x2_0000_0000, 0x3_0000_0000)
    (p.n, p.k, p.groups, p.chunks, p.scaleGroups) = (Int32(n), Int32(k), Int32(n / 16), Int32((k + 63) / 64), Int32((k + 255) / 256))
    p.inputStride = Int64(k)
    p.inputIndex = first ? 0x4_0000_0000 : 0  // GEMM 1 gathers its rows; GEMM 2's are in sorted order
    return p
}

/// The maps' arithmetic against the kernel's slot layout (moe_experts.cu, ChunkCopies::issue_tensor): a box of codes is
/// the block's row groups' 512 bytes of one chunk, a box of scales their 128 bytes of the chunk's 256-k group, an
/// activation box 64 rows of one 64-k chunk in the 128-byte swizzle; GEMM 1's gathered rows have no input map.
@Test func tensorMapsDescribeTheSlotsTheRegisteredKernelFills() {
    let variant = GemmVariant.registered_1_128_4_4_1_1_2_1_0_16_0_1_1
    #expect(variant.usesTensorCopies && variant.rowGroupsPerBlock == 16 && !GemmVariant.staged_2_4_8_2.usesTensorCopies)
    let first = GemmTensorMaps.encodings(gemmParameters(first: true), heldExperts: 128, inputRows: 8192, rowGroupsPerBlock: 16)
    #expect(first.count == 3 && first[2] == nil)
    let codes = first[0]!, scales = first[1]!
    #expect(codes.dimensions == [45 * 64, 128 * 360] && codes.rowPitch == 45 * 512 && codes.box == [64, 16])
    #expect(Int(codes.box[0]) * codes.elementBytes * Int(codes.box[1]) == 16 * 512)  // the slot's CODE_BYTES
    #expect(scales.dimensions == [12 * 16, 128 * 360] && scales.rowPitch == 12 * 128 && scales.box == [16, 16])
    #expect(Int(scales.box[0]) * scales.elementBytes * Int(scales.box[1]) == 16 * 128)  // SCALE_BYTES
    #expect(codes.swizzle == TensorMapEncoding.noSwizzle && codes.dataType == TensorMapEncoding.uint64)

    let second = GemmTensorMaps.encodings(gemmParameters(first: false), heldExperts: 8, inputRows: 4096, rowGroupsPerBlock: 8)
    let input = second[2]!
    #expect(second[0]!.dimensions == [45 * 64, 8 * 180] && second[0]!.box == [64, 8])
    #expect(input.dimensions == [2880, 4096] && input.rowPitch == 2880 * 2 && input.box == [64, 64])
    #expect(input.swizzle == TensorMapEncoding.swizzle128 && input.dataType == TensorMapEncoding.bfloat16)
    #expect(Int(input.box[0]) * input.elementBytes == 128)  // one swizzled row: 64 k of a token
    // 96-token tiles copy their activations in 32-row boxes (three a full tile), the same rows otherwise; five consumer
    // warpgroups take 20 row groups' codes a box.
    let ninetySix = GemmVariant.registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1
    #expect(ninetySix.activationBoxRows == 32 && variant.activationBoxRows == 64 && ninetySix.usesTensorCopies)
    let third = GemmTensorMaps.encodings(gemmParameters(first: false), variant: ninetySix, heldExperts: 8, inputRows: 4096)!
    #expect(third[2]!.box == [64, 32] && third[2]!.dimensions == input.dimensions && third[0]!.box == [64, 20])
    for encoding in (first + second + third).compactMap({ $0 }) { #expect(encoding.problem == nil, "\(encoding)") }
}

/// What the driver would refuse is caught first, each with its reason.
@Test func tensorMapProblemsAreNamed() {
    let good = GemmTensorMaps.encodings(gemmParameters(first: false), heldExperts: 2, inputRows: 64, rowGroupsPerBlock: 16)[2]!
    #expect(good.problem == nil)
    let broken: [(String, (inout TensorMapEncoding) -> Void)] = [
        ("not 16-byte aligned", { $0.address += 8 }), ("row pitch", { $0.rowPitch = 2884 * 2 }),
        ("1…256", { $0.box = [64, 257] }), ("exceed the 128-byte swizzle", { $0.box = [128, 64] }),
        ("multiple of 16", { $0.box = [4, 64] }), ("dimensions", { $0.dimensions = [2880, 0] }),
    ]
    for (reason, breaking) in broken {
        var e = good
        breaking(&e)
        #expect(e.problem?.contains(reason) == true, "\(reason)")
    }
}

/// The encoder's last arguments (C function pointers capture nothing).
enum FakeTensorMapEncoder {
    nonisolated(unsafe) static var calls: [(dataType: Int32, address: UInt64, dimensions: [UInt64], pitch: UInt64, box: [UInt32], swizzle: Int32)] = []
    nonisolated(unsafe) static var uploaded: [UInt8] = []
}

extension FakeGPUTests {
    /// The maps reach the driver as encoded (nil maps skipped, left zero) and go up as one 384-byte MoEGemmTensorMaps;
    /// a driver without the entry point, or a map it would refuse, is an error naming it, not a crash.
    @Test func tensorMapsAreEncodedByTheDriverAndUploaded() throws {
        FakeGPU.capacity = 1 << 20
        FakeGPU.allocated = 0
        FakeTensorMapEncoder.calls = []
        var api = FakeGPU.table()
        api.cuMemcpyHtoD = { _, source, bytes in
            FakeTensorMapEncoder.uploaded = Array(UnsafeRawBufferPointer(start: source, count: bytes))
            return 0
        }
        let withoutEncoder = try CUDADevice(driver: CUDADriver(api: api, libraryPath: "fake"))
        let encodings = GemmTensorMaps.encodings(gemmParameters(first: true), heldExperts: 4, inputRows: 0, rowGroupsPerBlock: 16)
        #expect(MemoryLayout<MoEGemmTensorMaps>.stride == 384 && MemoryLayout<MoETensorMap>.stride == 128)
        do {
            _ = try GemmTensorMaps.upload(encodings, device: withoutEncoder)
            Issue.record("no cuTensorMapEncodeTiled: expected an error")
        } catch {
            #expect(error.description.contains("cuTensorMapEncodeTiled"))
        }

        api.cuTensorMapEncodeTiled = { map, dataType, rank, address, dimensions, strides, box, elementStrides, interleave, swizzle, _, fill in
            guard rank == 2, interleave == 0, fill == 0, elementStrides?[0] == 1, elementStrides?[1] == 1 else { return 1 }
            FakeTensorMapEncoder.calls.append(
                (dataType, UInt64(UInt(bitPattern: address)), [dimensions![0], dimensions![1]], strides![0], [box![0], box![1]], swizzle))
            map!.storeBytes(of: UInt64(0xC0DE_0000) + UInt64(FakeTensorMapEncoder.calls.count), as: UInt64.self)
            return 0
        }
        let device = try CUDADevice(driver: CUDADriver(api: api, libraryPath: "fake"))
        let buffer = try GemmTensorMaps.upload(encodings, device: device)
        #expect(buffer.byteCount == 384)
        #expect(FakeTensorMapEncoder.calls.count == 2)  // GEMM 1: codes and scales, no input map
        for (call, encoding) in zip(FakeTensorMapEncoder.calls, encodings.compactMap { $0 }) {
            #expect(call.dataType == encoding.dataType && call.address == encoding.address && call.dimensions == encoding.dimensions)
            #expect(call.pitch == encoding.rowPitch && call.box == encoding.box && call.swizzle == encoding.swizzle)
        }
        let words = FakeTensorMapEncoder.uploaded.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
        #expect(words.count == 48 && words[0] == 0xC0DE_0001 && words[16] == 0xC0DE_0002 && words[32...].allSatisfy { $0 == 0 })

        var misaligned = encodings
        misaligned[1]!.address += 4
        do {
            _ = try GemmTensorMaps.upload(misaligned, device: device)
            Issue.record("a misaligned scales map: expected an error")
        } catch {
            #expect(error == .invalidArgument("the scales tensor map cannot be encoded: its address 8589934596 is not 16-byte aligned"))
        }
    }
}

/// GEMM 1's rows are gathered into sorted order where GEMM 1 copies by tensor maps, unless MOE_CUDA_GATHER_ROWS=0;
/// the gather runs a block row per token (each row of x read once, written to its k sorted rows) over every column,
/// 16 bytes a thread.
@Test func gemm1RowsAreGatheredForTensorCopiesUnlessTurnedOff() {
    let config = MoEPreset.gptOss120b.config
    let tensor = LaunchPlan(tokens: 2048, config: config, variant: .registered_1_128_4_4_1_1_2_1_0_16_0_1_1)
    let lean = LaunchPlan(tokens: 2048, config: config, variant: .staged_2_4_8_2)
    #expect(TokenBucket.gathersRows(tensor, switchedOn: true))
    #expect(!TokenBucket.gathersRows(tensor, switchedOn: false) && !TokenBucket.gathersRows(lean, switchedOn: true))
    // On by default (session 18: about a point faster at 2048–32768 tokens); the large-batch defaults copy by tensor maps.
    #expect(TokenBucket.gatherRowsSwitch == (currentEnvironment("MOE_CUDA_GATHER_ROWS") != "0"))
    #expect(TokenBucket.gathersRows(LaunchPlan(tokens: 2048, config: config), switchedOn: true))
    #expect(!TokenBucket.gathersRows(LaunchPlan(tokens: 128, config: config), switchedOn: true))
    let shape = TokenBucket.gatherShape(tensor)
    #expect(shape.grid.x == 2048 && shape.block == 128)
    #expect(shape.grid.y * shape.block * 8 >= config.hidden && (shape.grid.y - 1) * shape.block * 8 < config.hidden)
    let small = LaunchPlan(tokens: 3, config: MoEConfig(hidden: 96, intermediate: 64, experts: 4, topK: 2), variant: .registered_1_128_4_4_1_1_2_1_0_16_0_1_1)
    #expect(TokenBucket.gatherShape(small).grid.x == 3 && TokenBucket.gatherShape(small).grid.y == 1)
}

/// Past the one-block plan (129 tokens and up) the single-rank plan takes two launches, moe_topk and moe_plan_place
/// deriving the plan itself, while the histograms fit MOE_PLAN_IN_PLACE_COUNTS; past that, and with
/// MOE_CUDA_FUSED_PLAN=0, the four launches; any other value is an error. The placement runs a block a token block, and
/// when it gathers GEMM 1's rows, one a slice of 256 columns of H as well (a warp a token, 16 bytes a lane), every
/// column covered once.
@Test func planPlacementTakesTheGatherPastTheOneBlockPlan() throws {
    let config = MoEPreset.gptOss120b.config, small = MoEPreset.gptOss20b.config
    for tokens in [1, 8, 9, 128] {
        #expect(LaunchPlan(tokens: tokens, config: config).planBuild(switchValue: nil, inPlaceCounts: 4096) == nil)
        #expect(LaunchPlan(tokens: tokens, config: config).planBuild(switchValue: "0") == nil)
    }
    // 120b: 32 blocks × 128 experts = 4096 counts at 1024 tokens; 20b (E = 32) reaches them at 4096.
    for (c, tokens, build) in [(config, 129, LaunchPlan.PlanBuild.inPlace), (config, 1024, .inPlace), (config, 1025, .fourLaunches),
                               (config, 32768, .fourLaunches), (small, 4096, .inPlace), (small, 4097, .fourLaunches)] {
        let plan = LaunchPlan(tokens: tokens, config: c)
        #expect(plan.planBuild(switchValue: nil, inPlaceCounts: 4096) == build && plan.planBuild(switchValue: "1", inPlaceCounts: 4096) == build, "T = \(tokens)")
        #expect(plan.planBuild(switchValue: "0") == .fourLaunches)
        let shape = plan.placeShape(gathers: false)
        #expect(shape.grid == (plan.tokenBlocks, 1, 1) && shape.block == 256)
    }
    for (hidden, slices) in [(2880, 12), (96, 1), (256, 1), (264, 2), (2048, 8)] {
        let c = MoEConfig(hidden: hidden, intermediate: 64, experts: 32, topK: 4)
        let shape = LaunchPlan(tokens: 300, config: c).placeShape(gathers: true)
        #expect(shape.grid == (10, slices, 1), "H = \(hidden)")
        #expect(shape.grid.y * 32 * 8 >= hidden && (shape.grid.y - 1) * 32 * 8 < hidden)
    }
    // ids, weights and sorted rows of 32·k slots, the histograms [B, E] and four ints an expert.
    #expect(LaunchPlan(tokens: 300, config: config).placeShape(gathers: true).sharedBytes == 4 * (3 * 128 + 10 * 128 + 4 * 128))
    #expect(LaunchPlan(tokens: 1024, config: config).placeShape(gathers: true).sharedBytes <= 48 * 1024)
    let odd = MoEConfig(hidden: 64, intermediate: 64, experts: 64, topK: 3)
    #expect(LaunchPlan(tokens: 300, config: odd).placeShape(gathers: false).sharedBytes == 4 * (3 * 96 + 10 * 64 + 4 * 64))
    for good in [nil, "0", "1"] { try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: good, inPlaceCounts: nil) }
    for bad in ["2", "", "scan", "0 ", "yes"] {
        do {
            try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: bad, inPlaceCounts: nil)
            Issue.record("MOE_CUDA_FUSED_PLAN=\(bad) was accepted")
        } catch {
            #expect("\(error)".contains("MOE_CUDA_FUSED_PLAN=\(bad)") && "\(error)".contains("four launches"))
        }
    }
}

/// MOE_CUDA_PLAN_IN_PLACE_COUNTS (an A/B knob) moves the in-place plan's bound on B·E, with the placement's shared memory
/// following the histograms; outside 1024–16384 it is an error naming the variable, not the default run under its name.
@Test func inPlaceCountsMoveThePlanBoundWithinSharedMemory() throws {
    let config = MoEPreset.gptOss120b.config
    #expect(Int(MOE_PLAN_IN_PLACE_COUNTS) == 4096)
    let at2048 = LaunchPlan(tokens: 2048, config: config)  // 64 blocks × 128 experts = 8192 counts
    #expect(at2048.planBuild(switchValue: nil, inPlaceCounts: 4096) == .fourLaunches)
    #expect(at2048.planBuild(switchValue: nil, inPlaceCounts: 8192) == .inPlace)
    #expect(at2048.planBuild(switchValue: "0", inPlaceCounts: 8192) == .fourLaunches)
    #expect(LaunchPlan(tokens: 4096, config: config).planBuild(switchValue: nil, inPlaceCounts: 16384) == .inPlace)
    #expect(LaunchPlan(tokens: 4097, config: config).planBuild(switchValue: nil, inPlaceCounts: 16384) == .fourLaunches)
    // The largest bound's shared memory (16384 counts, k = 4) fits any Hopper block with room for a second.
    #expect(LaunchPlan(tokens: 4096, config: config).placeShape(gathers: true).sharedBytes == 4 * (3 * 128 + 16384 + 4 * 128))
    #expect(2 * LaunchPlan(tokens: 4096, config: config).placeShape(gathers: true).sharedBytes <= 227 * 1024)
    #expect(LaunchPlan.parsedInPlaceCounts("8192") == 8192 && LaunchPlan.parsedInPlaceCounts(nil) == nil)
    for good in ["1024", "4096", "16384"] { try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: nil, inPlaceCounts: good) }
    for bad in ["0", "1023", "16385", "lots", "", "8192 "] {
        #expect(LaunchPlan.parsedInPlaceCounts(bad) == nil)
        do {
            try LaunchPlan.validateSwitches(routerBlocks: nil, fusedPlan: nil, inPlaceCounts: bad)
            Issue.record("MOE_CUDA_PLAN_IN_PLACE_COUNTS=\(bad) was accepted")
        } catch {
            #expect("\(error)".contains("MOE_CUDA_PLAN_IN_PLACE_COUNTS=\(bad)") && "\(error)".contains("1024 to 16384"))
        }
    }
}
