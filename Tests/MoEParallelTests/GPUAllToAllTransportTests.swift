import CCUDA
import MoECore
import Testing

@testable import MoECUDA
@testable import MoEParallel

/// The GPU all-to-all baseline's transport choice, send/receive plan and rendezvous exchanges: host logic that
/// runs everywhere (the device half is scripts/gpu/ep-check.sh's `nccl` step and the GPU test at the end).
@Suite struct GPUAllToAllTransportTests {
    /// R ranks on `nodes` nodes; `gpus(rank)` is the rank's PCI bus (its physical GPU) on its host.
    static func placements(
        ranks: Int, nodes: Int = 1, sameHost: Bool = false, loaded: Bool = true, gpu: (Int) -> Int
    ) -> [GPUPlacement] {
        let perNode = ranks / nodes
        return (0..<ranks).map { rank in
            let node = rank / perNode
            return GPUPlacement(
                rank: rank, node: node, host: sameHost ? 7 : UInt64(100 + node), deviceOrdinal: rank % perNode, pciDomain: 0,
                pciBus: gpu(rank), pciDevice: 0, ncclLoaded: loaded)
        }
    }

    static func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "(no error)"
        } catch {
            return "\(error)"
        }
    }

    @Test func autoPicksNCCLWhenEveryRankHasItsOwnGPU() throws {
        let one = try GPUAllToAllTransport.decide(requested: .auto, placements: Self.placements(ranks: 4) { 0x1b + $0 })
        #expect(one.kind == .nccl)
        #expect(one.reason.contains("every rank has its own GPU"))
        // Across nodes, the same ordinal on two hosts is two GPUs.
        let two = try GPUAllToAllTransport.decide(requested: .auto, placements: Self.placements(ranks: 4, nodes: 2) { $0 % 2 })
        #expect(two.kind == .nccl)
        let single = try GPUAllToAllTransport.decide(requested: .auto, placements: Self.placements(ranks: 1) { _ in 3 })
        #expect(single.kind == .nccl, "a communicator of one (send/recv to self) is still one GPU per rank")
    }

    @Test func autoFallsBackToIPCWhenRanksShareAGPUAndSaysWhy() throws {
        let decision = try GPUAllToAllTransport.decide(requested: .auto, placements: Self.placements(ranks: 3) { _ in 0x1b })
        #expect(decision.kind == .ipc)
        #expect(decision.reason.contains("ranks 0, 1, 2 share GPU 0"), "\(decision.reason)")
        #expect(decision.reason.contains("Duplicate GPU detected"))
        #expect(decision.summary.contains("cuMemcpyDtoDAsync"))
        let noLibrary = try GPUAllToAllTransport.decide(
            requested: .auto, placements: Self.placements(ranks: 2, loaded: false) { $0 })
        #expect(noLibrary.kind == .ipc)
        #expect(noLibrary.reason.contains("libnccl could not be loaded on ranks 0, 1"))
    }

    /// CUDA_VISIBLE_DEVICES can give one physical GPU different ordinals: the PCI address decides.
    @Test func sharingIsJudgedByThePhysicalGPUNotTheOrdinal() throws {
        var list = Self.placements(ranks: 2) { _ in 0x41 }
        list[1].deviceOrdinal = 1
        #expect(try GPUAllToAllTransport.decide(requested: .auto, placements: list).kind == .ipc)
        // Without a PCI address the ordinal is all there is.
        let bare = (0..<2).map { GPUPlacement(rank: $0, node: 0, host: 1, deviceOrdinal: $0, ncclLoaded: true) }
        #expect(try GPUAllToAllTransport.decide(requested: .auto, placements: bare).kind == .nccl)
    }

    @Test func forcedNCCLOnASharedGPUIsRefusedNamingTheRanksAndTheReason() {
        let text = Self.message {
            _ = try GPUAllToAllTransport.decide(requested: .nccl, placements: Self.placements(ranks: 2) { _ in 0x1b })
        }
        #expect(text.contains("--a2a-transport nccl needs one GPU per rank"), "\(text)")
        #expect(text.contains("ranks 0 and 1 share GPU 0 (PCI 0000:1b:00) of node 0"), "\(text)")
        #expect(text.contains("NCCL refuses two ranks on one GPU"))
        #expect(text.contains("--a2a-transport ipc or auto"))
        // Two loopback "nodes" on one host using one GPU share it too.
        let loopback = Self.message {
            _ = try GPUAllToAllTransport.decide(requested: .nccl, placements: Self.placements(ranks: 2, nodes: 2, sameHost: true) { _ in 0x1b })
        }
        #expect(loopback.contains("share GPU 0"), "\(loopback)")
        let unloaded = Self.message {
            _ = try GPUAllToAllTransport.decide(requested: .nccl, placements: Self.placements(ranks: 2, loaded: false) { $0 })
        }
        #expect(unloaded.contains("libnccl could not be loaded on ranks 0, 1"), "\(unloaded)")
    }

    @Test func acrossNodesOnlyNCCLCanCarryTheBaseline() throws {
        let ipc = Self.message {
            _ = try GPUAllToAllTransport.decide(requested: .ipc, placements: Self.placements(ranks: 4, nodes: 2) { $0 })
        }
        #expect(ipc.contains("cannot serve a job across 2 nodes"), "\(ipc)")
        let shared = Self.message {
            _ = try GPUAllToAllTransport.decide(requested: .auto, placements: Self.placements(ranks: 4, nodes: 2) { _ in 0 })
        }
        #expect(shared.contains("across 2 nodes needs NCCL"), "\(shared)")
        #expect(try GPUAllToAllTransport.decide(requested: .ipc, placements: Self.placements(ranks: 2) { $0 }).kind == .ipc)
    }

    @Test func placementRecordsRoundTripAndRejectStrangers() throws {
        let placement = GPUPlacement(
            rank: 3, node: 1, host: 0xdead_beef_cafe_f00d, deviceOrdinal: 2, pciDomain: 1, pciBus: 0xc3, pciDevice: 5, ncclLoaded: true)
        #expect(try GPUPlacement.decode(placement.encoded(), rank: 3) == placement)
        var unloaded = placement
        unloaded.ncclLoaded = false
        unloaded.pciBus = -1
        #expect(try GPUPlacement.decode(unloaded.encoded(), rank: 3) == unloaded)
        #expect(throws: ExpertParallelError.self) { try GPUPlacement.decode([UInt8](repeating: 0, count: 64), rank: 1) }
        #expect(throws: ExpertParallelError.self) { try GPUPlacement.decode([1, 2, 3], rank: 1) }
        #expect(GPUPlacement.hostDigest() == GPUPlacement.hostDigest())
    }

    // MARK: the send/receive plan

    /// Every (source, destination) block must land where the receiver expects it, and come home where the sender
    /// packed it: simulate the whole all-to-all and back on host arrays, for random count matrices (zeros,
    /// one rank receiving everything, self-sends included).
    @Test(arguments: [1, 2, 3, 4, 7])
    func planDeliversEveryRowAndBringsItHome(world R: Int) throws {
        var generator = SplitMix(seed: UInt64(40 + R))
        for round in 0..<20 {
            var counts = [Int32](repeating: 0, count: R * R)
            for i in counts.indices {
                switch round % 4 {
                case 0: counts[i] = 0
                case 1: counts[i] = i % R == 0 ? Int32(generator.next() % 9) : 0  // everything to rank 0
                default: counts[i] = Int32(generator.next() % 6)
                }
            }
            let plans = try (0..<R).map {
                try AllToAllPlan(counts: counts, world: R, rank: $0, sendCapacity: 64, receiveCapacity: R * 64)
            }
            // Rows are labelled (source, destination, index); the send buffers hold them in destination order.
            struct Label: Equatable { var source, destination, index: Int }
            var sendBuffers = [[Label]](), receiveBuffers = [[Label?]](repeating: [Label?](repeating: nil, count: R * 64), count: R)
            for s in 0..<R {
                var buffer: [Label] = []
                for d in 0..<R { for i in 0..<Int(counts[s * R + d]) { buffer.append(Label(source: s, destination: d, index: i)) } }
                sendBuffers.append(buffer)
                #expect(plans[s].sentRows == buffer.count)
            }
            // Dispatch: a send (s → d) is matched with d's receive from s; both must agree on the row count.
            for s in 0..<R {
                for send in plans[s].dispatchSends {
                    let receive = plans[send.peer].dispatchReceives[s]
                    #expect(receive.peer == s && receive.count == send.count)
                    for i in 0..<send.count { receiveBuffers[send.peer][receive.offset + i] = sendBuffers[s][send.offset + i] }
                }
            }
            for d in 0..<R {
                let got = receiveBuffers[d].prefix(plans[d].receivedRows)
                #expect(got.allSatisfy { $0?.destination == d }, "round \(round): rank \(d) received another rank's rows")
                // IPC's formula (rows after lower sources) gives the same offsets.
                for s in 0..<R {
                    #expect(plans[d].dispatchReceives[s].offset == (0..<s).reduce(0) { $0 + Int(counts[$1 * R + d]) })
                }
            }
            // Combine: expert rows go back from where they arrived to where they were packed.
            var homes = [[Label?]](repeating: [Label?](repeating: nil, count: 64), count: R)
            for d in 0..<R {
                for send in plans[d].combineSends {
                    let receive = plans[send.peer].combineReceives[d]
                    #expect(receive.count == send.count)
                    for i in 0..<send.count { homes[send.peer][receive.offset + i] = receiveBuffers[d][send.offset + i] }
                }
            }
            for s in 0..<R {
                #expect(Array(homes[s].prefix(sendBuffers[s].count)) == sendBuffers[s].map { Optional($0) }, "round \(round), rank \(s)")
            }
        }
    }

    @Test func planRefusesCountsItCannotServe() {
        #expect(throws: CUDAError.self) { try AllToAllPlan(counts: [1, 2, 3], world: 2, rank: 0, sendCapacity: 8, receiveCapacity: 16) }
        #expect(throws: CUDAError.self) { try AllToAllPlan(counts: [1, -2, 3, 4], world: 2, rank: 0, sendCapacity: 8, receiveCapacity: 16) }
        // More rows than the send buffer or the receive region holds: refused before any transfer is posted.
        let send = Self.message { _ = try AllToAllPlan(counts: [5, 5, 0, 0], world: 2, rank: 0, sendCapacity: 8, receiveCapacity: 16) }
        #expect(send.contains("would send 10 rows"), "\(send)")
        let receive = Self.message { _ = try AllToAllPlan(counts: [9, 0, 9, 0], world: 2, rank: 0, sendCapacity: 16, receiveCapacity: 16) }
        #expect(receive.contains("would receive 18 rows"), "\(receive)")
        #expect(throws: CUDAError.self) { try AllToAllPlan(counts: [0], world: 1, rank: 1, sendCapacity: 1, receiveCapacity: 1) }
    }

    // MARK: rendezvous exchanges through the CPU heap

    @Test func theNCCLUniqueIdAndPlacementsTravelThroughTheHeap() throws {
        let job = SymmetricHeap.newJobID()
        let ranks = 3
        let id = (0..<NCCLCommunicator.uniqueIDBytes).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let results = RankThreads.run(ranks: ranks) { rank -> ([UInt8], [GPUPlacement]) in
            let heap = try SymmetricHeapTests.join(job, rank: rank, world: ranks)
            defer { heap.close() }
            // Only rank 0 makes the id (as ncclGetUniqueId runs on rank 0 only).
            let shared = try GPUExpertParallelRunner.broadcastFromRankZero(count: id.count, heap: heap) {
                precondition(rank == 0, "only rank 0 makes the id")
                return id
            }
            let mine = GPUPlacement(rank: rank, node: 0, host: 9, deviceOrdinal: rank, ncclLoaded: rank != 2)
            let all = try GPUExpertParallelRunner.allGather(mine.encoded(), heap: heap).enumerated().map {
                try GPUPlacement.decode($0.element, rank: $0.offset)
            }
            return (shared, all)
        }
        for (rank, result) in results.enumerated() {
            let (shared, all) = try result.get()
            #expect(shared == id, "rank \(rank) got another id")
            #expect(all.map(\.rank) == [0, 1, 2])
            #expect(all.map(\.ncclLoaded) == [true, true, false])
        }
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func rankEnvironmentCarriesTheTransportChoice() throws {
        var variables = [
            "MOE_RANK": "1", "MOE_WORLD_SIZE": "2", "MOE_JOB_ID": "abc", "MOE_A2A_TRANSPORT": "nccl",
        ]
        let environment = try #require(try RankEnvironment.parse { variables[$0] })
        #expect(environment.allToAllTransport == .nccl)
        #expect(environment.variables.contains { $0 == ("MOE_A2A_TRANSPORT", "nccl") })
        variables["MOE_A2A_TRANSPORT"] = "shm"
        let text = Self.message { _ = try RankEnvironment.parse { variables[$0] } }
        #expect(text.contains("MOE_A2A_TRANSPORT=shm must be auto, nccl or ipc"), "\(text)")
    }

    @Test func theLauncherRefusesAnUnknownTransport() throws {
        let run = try LaunchCommandTests.run(["launch", "--ranks", "1", "--a2a-transport", "shm", "--", "info"])
        #expect(run.status != 0)
        #expect(run.errors.contains("a2a-transport"), "\(run.errors)")
    }
}

/// One rank alone (R = 1) with the NCCL transport forced: a communicator of one, send/recv to self; the
/// all-to-all baseline must give the single-rank CUDA forward's bits. Needs a GPU and libnccl.
@Test(.enabled(if: GPUAvailability.available && NCCLAvailability.available, "needs a CUDA GPU and libnccl.so.2"), arguments: [1, 7, 40])
func singleRankNCCLAllToAllMatchesTheCUDABackend(tokens: Int) throws {
    let config = MoEConfig(hidden: 128, intermediate: 96, experts: 8, topK: 4)
    let weights = try SyntheticModel.layer(config: config, seed: 12)
    let layer = try CUDAExpertParallelLayer(
        weights: weights, rank: 0, world: 1, capacity: 64, ownerOfExpert: Array(repeating: 0, count: 8), deviceOrdinal: 0,
        timeoutSeconds: 10)
    try layer.connect(peers: [try layer.handleRecord(pid: 0)])
    let library = try NCCLLibrary.load()
    let id = try NCCLCommunicator.makeUniqueID(library: library)
    let communicator = try NCCLCommunicator(
        library: library, device: layer.runtime.device, uniqueID: id, rank: 0, world: 1, timeoutSeconds: 30)
    defer { communicator.close() }
    layer.allToAllCommunicator = communicator
    let input = SyntheticModel.hiddenStates(tokens: tokens, hidden: 128, seed: UInt64(tokens))
    let single = try CUDABackend(weights: weights).forward(input, tokens: tokens, routing: .renormalize, profiler: nil)
    let out = try layer.forwardAllToAll(input, tokens: tokens, mode: .renormalize, host: LoneHost(), poison: true)
    #expect(out.hidden.map(\.bitPattern) == single.hidden.map(\.bitPattern))
    #expect(out.bytesMoved[2] > 0 && out.bytesRemote[2] == 0, "a lone rank moves rows to itself only")
}

enum NCCLAvailability {
    static let available = (try? NCCLLibrary.load()) != nil
}

/// The host side of a job of one rank: its counts are the whole matrix; barriers have nobody to wait for.
final class LoneHost: CUDAExpertParallelHost {
    func exchangeCounts(_ counts: [Int32]) throws -> [Int32] { counts }
    func hostBarrier(phase: UInt8) throws {}
}

/// GPUs of a node that cannot reach each other's memory rule out the CUDA IPC paths, with the pairs named; ranks on
/// one shared GPU, or GPUs that can all reach each other, need nothing; a driver without the query is not refused.
@Test func gpusWithoutPeerAccessRefuseTheIPCPathsNamingThePairs() throws {
    var api = CCUDADriverAPI()
    api.cuDeviceGet = { device, ordinal in
        device?.pointee = ordinal
        return 0
    }
    api.cuDeviceCanAccessPeer = { can, a, b in
        can?.pointee = (a == 0 && b == 2) || (a == 2 && b == 0) ? 0 : 1  // GPUs 0 and 2: no P2P
        return 0
    }
    let driver = CUDADriver(api: api, libraryPath: "fake")
    let four = GPUAllToAllTransportTests.placements(ranks: 4) { $0 }
    let refusal = try #require(try GPUExpertParallelRunner.peerAccessRefusal(driver: driver, placements: four, node: 0))
    #expect(refusal.contains("cuDeviceCanAccessPeer is 0 for 0→2, 2→0") && refusal.contains("nvidia-smi topo"), "\(refusal)")
    let twoOnNodeOne = GPUAllToAllTransportTests.placements(ranks: 4, nodes: 2) { $0 }  // node 1: GPUs 0 and 1
    #expect(try GPUExpertParallelRunner.peerAccessRefusal(driver: driver, placements: twoOnNodeOne, node: 1) == nil)
    let shared = (0..<3).map { GPUPlacement(rank: $0, node: 0, host: 1, deviceOrdinal: 2, ncclLoaded: true) }
    #expect(try GPUExpertParallelRunner.peerAccessRefusal(driver: driver, placements: shared, node: 0) == nil)
    let noQuery = CUDADriver(api: CCUDADriverAPI(), libraryPath: "fake")
    #expect(try GPUExpertParallelRunner.peerAccessRefusal(driver: noQuery, placements: four, node: 0) == nil)
}

/// A GPU rank holds only its own experts, in expert order; every tile it computes must name its expert by that
/// position, or the GEMMs read another expert's weights (or past the upload).
@Test func aRankNamesItsExpertsByWhereItsGPUHoldsThem() throws {
    let owners = [1, 0, 1, 2, 1, 0]  // round-robin-like gaps
    #expect(CUDAExpertParallelLayer.heldExpertIndex(ownerOfExpert: owners, rank: 1) == [0, -1, 1, -1, 2, -1])
    #expect(CUDAExpertParallelLayer.heldExpertIndex(ownerOfExpert: owners, rank: 2) == [-1, -1, -1, 0, -1, -1])
    #expect(CUDAExpertParallelLayer.heldExpertIndex(ownerOfExpert: owners, rank: 3) == [Int](repeating: -1, count: 6))

    // The all-to-all baseline's received rows: ids in arrival order, 3 rows of expert 4 with tiles of 2 rows.
    let held = CUDAExpertParallelLayer.heldExpertIndex(ownerOfExpert: owners, rank: 1)
    let ids: [Int32] = [4, 0, 2, 4, 0, 4]
    let (order, tiles) = try CUDAExpertParallelLayer.receivedRowTiles(
        ids: ids, ownerOfExpert: owners, heldExpertIndex: held, rank: 1, tileRows: 2)
    #expect(order == [1, 4, 2, 0, 3, 5], "stable by expert: expert 0's rows, then 2's, then 4's")
    #expect(tiles.map(\.expert) == [0, 1, 2, 2])
    #expect(tiles.map(\.rowStart) == [0, 2, 3, 5])
    #expect(tiles.map(\.rowCount) == [2, 1, 2, 1])

    // A row for an expert another rank owns is an error that names it, not a wrong GEMM.
    #expect(throws: CUDAError.self) {
        _ = try CUDAExpertParallelLayer.receivedRowTiles(ids: [3], ownerOfExpert: owners, heldExpertIndex: held, rank: 1, tileRows: 2)
    }
    #expect(throws: CUDAError.self) {
        _ = try CUDAExpertParallelLayer.receivedRowTiles(ids: [6], ownerOfExpert: owners, heldExpertIndex: held, rank: 1, tileRows: 2)
    }
}

/// With CUDA_VISIBLE_DEVICES giving each rank one GPU, every rank is "device 0": the check tells GPUs apart by PCI
/// address, resolved in this process. A node GPU this process cannot see refuses the IPC paths with the reason
/// (before, no pair was checked and the first IPC open failed); pairs without P2P are named by PCI address.
@Test func peerAccessIsCheckedByPCIAddressNotByEachProcesssOrdinal() throws {
    var api = CCUDADriverAPI()
    api.cuDeviceGet = { device, ordinal in
        device?.pointee = ordinal
        return 0
    }
    api.cuDeviceGetByPCIBusId = { device, busID in
        // This process sees the GPUs on buses 0x10 and 0x20 (devices 0 and 1); bus 0x30 is hidden from it.
        switch String(cString: busID!) {
        case "0000:10:00.0": device?.pointee = 0
        case "0000:20:00.0": device?.pointee = 1
        default: return 101  // CUDA_ERROR_INVALID_DEVICE
        }
        return 0
    }
    api.cuDeviceCanAccessPeer = { can, _, _ in
        can?.pointee = 0  // no P2P between any two
        return 0
    }
    let driver = CUDADriver(api: api, libraryPath: "fake")
    let everyRankDeviceZero = { (buses: [Int]) in
        buses.enumerated().map { GPUPlacement(rank: $0.offset, node: 0, host: 1, deviceOrdinal: 0, pciDomain: 0, pciBus: $0.element, pciDevice: 0, ncclLoaded: true) }
    }
    let pairs = try #require(try GPUExpertParallelRunner.peerAccessRefusal(driver: driver, placements: everyRankDeviceZero([0x10, 0x20]), node: 0))
    #expect(pairs.contains("0000:10:00.0→0000:20:00.0, 0000:20:00.0→0000:10:00.0"), "\(pairs)")
    let hidden = try #require(try GPUExpertParallelRunner.peerAccessRefusal(driver: driver, placements: everyRankDeviceZero([0x10, 0x30]), node: 0))
    #expect(hidden.contains("(PCI 0000:30:00) of node 0 is not visible") && hidden.contains("CUDA_VISIBLE_DEVICES"), "\(hidden)")
    // Ranks sharing one physical GPU (the same PCI address) need nothing, whatever their ordinals.
    #expect(try GPUExpertParallelRunner.peerAccessRefusal(driver: driver, placements: everyRankDeviceZero([0x30, 0x30]), node: 0) == nil)
}
