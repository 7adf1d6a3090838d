import MoECUDA
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Failures of GPU expert parallelism that name the rank and phase involved.
public enum GPUExpertParallelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A device barrier of this rank gave up waiting for `peer`.
    case deviceBarrier(rank: Int, phase: ExpertParallelPhase, layer: Int, seconds: Double, peer: PeerStatus, why: String)
    /// Rank 0 found an expert-parallel output differing from the single-rank CUDA forward.
    case mismatch(String)

    public var description: String {
        switch self {
        case .deviceBarrier(let rank, let phase, let layer, let seconds, let peer, let why):
            "rank \(rank): the GPU barrier '\(phase)' of layer \(layer) stopped waiting for rank \(peer.rank) (pid \(peer.pid)): \(why) (device timeout \(seconds) s)"
        case .mismatch(let what): what
        }
    }
}

/// One rank of an expert-parallel job on GPUs: the CPU heap (POSIX shared memory on a node, TCP between nodes)
/// carries the rendezvous, the exchange of GPU placements, CUDA IPC handles and the NCCL unique id, the
/// all-to-all baseline's count exchange and host barriers, liveness, and the gathering of results; the layers
/// themselves run in `CUDAExpertParallelLayer`s over GPU symmetric heaps.
///
/// Device: local rank % device count (one process per GPU; ranks beyond the device count share GPUs, which
/// is how it is tested on one GPU). The all-to-all baseline runs over NCCL or the IPC mappings
/// (`GPUAllToAllTransport.decide`). Across nodes the symmetric path keeps its IPC stores and device barriers
/// inside each node and moves the rest over the rank's rail (`NodeGrid`): an NCCL communicator of the ranks with
/// its local index, one per node, whose sends and receives the layer's graph captures. Every node is a host to
/// NCCL (`NCCL_HOSTID`, unless set), so loopback "nodes" sharing one GPU can test it.
public final class GPUExpertParallelRunner {
    public let environment: RankEnvironment
    public let assignment: ExpertAssignment
    public let heap: SymmetricHeap
    public let layers: [CUDAExpertParallelLayer]
    public let config: MoEConfig
    public let capacity: Int
    public let deviceOrdinal: Int
    /// How the all-to-all baseline moves rows, and why (nil when it cannot run here: `allToAllRefusal`).
    public let transport: GPUAllToAllTransport?
    /// The communicator of the NCCL transport (shared by every layer).
    public let communicator: NCCLCommunicator?
    /// This rank's rail communicator across nodes (shared by every layer; nil on one node).
    public let railCommunicator: NCCLCommunicator?
    /// Why the symmetric path cannot run in this job (nil when it can).
    public let symmetricRefusal: String?
    /// Why the all-to-all baseline cannot run in this job (nil when it can).
    public let allToAllRefusal: String?
    /// The paths this job can run (at least one, or the runner is not made).
    public var availableComms: [CommMode] {
        CommMode.allCases.filter { ($0 == .symmetric ? symmetricRefusal : allToAllRefusal) == nil }
    }

    public var rank: Int { environment.rank }
    public var world: Int { environment.world }
    public var isRoot: Bool { environment.rank == 0 }

    /// Joins the job and opens every peer's GPU heaps (one per layer). Every rank must pass the same layers
    /// and options. `maxBatchTokens` is the largest global batch (it sizes the heaps, capped per rank by
    /// `options.maxTokensPerRank`; larger batches are refused with the limit named).
    public init(
        environment: RankEnvironment, layers weights: [MoELayerWeights], maxBatchTokens: Int, options: ExpertParallelOptions = .init()
    ) throws {
        try environment.validate()
        try Self.requireCUDA()
        Self.nameNodeForNCCL(environment)
        let network = try NetworkRendezvous.forJob(environment)
        guard let first = weights.first, weights.allSatisfy({ $0.config == first.config }) else {
            throw ExpertParallelError.invalidArgument("need ≥ 1 layer, all of one config")
        }
        try RankEnvironment.prepareRankProcess(maxBatchTokens: maxBatchTokens, maxTokensPerRank: options.maxTokensPerRank)
        let config = first.config
        let world = environment.world
        self.environment = environment
        self.config = config
        let assignment = try ExpertAssignment.parse(options.expertMap, experts: config.experts, ranks: world)
        let capacity = min((maxBatchTokens + world - 1) / world, options.maxTokensPerRank)
        // The CPU heap's dispatch region gathers outputs ([R·T_cap·k, H] ≥ every rank's T_loc rows); its pages
        // are only backed where written.
        let cpuLayout = try SymmetricHeapLayout(ranks: world, capacity: capacity, topK: config.topK, hidden: config.hidden)
        let heap = try SymmetricHeap.join(
            jobID: environment.jobID, rank: environment.rank, world: world, layout: cpuLayout,
            identity: HeapIdentity(layers: weights, assignment: assignment),
            timeoutSeconds: options.timeoutSeconds ?? environment.timeoutSeconds, network: network,
            barrierHook: options.barrierHook)
        let rank = environment.rank
        var made: [CUDAExpertParallelLayer] = []
        let ordinal: Int
        var transport: GPUAllToAllTransport?
        var allToAllRefusal: String?
        var symmetricRefusal: String?
        var communicator: NCCLCommunicator?
        var rail: NCCLCommunicator?
        do {
            let devices = try CUDAExpertParallelLayer.deviceCount()
            ordinal = CUDAExpertParallelLayer.deviceOrdinal(localRank: environment.localRank, deviceCount: devices)
            // Every rank's host and GPU, so that every rank picks the same all-to-all transport; before any
            // weights go to the GPU, so that a refused transport fails at once.
            let runtime = try CUDARuntime.shared()
            let device = ordinal == runtime.device.ordinal ? runtime.device : try CUDADevice(driver: runtime.driver, ordinal: ordinal)
            var library: NCCLLibrary?
            var loadFailure: String?
            do { library = try NCCLLibrary.load() } catch { loadFailure = "\(error)" }
            let placement = Self.placement(of: device, environment: environment, ncclLoaded: library != nil)
            let placements = try Self.allGather(placement.encoded(), heap: heap).enumerated().map {
                try GPUPlacement.decode($0.element, rank: $0.offset)
            }
            let requested = options.allToAllTransport ?? environment.allToAllTransport ?? .auto
            // GPUs of a node that cannot reach each other's memory rule out every path through CUDA IPC. Each node
            // can only ask about its own GPUs; the verdicts are gathered so that every rank of the job decides alike
            // (the paths' set-up steps are collective).
            let ownNode = try Self.peerAccessRefusal(driver: runtime.driver, placements: placements, node: environment.nodeRank)
            let verdicts = try Self.allGather([ownNode == nil ? 0 : 1], heap: heap)
            let refusingNodes = Array(Set(placements.filter { verdicts[$0.rank].first == 1 }.map(\.node))).sorted()
            let unreachable = ownNode ?? (refusingNodes.isEmpty ? nil
                : "GPUs of node\(refusingNodes.count > 1 ? "s" : "") \(refusingNodes.map(String.init).joined(separator: ", ")) cannot access each other's memory (see that node's ranks' messages)")
            symmetricRefusal = Self.symmetricRefusal(environment: environment, placements: placements, loadFailure: loadFailure)
                ?? unreachable
            do {
                transport = try GPUAllToAllTransport.decide(requested: requested, placements: placements)
                if let unreachable, transport?.kind == .ipc {
                    throw ExpertParallelError.invalidArgument("the all-to-all baseline over CUDA IPC copies cannot run: \(unreachable)")
                }
            } catch {
                let why = loadFailure.map { "\(error); on rank \(rank): \($0)" } ?? "\(error)"
                // An explicit --a2a-transport, or a job where neither path can run, fails; otherwise the
                // symmetric path runs alone and the baseline's absence is reported with its reason.
                guard requested == .auto, symmetricRefusal == nil else {
                    throw ExpertParallelError.invalidArgument(symmetricRefusal.map { "\(why); and the symmetric path: \($0)" } ?? why)
                }
                transport = nil
                allToAllRefusal = why
            }
            let owners = (0..<config.experts).map { assignment.owner(of: $0) }
            for w in weights {
                made.append(try CUDAExpertParallelLayer(
                    weights: w, rank: rank, world: world, capacity: capacity, ownerOfExpert: owners,
                    deviceOrdinal: ordinal, timeoutSeconds: heap.timeoutSeconds, nodes: environment.nodes))
            }
            // The peers' heaps are mapped for the paths through CUDA IPC only (NCCL needs no mapping).
            if symmetricRefusal == nil || transport?.kind == .ipc {
                try Self.exchangeHandles(layers: made, heap: heap, environment: environment)
            }
            let watch: @Sendable () -> String? = { GPUExpertParallelRunner.peerFailure(heap: heap, rank: rank) }
            if transport?.kind == .nccl, let library {
                communicator = try Self.makeCommunicator(
                    library: library, device: made[0].runtime.device, heap: heap, rank: rank, world: world, watch: watch)
                for layer in made { layer.allToAllCommunicator = communicator }
            }
            if environment.nodes > 1, symmetricRefusal == nil, let library {
                rail = try Self.makeRailCommunicator(
                    library: library, device: made[0].runtime.device, heap: heap, environment: environment, watch: watch)
                for layer in made { layer.railCommunicator = rail }
                try made[0].connectRail()
            }
        } catch {
            heap.abort(message: "rank \(rank) could not set up GPU expert parallelism: \(error)")
            for layer in made { layer.close() }
            communicator?.close()
            rail?.close()
            heap.close()
            throw error
        }
        for layer in made { layer.peerWatch = { GPUExpertParallelRunner.peerFailure(heap: heap, rank: rank) } }
        self.assignment = assignment
        self.capacity = capacity
        self.heap = heap
        self.layers = made
        self.deviceOrdinal = ordinal
        self.transport = transport
        self.communicator = communicator
        self.railCommunicator = rail
        self.symmetricRefusal = symmetricRefusal
        self.allToAllRefusal = allToAllRefusal
    }

    /// The transport line the ranks print: both paths, which transport and why.
    public var transportLine: String {
        let nodes = environment.nodes
        let symmetric = symmetricRefusal.map { "not available (\($0))" }
            ?? (nodes == 1
                ? "GPU symmetric heaps over CUDA IPC (one graph per layer, device barriers)"
                : "GPU symmetric heaps over CUDA IPC within each node, NCCL rails of \(nodes) ranks across nodes (one graph per layer, sends and receives captured, device barriers per node)")
        let baseline = transport?.summary ?? "not available (\(allToAllRefusal ?? "refused"))"
        return "transport: symmetric: \(symmetric); all-to-all baseline: \(baseline)"
    }

    /// Why the symmetric path cannot run in this job: across nodes its rails need NCCL on every rank. Nil when
    /// it can (always on one node).
    static func symmetricRefusal(environment: RankEnvironment, placements: [GPUPlacement], loadFailure: String?) -> String? {
        guard environment.nodes > 1 else { return nil }
        let unloaded = placements.filter { !$0.ncclLoaded }.map(\.rank)
        guard !unloaded.isEmpty else { return nil }
        let ranks = unloaded.map(String.init).joined(separator: ", ")
        let mine = loadFailure.map { "; on this rank: \($0)" } ?? ""
        return "the symmetric path across \(environment.nodes) nodes moves rows between nodes over NCCL, and libnccl could not be loaded on rank\(unloaded.count > 1 ? "s" : "") \(ranks) (set MOE_CUDA_LIBRARY_PATH to the folder holding libnccl.so.2)\(mine)"
    }

    /// Why CUDA IPC stores cannot run on this node: GPUs of its ranks that this process cannot see, or that cannot
    /// access each other's memory (`cuDeviceCanAccessPeer`, every ordered pair of distinct GPUs). Nil when all can,
    /// when the ranks share one GPU, or when the driver lacks the query. The GPUs are told apart by PCI address: an
    /// ordinal means something only in its own process (with CUDA_VISIBLE_DEVICES every rank may be "device 0").
    /// The runner gathers every rank's verdict, so the ranks of a job decide alike even if they see different GPUs.
    static func peerAccessRefusal(driver: CUDADriver, placements: [GPUPlacement], node: Int) throws -> String? {
        var gpus: [GPUPlacement] = []
        for p in placements.sorted(by: { $0.rank < $1.rank }) where p.node == node && !gpus.contains(where: { $0.gpuKey == p.gpuKey }) {
            gpus.append(p)
        }
        guard gpus.count > 1, driver.api.cuDeviceCanAccessPeer != nil else { return nil }
        var devices: [Int32] = []  // CUdevice
        var unseen: [String] = []
        for gpu in gpus {
            if let busID = gpu.pciBusID, driver.api.cuDeviceGetByPCIBusId != nil {
                if let device = driver.device(pciBusID: busID) { devices.append(device) } else { unseen.append(gpu.gpuName) }
            } else {
                devices.append(try driver.device(ordinal: gpu.deviceOrdinal))
            }
        }
        guard unseen.isEmpty else {
            return "\(unseen.joined(separator: ", ")) \(unseen.count > 1 ? "are" : "is") not visible to rank processes of node \(node) "
                + "(CUDA_VISIBLE_DEVICES?); the symmetric path stores into every node GPU's memory, so each rank must see all of its node's GPUs"
        }
        // Named by ordinal where those tell the GPUs apart in one process, else by PCI address.
        let distinctOrdinals = Set(gpus.map(\.deviceOrdinal)).count == gpus.count
        func label(_ gpu: GPUPlacement) -> String { distinctOrdinals ? "\(gpu.deviceOrdinal)" : gpu.pciBusID ?? "\(gpu.deviceOrdinal)" }
        var missing: [String] = []
        for (i, a) in gpus.enumerated() {
            for (j, b) in gpus.enumerated() where i != j {
                if try driver.canAccessPeer(device: devices[i], peer: devices[j]) == false { missing.append("\(label(a))→\(label(b))") }
            }
        }
        guard !missing.isEmpty else { return nil }
        return "GPUs of node \(node) cannot access each other's memory (cuDeviceCanAccessPeer is 0 for \(missing.joined(separator: ", "))); "
            + "the symmetric path stores into peers' GPU memory directly. See `nvidia-smi topo -p2p r`"
    }

    /// Tells NCCL that each node of a multi-node job is its own host (`NCCL_HOSTID`, unless the user set it), as
    /// MoEKit treats it: then two loopback "nodes" on one machine, even on one shared GPU, are peers to NCCL
    /// rather than a "Duplicate GPU". Set before any NCCL call: NCCL reads it once.
    static func nameNodeForNCCL(_ environment: RankEnvironment) {
        guard environment.nodes > 1 else { return }
        setenv("NCCL_HOSTID", "\(GPUPlacement.hostName())/moe-node-\(environment.nodeRank)", 0)
    }

    /// This rank's host and GPU (its PCI address, when the driver gives it).
    static func placement(of device: CUDADevice, environment: RankEnvironment, ncclLoaded: Bool) -> GPUPlacement {
        func attribute(_ id: Int32) -> Int {
            var value: Int32 = -1
            guard let get = device.driver.api.cuDeviceGetAttribute, get(&value, id, device.handle) == 0 else { return -1 }
            return Int(value)
        }
        // CUdevice_attribute: PCI bus id 33, PCI device id 34, PCI domain id 50.
        return GPUPlacement(
            rank: environment.rank, node: environment.nodeRank, host: GPUPlacement.hostDigest(), deviceOrdinal: device.ordinal,
            pciDomain: attribute(50), pciBus: attribute(33), pciDevice: attribute(34), ncclLoaded: ncclLoaded)
    }

    /// Every rank's `record` (at most one results row), in rank order: each rank stores it into row `rank` of every
    /// peer's results region (a network store for peers on other nodes), a barrier, read, a barrier (rows reusable).
    static func allGather(_ record: [UInt8], heap: SymmetricHeap) throws -> [[UInt8]] {
        let rowBytes = heap.layout.resultWords * 8
        guard record.count <= rowBytes else {
            throw ExpertParallelError.invalidArgument("a \(record.count)-byte record does not fit a \(rowBytes)-byte results row")
        }
        for peer in 0..<heap.world {
            try heap.store(to: peer, .results, byteOffset: heap.rank * rowBytes, from: record, count: record.count)
        }
        try heap.barrier(.step, layer: 0)
        let results = heap.address(of: .results, rank: heap.rank)
        let rows = (0..<heap.world).map { Array(UnsafeRawBufferPointer(start: results + $0 * rowBytes, count: record.count)) }
        try heap.barrier(.step, layer: 0)
        return rows
    }

    /// `count` bytes that rank 0 makes (`make` runs there only), on every rank: rank 0 stores them into row 0 of
    /// every rank's results region (a network store for ranks on other nodes), a barrier, read, a barrier.
    static func broadcastFromRankZero(count: Int, heap: SymmetricHeap, make: () throws -> [UInt8]) throws -> [UInt8] {
        guard count <= heap.layout.resultWords * 8 else {
            throw ExpertParallelError.invalidArgument("\(count) bytes do not fit a results row")
        }
        if heap.rank == 0 {
            let bytes = try make()
            guard bytes.count == count else {
                throw ExpertParallelError.invalidArgument("rank 0 made \(bytes.count) bytes to share; expected \(count)")
            }
            for peer in 0..<heap.world { try heap.store(to: peer, .results, byteOffset: 0, from: bytes, count: count) }
        }
        try heap.barrier(.step, layer: 0)
        let bytes = Array(UnsafeRawBufferPointer(start: heap.address(of: .results, rank: heap.rank), count: count))
        try heap.barrier(.step, layer: 0)
        return bytes
    }

    /// The rail of `environment`'s rank: the ranks with its local index, one per node, rail rank = node. Each
    /// rail's first rank (node 0) makes its unique id; every rank's id goes to every rank (the CPU heap), and
    /// each takes its rail's, then joins, watched for dead peers and the heap's timeout.
    static func makeRailCommunicator(
        library: NCCLLibrary, device: CUDADevice, heap: SymmetricHeap, environment: RankEnvironment,
        watch: @escaping @Sendable () -> String?
    ) throws -> NCCLCommunicator {
        let isRailRoot = environment.nodeRank == 0
        let mine = isRailRoot
            ? try NCCLCommunicator.makeUniqueID(library: library, rank: environment.rank)
            : [UInt8](repeating: 0, count: NCCLCommunicator.uniqueIDBytes)
        let ids = try allGather(mine, heap: heap)
        return try NCCLCommunicator(
            library: library, device: device, uniqueID: ids[environment.localRank], rank: environment.nodeRank,
            world: environment.nodes, timeoutSeconds: heap.timeoutSeconds, peerWatch: watch)
    }

    /// Rank 0 makes the NCCL unique id and stores it into every rank's results region (across nodes too); every
    /// rank then joins the communicator, watched for dead peers and the heap's timeout.
    static func makeCommunicator(
        library: NCCLLibrary, device: CUDADevice, heap: SymmetricHeap, rank: Int, world: Int,
        watch: @escaping @Sendable () -> String?
    ) throws -> NCCLCommunicator {
        let id = try broadcastFromRankZero(
            count: NCCLCommunicator.uniqueIDBytes, heap: heap, make: { try NCCLCommunicator.makeUniqueID(library: library) })
        return try NCCLCommunicator(
            library: library, device: device, uniqueID: id, rank: rank, world: world, timeoutSeconds: heap.timeoutSeconds,
            peerWatch: watch)
    }

    deinit { close() }

    /// Throws, saying why, when this machine cannot run the CUDA backend.
    public static func requireCUDA() throws {
        let availability = CUDABackend.availability()
        guard availability.available else {
            throw ExpertParallelError.invalidArgument(
                "GPU expert parallelism needs the CUDA backend, which is unavailable here: \(availability.reason); use --backend cpu")
        }
    }

    /// Closes the IPC mappings and the NCCL communicators, and marks this rank done.
    public func close() {
        for layer in layers { layer.close() }
        // Each rank frees its GPU heaps with its layers after this, and cuMemFree of an allocation another process
        // still has open through cuIpcOpenMemHandle is undefined behaviour: wait until every rank has closed its
        // mappings of the others'. A peer that is gone, aborted or already finished ends the wait at once, a peer at
        // another barrier fails it (SymmetricHeap.barrier); a second close finds the heap closed and skips it.
        try? heap.barrier(.finish, layer: 0)
        communicator?.close()
        railCommunicator?.close()
        heap.close()
    }

    /// Every rank's handle records (one per layer, 96 bytes each) go into row `rank` of every peer's results
    /// region; after a barrier each rank opens the heaps of its peers on this node (CUDA IPC reaches one host);
    /// a second barrier keeps the rows until all read.
    static func exchangeHandles(layers: [CUDAExpertParallelLayer], heap: SymmetricHeap, environment: RankEnvironment) throws {
        let (rank, world) = (environment.rank, environment.world)
        let rowBytes = heap.layout.resultWords * 8
        guard layers.count * CUDAIPCHandleRecord.byteCount <= rowBytes else {
            throw ExpertParallelError.invalidArgument("\(layers.count) layers' IPC handles do not fit the results region")
        }
        var mine: [UInt8] = []
        for layer in layers { mine += try layer.handleRecord(pid: Int(getpid())).encoded() }
        for peer in 0..<world {
            try heap.store(to: peer, .results, byteOffset: rank * rowBytes, from: mine, count: mine.count)
        }
        try heap.barrier(.step, layer: 0)
        let results = heap.address(of: .results, rank: rank)
        for (index, layer) in layers.enumerated() {
            var records: [CUDAIPCHandleRecord?] = []
            for peer in 0..<world {
                guard environment.isOnThisNode(peer) else {
                    records.append(nil)
                    continue
                }
                let start = results + peer * rowBytes + index * CUDAIPCHandleRecord.byteCount
                let bytes = Array(UnsafeRawBufferPointer(start: start, count: CUDAIPCHandleRecord.byteCount))
                records.append(try CUDAIPCHandleRecord.decode(bytes, rank: peer))
            }
            try layer.connect(peers: records)
        }
        try heap.barrier(.step, layer: 0)
    }

    /// A peer the CPU heap sees aborted or dead (polled while this rank waits on its GPU).
    static func peerFailure(heap: SymmetricHeap, rank: Int) -> String? {
        for peer in 0..<heap.world where peer != rank {
            let base = heap.bases[peer]
            switch ControlBlock.state(base) {
            case .aborted: return "rank \(peer) aborted: \(ControlBlock.abortMessage(base))"
            case .lost: return "the connection to rank \(peer) (another node) was lost"
            case .finished: continue
            default: if heap.processIsGone(peer) { return "rank \(peer)'s process is gone" }
            }
        }
        return nil
    }

    /// This rank's token range of a global batch of `tokens`.
    public func tokenRange(tokens: Int) -> Range<Int> { GlobalBatch.range(rank: rank, world: world, tokens: tokens) }

    /// Maps a device-barrier failure to an error naming the awaited rank, its state and the phase; tells the
    /// peers this rank stops.
    func fail(_ error: Error, layer: Int) -> Error {
        var result = error
        if case CUDAExpertParallelError.deviceBarrier(_, let failure, let seconds) = error {
            let peer = failure.awaitedRank
            let phase = ExpertParallelPhase(rawValue: UInt8(truncatingIfNeeded: failure.phase)) ?? .route
            let why: String
            if let failed = Self.peerFailure(heap: heap, rank: rank), failed.hasPrefix("rank \(peer)") {
                why = failed
            } else if failure.reason == .aborted {
                why = "aborted because " + (Self.peerFailure(heap: heap, rank: rank) ?? "a peer failed")
            } else {
                why = "it did not arrive in time"
            }
            result = GPUExpertParallelError.deviceBarrier(
                rank: rank, phase: phase, layer: layer, seconds: seconds, peer: heap.status(of: peer), why: why)
        }
        heap.abort(message: "rank \(rank), layer \(layer): \(result)")
        return result
    }

    /// One rank's share through `layerIndices` (default: every layer, in order).
    public func forwardShare(
        _ share: [Float], tokens: Int, mode: RoutingMode, comm: CommMode, layerIndices: [Int]? = nil,
        execution: CUDAExpertParallelLayer.Execution = .graph, poison: Bool = false
    ) throws -> [Float] {
        if let refusal = comm == .symmetric ? symmetricRefusal : allToAllRefusal {
            let error = ExpertParallelError.invalidArgument("rank \(rank): the \(comm) path cannot run in this job: \(refusal)")
            heap.abort(message: "\(error)")
            throw error
        }
        var x = share
        for index in layerIndices ?? Array(layers.indices) {
            do {
                switch comm {
                case .symmetric:
                    x = try layers[index].forwardSymmetric(x, tokens: tokens, mode: mode, execution: execution, poison: poison).hidden
                case .alltoall:
                    x = try layers[index].forwardAllToAll(x, tokens: tokens, mode: mode, host: HostSide(heap: heap, layer: index), poison: poison).hidden
                }
            } catch {
                throw fail(error, layer: index)
            }
        }
        return x
    }

    /// The layers on a global batch [T, H] (each rank computes its share); the full output on rank 0, nil elsewhere.
    public func forward(
        _ globalInput: [Float], tokens: Int, mode: RoutingMode, comm: CommMode, layerIndices: [Int]? = nil,
        execution: CUDAExpertParallelLayer.Execution = .graph, poison: Bool = false
    ) throws -> [Float]? {
        let H = config.hidden
        guard tokens >= 1, globalInput.count == tokens * H else {
            throw ExpertParallelError.invalidArgument("input holds \(globalInput.count) values; expected T·H = \(tokens)·\(H)")
        }
        let range = tokenRange(tokens: tokens)
        let share = Array(globalInput[(range.lowerBound * H)..<(range.upperBound * H)])
        let out = try forwardShare(
            share, tokens: tokens, mode: mode, comm: comm, layerIndices: layerIndices, execution: execution, poison: poison)
        return try gather(out, tokens: tokens)
    }

    /// Every rank's top-k of the last forward through `layer` ([T_r, k] ids and weights) to rank 0, in global
    /// token order ([T, k] each on rank 0; nil elsewhere), through rank 0's CPU dispatch region.
    public func gatherRouting(layer: Int, tokens: Int) throws -> (ids: [Int32], weights: [Float])? {
        let k = config.topK
        let perRank = (tokens + world - 1) / world
        do {
            let (ids, weights) = try layers[layer].lastRouting(tokens: tokens)
            let base = rank * perRank * k * 8
            try heap.store(to: 0, .dispatch, byteOffset: base, from: ids, count: ids.count * 4)
            try heap.store(to: 0, .dispatch, byteOffset: base + perRank * k * 4, from: weights, count: weights.count * 4)
            try heap.barrier(.gather, layer: 0)
            var result: (ids: [Int32], weights: [Float])?
            if isRoot {
                let landing = heap.address(of: .dispatch, rank: 0)
                var allIds: [Int32] = [], allWeights: [Float] = []
                for peer in 0..<world {
                    let count = max(0, min(perRank, tokens - peer * perRank)) * k
                    let at = landing + peer * perRank * k * 8
                    for i in 0..<count {
                        allIds.append(at.load(fromByteOffset: i * 4, as: Int32.self))
                        allWeights.append(at.load(fromByteOffset: perRank * k * 4 + i * 4, as: Float.self))
                    }
                }
                result = (allIds, allWeights)
            }
            try heap.barrier(.gather, layer: 0)
            return result
        } catch {
            heap.abort(message: "rank \(rank) while gathering the routing: \(error)")
            throw error
        }
    }

    /// Every rank's [T_r, H] rows to rank 0 through rank 0's CPU dispatch region (bf16: nothing is lost).
    public func gather(_ rows: [Float], tokens: Int) throws -> [Float]? {
        let H = config.hidden
        let perRank = (tokens + world - 1) / world
        do {
            let bits = rows.map { BF16.bits($0) }
            try heap.store(to: 0, .dispatch, byteOffset: rank * perRank * H * 2, from: bits, count: bits.count * 2)
            try heap.barrier(.gather, layer: 0)
            var result: [Float]?
            if isRoot {
                let landing = heap.pointer(to: .dispatch, rank: 0, as: UInt16.self)
                result = (0..<(tokens * H)).map { BF16.float(landing[$0]) }
            }
            try heap.barrier(.gather, layer: 0)
            return result
        } catch {
            heap.abort(message: "rank \(rank) while gathering outputs: \(error)")
            throw error
        }
    }
}

/// The all-to-all baseline's host side over the CPU heap.
final class HostSide: CUDAExpertParallelHost {
    let heap: SymmetricHeap
    let layer: Int
    init(heap: SymmetricHeap, layer: Int) {
        self.heap = heap
        self.layer = layer
    }

    func exchangeCounts(_ counts: [Int32]) throws -> [Int32] {
        let R = heap.world
        let stride = R * 2 * 4
        for peer in 0..<R {
            try heap.store(to: peer, .allToAllCounts, byteOffset: heap.rank * stride, from: counts, count: R * 4)
        }
        try heap.barrier(.allToAllCounts, layer: layer)
        let region = heap.address(of: .allToAllCounts, rank: heap.rank)
        var all: [Int32] = []
        for source in 0..<R {
            for destination in 0..<R { all.append(region.load(fromByteOffset: source * stride + destination * 4, as: Int32.self)) }
        }
        return all
    }

    func hostBarrier(phase: UInt8) throws {
        try heap.barrier(ExpertParallelPhase(rawValue: phase) ?? .allToAllDispatch, layer: layer)
    }
}
