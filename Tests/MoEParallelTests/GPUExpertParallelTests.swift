import Foundation
import MoECheckpoint
import MoECore
@testable import MoEParallel
import Testing

@testable import MoECUDA

/// Host-side logic of GPU expert parallelism (runs everywhere); the device parts run in scripts/gpu/ep-check.sh
/// and, on a machine with a GPU, in the last test here.
enum GPUAvailability {
    static let available = CUDABackend.availability().available
}

@Test func gpuHeapRegionsAreAlignedDisjointAndSizedFromTheShape() throws {
    for (R, T, k, H) in [(1, 1, 1, 8), (2, 7, 4, 128), (3, 33, 4, 2880), (4, 256, 4, 2880)] {
        let layout = try CUDAExpertParallelLayout(ranks: R, capacity: T, topK: k, hidden: H)
        var end = 0
        for region in CUDAExpertParallelLayout.Region.allCases {
            let offset = layout.offset(of: region)
            #expect(offset % CUDAExpertParallelLayout.alignment == 0, "\(region) at \(offset)")
            #expect(offset >= end, "\(region) overlaps the region before it")
            end = offset + layout.byteCount(of: region)
        }
        #expect(layout.totalBytes >= end)
        #expect(layout.byteCount(of: .routingIds) == R * T * k * 4)
        #expect(layout.byteCount(of: .dispatch) == R * T * k * H * 2)
        #expect(layout.byteCount(of: .combine) == T * k * H * 2)
        #expect(layout.byteCount(of: .flags) == R * 8)
        #expect(layout.byteCount(of: .allToAllReturn) == T * k * H * 2)
    }
}

@Test func gpuHeapLayoutRefusesShapesItCannotServe() {
    #expect(throws: CUDAError.self) { try CUDAExpertParallelLayout(ranks: 0, capacity: 4, topK: 4, hidden: 128) }
    #expect(throws: CUDAError.self) { try CUDAExpertParallelLayout(ranks: 2, capacity: 0, topK: 4, hidden: 128) }
    #expect(throws: CUDAError.self) { try CUDAExpertParallelLayout(ranks: 2, capacity: 4, topK: 4, hidden: 100) }
    #expect(throws: CUDAError.self) { try CUDAExpertParallelLayout(ranks: 1024, capacity: 1 << 20, topK: 4, hidden: 128) }
}

/// The Swift parameter struct must list MoEEPParams (moe_ep_node.cuh) fields in the same order, all 8 bytes wide.
@Test func expertParallelParamsMatchTheKernelStruct() throws {
    let source = String(decoding: KernelSource.expertParallelNode.bytes, as: UTF8.self)
    let start = try #require(source.firstRange(of: "typedef struct MoEEPParams {"))
    let end = try #require(source.firstRange(of: "} MoEEPParams;"))
    var names: [String] = []
    for line in source[start.upperBound..<end.lowerBound].split(separator: "\n") {
        let code = line.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        guard let semicolon = code.firstIndex(of: ";") else { continue }
        let declaration = code[..<semicolon].split(separator: " ", omittingEmptySubsequences: true)
        guard declaration.count >= 2 else { continue }
        let type = declaration[0] == "long" ? "long long" : String(declaration[0])
        #expect(type == "MoEDevicePointer" || type == "long long", "field type \(type) is not 8 bytes")
        let fields = code[..<semicolon].split(separator: ",").map {
            $0.split(separator: " ").last.map(String.init) ?? ""
        }
        names += fields
    }
    let swiftNames = Mirror(reflecting: CUDAExpertParallelParams()).children.compactMap(\.label)
    #expect(names == swiftNames)
    #expect(MemoryLayout<CUDAExpertParallelParams>.size == 8 * swiftNames.count)
    #expect(MemoryLayout<CUDAExpertParallelParams>.stride == 8 * swiftNames.count)
}

@Test func ipcHandleRecordsRoundTripAndRejectStrangers() throws {
    let handle = (0..<64).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 5) }
    let record = CUDAIPCHandleRecord(deviceOrdinal: 3, heapBytes: 123_456_789, pid: 4242, handle: handle)
    let bytes = record.encoded()
    #expect(bytes.count == CUDAIPCHandleRecord.byteCount)
    #expect(try CUDAIPCHandleRecord.decode(bytes, rank: 1) == record)
    // A peer that never wrote its record (zeros) or wrote something else is named in the error.
    let zeros = [UInt8](repeating: 0, count: CUDAIPCHandleRecord.byteCount)
    #expect(throws: CUDAError.self) { try CUDAIPCHandleRecord.decode(zeros, rank: 2) }
    do {
        _ = try CUDAIPCHandleRecord.decode(zeros, rank: 2)
    } catch {
        #expect(error.description.contains("rank 2"))
    }
    #expect(throws: CUDAError.self) { try CUDAIPCHandleRecord.decode(Array(bytes.prefix(40)), rank: 0) }
}

@Test func deviceBarrierFailuresDecodeTheControlBlock() {
    var control = [UInt8](repeating: 0, count: 32)
    #expect(CUDAExpertParallelFailure.decode(control) == nil)
    control.withUnsafeMutableBytes { raw in
        raw.storeBytes(of: UInt32(1), toByteOffset: CUDAExpertParallelLayout.Control.status, as: UInt32.self)
        raw.storeBytes(of: UInt32(3), toByteOffset: CUDAExpertParallelLayout.Control.phase, as: UInt32.self)
        raw.storeBytes(of: UInt32(2), toByteOffset: CUDAExpertParallelLayout.Control.awaitedRank, as: UInt32.self)
        raw.storeBytes(of: UInt64(17), toByteOffset: CUDAExpertParallelLayout.Control.failedEpoch, as: UInt64.self)
    }
    let failure = CUDAExpertParallelFailure.decode(control)
    #expect(failure == CUDAExpertParallelFailure(reason: .timeout, phase: 3, awaitedRank: 2, epoch: 17))
    #expect(failure?.description.contains("rank 2") == true)
    let error = GPUExpertParallelError.deviceBarrier(
        rank: 0, phase: .dispatch, layer: 4, seconds: 8, peer: PeerStatus(rank: 2, lastPhase: .step, lastLayer: 0, pid: 99),
        why: "rank 2's process is gone")
    #expect(error.description.contains("'dispatch'") && error.description.contains("rank 2") && error.description.contains("layer 4"))
}

@Test func tokenSharesCoverTheBatchOnceWithPaddingAtTheEnd() {
    for R in 1...5 {
        for T in [1, 2, 7, 8, 33, 100] {
            var covered = 0
            for r in 0..<R {
                let (perRank, valid) = CUDAExpertParallelLayer.share(tokens: T, world: R, rank: r)
                #expect(perRank == (T + R - 1) / R)
                #expect(valid >= 0 && valid <= perRank)
                // Real tokens are a prefix: a rank with padding is followed only by ranks with none.
                if valid < perRank { #expect(covered + valid == T) }
                covered += valid
            }
            #expect(covered == T)
        }
    }
    #expect(CUDAExpertParallelLayer.deviceOrdinal(localRank: 5, deviceCount: 4) == 1)
    #expect(CUDAExpertParallelLayer.deviceOrdinal(localRank: 3, deviceCount: 1) == 0)
    #expect(CUDAExpertParallelLayer.deviceOrdinal(localRank: 2, deviceCount: 0) == 0)
}

@Test func checkCasesCoverTheAwkwardShapes() {
    for R in 1...4 {
        let cases = GPUExpertParallelBench.cases(world: R, skewedLayer: true)
        let tokens = Set(cases.map(\.tokens))
        #expect(tokens.contains(1) && tokens.contains(R))
        #expect(cases.contains { $0.tokens % R != 0 || R == 1 }, "a case needing padding")
        #expect(cases.contains { $0.tokens > 32 } && cases.contains { $0.tokens <= 32 }, "both router kernels")
        #expect(Set(cases.map(\.mode)) == Set(RoutingMode.allCases))
        #expect(cases.contains { $0.layer == 1 })
    }
}

@Test func theSkewedLayerSendsEveryTokenToRankZero() throws {
    let config = MoEConfig(hidden: 64, intermediate: 32, experts: 8, topK: 2)
    let weights = try SyntheticModel.layer(config: config, seed: 3)
    let assignment = try ExpertAssignment.contiguous(experts: 8, ranks: 4)
    let skewed = try GPUExpertParallelBench.skewedToRankZero(weights, assignment: assignment)
    let input = SyntheticModel.hiddenStates(tokens: 9, hidden: 64, seed: 4)
    let routed = try ReferenceMoE.forward(weights: skewed, input: input, tokens: 9, mode: .renormalize)
    #expect(routed.topkIds.allSatisfy { assignment.owner(of: Int($0)) == 0 })
}

/// One rank alone (R = 1, its own heap only) through both paths: bit-identical to CUDABackend. Needs a GPU.
@Test(.enabled(if: GPUAvailability.available, "needs a CUDA GPU"), arguments: [1, 7, 40])
func singleRankGPULayerMatchesTheCUDABackend(tokens: Int) throws {
    let config = MoEConfig(hidden: 128, intermediate: 96, experts: 8, topK: 4)
    let weights = try SyntheticModel.layer(config: config, seed: 11)
    let layer = try CUDAExpertParallelLayer(
        weights: weights, rank: 0, world: 1, capacity: 64, ownerOfExpert: Array(repeating: 0, count: 8), deviceOrdinal: 0,
        timeoutSeconds: 10)
    try layer.connect(peers: [try layer.handleRecord(pid: 0)])
    let input = SyntheticModel.hiddenStates(tokens: tokens, hidden: 128, seed: UInt64(tokens))
    let single = try CUDABackend(weights: weights).forward(input, tokens: tokens, routing: .renormalize, profiler: nil)
    let out = try layer.forwardSymmetric(input, tokens: tokens, mode: .renormalize, poison: true)
    #expect(zip(out.hidden, single.hidden).allSatisfy { $0.bitPattern == $1.bitPattern })
}

/// `moe forward --ranks 2 --backend cuda` says why it cannot run on a machine without a GPU (bench: LaunchCommandTests).
@Test(.enabled(if: !GPUAvailability.available, "this machine has a GPU: the GPU test below runs instead"))
func forwardOnCUDARanksExplainsAMissingGPU() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gpuep-\(UInt32.random(in: 0...UInt32.max))").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let model = directory + "/model"
    #expect(try LaunchCommandTests.run(["init", "--preset", "tiny", "--out", model, "--layers", "1"]).status == 0)
    let hidden = MoEPreset.tiny.config.hidden
    try HiddenStatesFile.writeInput(
        directory + "/in.safetensors", values: SyntheticModel.hiddenStates(tokens: 3, hidden: hidden, seed: 3), tokens: 3, hidden: hidden)
    let forward = try LaunchCommandTests.run([
        "forward", "--model", model, "--layer", "0", "--input", directory + "/in.safetensors", "--output", directory + "/out.safetensors",
        "--ranks", "2", "--backend", "cuda",
    ])
    #expect(forward.status != 0)
    #expect(forward.errors.contains("GPU expert parallelism needs the CUDA backend"), "\(forward.errors)")
}

/// On a GPU machine: `moe forward --ranks R --backend cuda` writes the same file as the single-rank CUDA forward.
@Test(.enabled(if: GPUAvailability.available, "needs a CUDA GPU"))
func forwardRanksOnCUDAWritesTheSameFileAsOneCUDARank() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gpuep-\(UInt32.random(in: 0...UInt32.max))").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let model = directory + "/model"
    #expect(try LaunchCommandTests.run(["init", "--preset", "tiny", "--out", model, "--layers", "1"]).status == 0)
    let hidden = MoEPreset.tiny.config.hidden
    try HiddenStatesFile.writeInput(
        directory + "/in.safetensors", values: SyntheticModel.hiddenStates(tokens: 9, hidden: hidden, seed: 3), tokens: 9, hidden: hidden)
    let common = ["forward", "--model", model, "--layer", "0", "--input", directory + "/in.safetensors", "--backend", "cuda"]
    #expect(try LaunchCommandTests.run(common + ["--output", directory + "/single.safetensors"]).status == 0)
    let expected = try HiddenStatesFile.readOutput(directory + "/single.safetensors")
    for (ranks, comm) in [(2, "symmetric"), (3, "alltoall")] {
        let path = directory + "/ep-\(ranks).safetensors"
        let run = try LaunchCommandTests.run(common + ["--output", path, "--ranks", "\(ranks)", "--comm", comm])
        #expect(run.status == 0, "\(run.all)")
        let actual = try HiddenStatesFile.readOutput(path)
        #expect(actual.hidden.map(\.bitPattern) == expected.hidden.map(\.bitPattern), "R=\(ranks) \(comm)")
        #expect(actual.topkIds == expected.topkIds)
    }
}

/// The one-block global plan covers decode-size layers and gives way to the three-kernel plan past its slots.
@Test func theOneBlockGlobalPlanServesSmallLayersOnly() {
    // 8 ranks × 8 tokens × k = 4 on gpt-oss-120b's 128 experts: ids, weights, counts, offsets, 8 chunks of 128.
    #expect(CUDAExpertParallelLayer.smallPlanBytes(slots: 256, experts: 128, enabled: true) == 4 * (512 + 257) + 4 * 8 * 128)
    #expect(CUDAExpertParallelLayer.smallPlanBytes(slots: LaunchPlan.blockPlanMaxSlots, experts: 128, enabled: true) != nil)
    #expect(CUDAExpertParallelLayer.smallPlanBytes(slots: LaunchPlan.blockPlanMaxSlots + 1, experts: 128, enabled: true) == nil)
    #expect(CUDAExpertParallelLayer.smallPlanBytes(slots: 256, experts: 128, enabled: false) == nil)
    // Shared memory past 160 KiB (many experts) falls back too.
    #expect(CUDAExpertParallelLayer.smallPlanBytes(slots: 4096, experts: 512, enabled: true) == nil)
}
