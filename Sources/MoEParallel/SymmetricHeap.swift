import CMoEAtomics
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a rank loaded, compared field by field when ranks meet: peers with a different model, config or
/// expert map are refused at rendezvous.
public struct HeapIdentity: Sendable, Equatable {
    public var configDigest: UInt64
    public var weightsDigest: UInt64
    public var assignmentDigest: UInt64
    /// Human-readable config, shown when configs differ.
    public var configText: String

    public init(configDigest: UInt64, weightsDigest: UInt64, assignmentDigest: UInt64, configText: String) {
        self.configDigest = configDigest
        self.weightsDigest = weightsDigest
        self.assignmentDigest = assignmentDigest
        self.configText = configText
    }

    /// The identity of running `layers` with `assignment`.
    public init(layers: [MoELayerWeights], assignment: ExpertAssignment) {
        let config = layers.first?.config ?? MoEConfig(hidden: 0, intermediate: 0, experts: 0, topK: 0)
        self.init(
            configDigest: ModelDigest.config(config, layers: layers.count),
            weightsDigest: ModelDigest.weights(layers),
            assignmentDigest: assignment.digest,
            configText: "\(config), \(layers.count) layer\(layers.count == 1 ? "" : "s")")
    }
}

/// This rank's view of the job's symmetric heaps: its own segment plus a mapping of every peer's, all with the
/// layout of `layout`. Any rank can store straight into any peer's regions; `barrier` orders the phases.
///
/// Lifecycle: `join` creates this rank's segment, waits for every peer's, checks they were built for the same
/// model, meets the others at a setup barrier, then unlinks its name (every peer has it mapped by then), so
/// from that point nothing can leak into /dev/shm whatever happens to the process. `close` marks the heap
/// finished; `abort` tells the peers why this rank gives up, so they fail at once instead of timing out.
public final class SymmetricHeap: @unchecked Sendable {
    public let rank: Int
    public let world: Int
    public let layout: SymmetricHeapLayout
    public let jobID: String
    /// Seconds a barrier waits for late peers before failing.
    public let timeoutSeconds: Double
    /// [R] mapped segments of the ranks on this node (index `rank` is this rank's own); nil for remote ranks.
    let segments: [SharedMemorySegment?]
    /// [R] connections to the ranks on other nodes; nil for ranks on this node.
    let remotes: [NetworkPeer?]
    /// [R] base addresses: a mapped segment, or a remote rank's shadow control block (control region only).
    @usableFromInline let bases: [UnsafeMutableRawPointer]
    @usableFromInline let mapped: [Bool]
    /// Barriers passed so far; the next barrier is number `epoch + 1`.
    private(set) var epoch: UInt64 = 0
    private(set) var isClosed = false
    private let barrierHook: (@Sendable (ExpertParallelPhase, Int) -> Void)?
    private var lastLivenessProbe = 0.0
    /// Tests only: runs in a barrier wait after the late ranks were read and before their states are, so a test can
    /// let a peer arrive, pass and close in exactly that window.
    var afterLateRanksRead: (() -> Void)?

    /// A fresh job id: 16 random hex digits (segment names embed it, so concurrent jobs never collide).
    public static func newJobID() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// The POSIX shared-memory name of `rank`'s segment in job `jobID`.
    public static func segmentName(jobID: String, rank: Int) -> String { "/moe-\(jobID)-\(rank)" }

    /// Creates this rank's heap and maps every peer's; returns once all R ranks have joined.
    /// Throws `joinTimeout` naming a rank that never appeared, `mismatchedPeer` for a rank built differently.
    ///
    /// `published` (at most 252 bytes) is shown to every rank on this node through `published(by:)`: how a GPU
    /// backend hands its peers the IPC handle of its device heap (DESIGN §4: device memory exported between
    /// processes) using this same rendezvous. `barrierHook`, when given, runs before this rank arrives at every
    /// barrier (fault-injection tests use it to kill or stall a rank at an exact phase).
    public static func join(
        jobID: String, rank: Int, world: Int, layout: SymmetricHeapLayout, identity: HeapIdentity,
        timeoutSeconds: Double = 60, network: NetworkRendezvous? = nil, published: [UInt8] = [],
        barrierHook: (@Sendable (ExpertParallelPhase, Int) -> Void)? = nil
    ) throws -> SymmetricHeap {
        guard published.count <= ControlBlock.publishedBytes else {
            throw ExpertParallelError.invalidArgument(
                "a rank can publish at most \(ControlBlock.publishedBytes) bytes at rendezvous, got \(published.count)")
        }
        guard world == layout.ranks, rank >= 0, rank < world else {
            throw ExpertParallelError.invalidArgument("rank \(rank) of \(world) does not fit a heap laid out for \(layout.ranks) ranks")
        }
        guard !jobID.isEmpty, jobID.utf8.count <= 24, jobID.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw ExpertParallelError.invalidArgument("job id '\(jobID)' must be 1-24 letters, digits or '_'")
        }
        guard timeoutSeconds > 0 else { throw ExpertParallelError.invalidArgument("timeout must be > 0 s, got \(timeoutSeconds)") }
        let localRanks = network?.localRanks ?? 0..<world
        guard localRanks.contains(rank), localRanks.lowerBound >= 0, localRanks.upperBound <= world else {
            throw ExpertParallelError.invalidArgument("rank \(rank) is not among this node's ranks \(localRanks)")
        }
        let own = try SharedMemorySegment.create(name: segmentName(jobID: jobID, rank: rank), byteCount: layout.totalBytes)
        ControlBlock.writeHeader(own.base, rank: rank, world: world, layout: layout, identity: identity, published: published)

        var segments: [SharedMemorySegment?] = Array(repeating: nil, count: world)
        var remotes: [NetworkPeer?] = Array(repeating: nil, count: world)
        segments[rank] = own
        let deadline = MonotonicClock.seconds() + timeoutSeconds
        do {
            // Visit peers round-robin so that one slow peer does not hide a mismatched one.
            var pending = localRanks.filter { $0 != rank }
            while !pending.isEmpty {
                var stillPending: [Int] = []
                for peer in pending {
                    if let segment = try openPeer(peer, jobID: jobID, layout: layout, identity: identity, ownRank: rank) {
                        segments[peer] = segment
                    } else {
                        stillPending.append(peer)
                    }
                }
                pending = stillPending
                if pending.isEmpty { break }
                if MonotonicClock.seconds() > deadline {
                    throw ExpertParallelError.joinTimeout(
                        rank: pending[0], seconds: timeoutSeconds, segment: segmentName(jobID: jobID, rank: pending[0]))
                }
                MonotonicClock.sleep(seconds: 0.002)
            }
            if let network, localRanks.count < world {
                let peers = try network.connect(
                    rank: rank, world: world, layout: layout, identity: identity, ownBase: own.base, deadline: deadline)
                for peer in peers { remotes[peer.rank] = peer }
            }
        } catch {
            ControlBlock.publishAbort(own.base, message: "\(error)")
            throw error
        }
        let heap = SymmetricHeap(
            rank: rank, world: world, layout: layout, jobID: jobID, timeoutSeconds: timeoutSeconds,
            segments: segments, remotes: remotes, barrierHook: barrierHook)
        do {
            for peer in remotes.compactMap({ $0 }) {
                nonisolated(unsafe) let ownBase = own.base  // lives as long as the heap, which outlives the receivers
                try peer.startReceiving { SymmetricHeap.ringDoorbell(ownBase) }
            }
            try heap.barrier(.setup, layer: 0)
        } catch {
            heap.abort(message: "\(error)")
            throw error
        }
        own.unlink()
        return heap
    }

    private init(
        rank: Int, world: Int, layout: SymmetricHeapLayout, jobID: String, timeoutSeconds: Double,
        segments: [SharedMemorySegment?], remotes: [NetworkPeer?], barrierHook: (@Sendable (ExpertParallelPhase, Int) -> Void)?
    ) {
        self.barrierHook = barrierHook
        self.remotes = remotes
        self.mapped = segments.map { $0 != nil }
        self.rank = rank
        self.world = world
        self.layout = layout
        self.jobID = jobID
        self.timeoutSeconds = timeoutSeconds
        self.segments = segments
        self.bases = (0..<world).map { segments[$0]?.base ?? remotes[$0]!.shadow }
    }

    deinit { close() }

    /// Opens `peer`'s segment once it exists and is ready; checks it was built like ours.
    private static func openPeer(
        _ peer: Int, jobID: String, layout: SymmetricHeapLayout, identity: HeapIdentity, ownRank: Int
    ) throws -> SharedMemorySegment? {
        let name = segmentName(jobID: jobID, rank: peer)
        guard let segment = try SharedMemorySegment.openExisting(name: name, minimumBytes: ControlBlock.byteCount(ranks: 1))
        else { return nil }
        let base = segment.base
        switch ControlBlock.state(base) {
        case .creating: return nil  // header not published yet; try again
        case .aborted: throw ExpertParallelError.peerAborted(rank: peer, message: ControlBlock.abortMessage(base))
        case .ready, .finished, .lost: break
        }
        func u64(_ offset: Int) -> UInt64 { base.load(fromByteOffset: offset, as: UInt64.self) }
        func u32(_ offset: Int) -> UInt32 { base.load(fromByteOffset: offset, as: UInt32.self) }
        func mismatch(_ field: String, _ mine: String, _ theirs: String) -> ExpertParallelError {
            .mismatchedPeer(rank: peer, field: field, mine: mine, theirs: theirs)
        }
        func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
        guard u32(ControlBlock.versionField) == ControlBlock.version else {
            throw mismatch("heap format version", "\(ControlBlock.version)", "\(u32(ControlBlock.versionField))")
        }
        guard Int(u32(ControlBlock.world)) == layout.ranks else {
            throw mismatch("world size", "\(layout.ranks)", "\(u32(ControlBlock.world))")
        }
        guard Int(u32(ControlBlock.rank)) == peer else {
            throw mismatch("rank in its heap", "\(peer)", "\(u32(ControlBlock.rank))")
        }
        guard u64(ControlBlock.configDigest) == identity.configDigest else {
            throw mismatch("model config", identity.configText, ControlBlock.identityText(base))
        }
        guard u64(ControlBlock.weightsDigest) == identity.weightsDigest else {
            throw mismatch("model weights (digest)", hex(identity.weightsDigest), hex(u64(ControlBlock.weightsDigest)))
        }
        guard u64(ControlBlock.assignmentDigest) == identity.assignmentDigest else {
            throw mismatch("expert map (digest)", hex(identity.assignmentDigest), hex(u64(ControlBlock.assignmentDigest)))
        }
        guard Int(u64(ControlBlock.capacity)) == layout.capacity else {
            throw mismatch("heap capacity (tokens per rank)", "\(layout.capacity)", "\(u64(ControlBlock.capacity))")
        }
        guard u64(ControlBlock.layoutDigest) == layout.digest, segment.byteCount == layout.totalBytes else {
            throw mismatch(
                "heap layout", "\(layout.totalBytes) bytes, digest \(hex(layout.digest))",
                "\(segment.byteCount) bytes, digest \(hex(u64(ControlBlock.layoutDigest)))")
        }
        return segment
    }

    // MARK: addressing

    /// Whether `peer`'s heap is mapped into this process (a rank on this node, or this rank itself).
    @inlinable public func isMapped(_ peer: Int) -> Bool { mapped[peer] }

    /// The base of `region` in `peer`'s heap; `peer` must be mapped (use `store` to reach any rank).
    @inlinable
    public func address(of region: SymmetricHeapLayout.Region, rank peer: Int) -> UnsafeMutableRawPointer {
        precondition(mapped[peer], "rank \(peer) is on another node: its heap is reached with store(to:)")
        return bases[peer] + layout.offset(of: region)
    }

    /// Stores `count` bytes at `byteOffset` of `region` in `peer`'s heap: a plain copy for ranks on this node,
    /// a queued network store for ranks on other nodes (delivered before this rank's next barrier arrival).
    @inlinable
    public func store(
        to peer: Int, _ region: SymmetricHeapLayout.Region, byteOffset: Int, from source: UnsafeRawPointer, count: Int
    ) throws {
        if mapped[peer] {
            (bases[peer] + layout.offset(of: region) + byteOffset).copyMemory(from: source, byteCount: count)
        } else {
            try storeRemote(to: peer, region, byteOffset: byteOffset, from: source, count: count)
        }
    }

    @usableFromInline
    func storeRemote(
        to peer: Int, _ region: SymmetricHeapLayout.Region, byteOffset: Int, from source: UnsafeRawPointer, count: Int
    ) throws {
        try remotes[peer]!.write(region, byteOffset: byteOffset, from: source, count: count)
    }

    /// `region` of `peer`'s heap as elements of `type`.
    @inlinable
    public func pointer<T>(to region: SymmetricHeapLayout.Region, rank peer: Int, as type: T.Type) -> UnsafeMutablePointer<T> {
        address(of: region, rank: peer).assumingMemoryBound(to: type)
    }

    /// What `peer` published at rendezvous (a rank on this node).
    public func published(by peer: Int) -> [UInt8] {
        precondition(mapped[peer], "rank \(peer) is on another node; published bytes are shared within a node")
        let base = bases[peer]
        let count = Int(base.load(fromByteOffset: ControlBlock.published, as: UInt32.self))
        return Array(UnsafeRawBufferPointer(start: base + ControlBlock.published + 4, count: min(count, ControlBlock.publishedBytes)))
    }

    // MARK: lifecycle

    /// Tells every peer this rank gives up, and why; peers waiting at a barrier fail at once with the message.
    public func abort(message: String) {
        guard !isClosed else { return }
        ControlBlock.publishAbort(bases[rank], message: message)
        for peer in 0..<world where peer != rank {
            if let remote = remotes[peer] { remote.abort(message: message) } else { ring(peer) }
        }
    }

    /// Marks the heap finished and unmaps it (peers keep their own mappings).
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        if ControlBlock.state(bases[rank]) != .aborted {
            ControlBlock.setState(bases[rank], .finished)
        }
        for peer in 0..<world where peer != rank {
            if let remote = remotes[peer] {
                remote.finish()
                remote.stop()
            } else {
                ring(peer)
            }
        }
        segments[rank]!.unlink()
    }

    /// Wakes any waiter sleeping on `peer`'s doorbell (remote ranks are woken by their receiver threads).
    func ring(_ peer: Int) {
        guard mapped[peer] else { return }
        Self.ringDoorbell(bases[peer])
    }

    static func ringDoorbell(_ base: UnsafeMutableRawPointer) {
        let bell = (base + ControlBlock.doorbell).assumingMemoryBound(to: UInt32.self)
        _ = moe_atomic_fetch_add_u32(bell, 1)
        let sleepers = (base + ControlBlock.sleepers).assumingMemoryBound(to: UInt32.self)
        if moe_atomic_load_seq_cst_u32(sleepers) > 0 { moe_futex_wake_all(bell) }
    }

    /// Whether `peer`'s process ended without closing its heap: its segment lock is gone (the kernel drops it on any
    /// exit, even SIGKILL) and its state is not `finished`. A normal close sets `finished` before it drops the lock, so
    /// the state is read second. (The lock probe is a system call: callers poll it at most every 20 ms or so.)
    func processIsGone(_ peer: Int) -> Bool {
        guard segments[peer]?.ownerIsGone ?? false else { return false }
        return ControlBlock.state(bases[peer]) != .finished
    }

    /// Where `peer` was last seen (for error messages).
    func status(of peer: Int) -> PeerStatus {
        let base = bases[peer]
        let word = moe_atomic_load_acquire_u64((base + ControlBlock.lastArrival).assumingMemoryBound(to: UInt64.self))
        return PeerStatus(
            rank: peer, lastPhase: word == 0 ? nil : ExpertParallelPhase(rawValue: UInt8(word & 0xFF)),
            lastLayer: Int(base.load(fromByteOffset: ControlBlock.lastLayer, as: UInt64.self)),
            pid: base.load(fromByteOffset: ControlBlock.pid, as: Int32.self))
    }

    // MARK: barrier

    /// Waits until every rank has arrived at this barrier. Reusable without limit (an epoch counter, no reset),
    /// tolerant of late ranks, and never hangs: it fails after `timeoutSeconds` naming the late ranks and where
    /// they were, at once when a late peer's process is gone or it aborted, and when a peer is at a different
    /// phase with the same barrier number.
    ///
    /// Protocol: barrier n of rank q stores the word `n << 8 | phase` into slot q of every peer's arrivals
    /// (release), then rings the peer's doorbell; a rank waits until every slot of its own block holds ≥ n
    /// (acquire), sleeping on its doorbell futex between checks. Stores a rank made before the barrier are
    /// visible to every peer after it (release/acquire through the arrival word).
    ///
    /// `waitsIndefinitely`: no timeout (a serving rank idles here until the next batch); a peer that dies,
    /// disconnects, finishes or aborts still ends the wait at once.
    public func barrier(_ phase: ExpertParallelPhase, layer: Int, waitsIndefinitely: Bool = false) throws {
        guard !isClosed else { throw ExpertParallelError.heapClosed }
        barrierHook?(phase, layer)
        epoch += 1
        let word = epoch << 8 | UInt64(phase.rawValue)
        let own = bases[rank]
        own.storeBytes(of: UInt64(layer), toByteOffset: ControlBlock.lastLayer, as: UInt64.self)
        moe_atomic_store_release_u64((own + ControlBlock.lastArrival).assumingMemoryBound(to: UInt64.self), word)
        let arrivals = ControlBlock.arrivals(ranks: world)
        for peer in 0..<world {
            if let remote = remotes[peer] {
                try remote.arrive(word: word, layer: layer)
                continue
            }
            let slot = (bases[peer] + arrivals + rank * 64).assumingMemoryBound(to: UInt64.self)
            moe_atomic_store_release_u64(slot, word)
            if peer != rank { ring(peer) }
        }
        try waitForPeers(epoch: epoch, phase: phase, layer: layer, timeout: waitsIndefinitely ? .infinity : timeoutSeconds)
    }

    private func waitForPeers(epoch: UInt64, phase: ExpertParallelPhase, layer: Int, timeout: Double) throws {
        let own = bases[rank]
        let bell = (own + ControlBlock.doorbell).assumingMemoryBound(to: UInt32.self)
        let sleepers = (own + ControlBlock.sleepers).assumingMemoryBound(to: UInt32.self)
        let arrivals = own + ControlBlock.arrivals(ranks: world)
        let start = MonotonicClock.seconds()
        var checks = 0
        while true {
            let ring = moe_atomic_load_seq_cst_u32(bell)
            var lateCount = 0
            for peer in 0..<world {
                let word = moe_atomic_load_acquire_u64((arrivals + peer * 64).assumingMemoryBound(to: UInt64.self))
                let arrived = word >> 8
                if arrived < epoch {
                    lateCount += 1
                } else if arrived == epoch, UInt8(word & 0xFF) != phase.rawValue {
                    throw ExpertParallelError.phaseMismatch(
                        expected: phase, layer: layer, rank: peer,
                        actual: ExpertParallelPhase(rawValue: UInt8(word & 0xFF)) ?? .setup)
                }
            }
            if lateCount == 0 { return }
            // Spin briefly (a peer on its own core arrives within microseconds), then yield the core for up to
            // ~200 µs (an oversubscribed peer needs it), then sleep on the doorbell futex.
            checks += 1
            if checks < 64 {
                moe_cpu_relax()
                continue
            }
            if MonotonicClock.seconds() - start < 0.0002 {
                sched_yield()
                continue
            }
            let hasArrived = { (peer: Int) -> Bool in
                moe_atomic_load_acquire_u64((arrivals + peer * 64).assumingMemoryBound(to: UInt64.self)) >> 8 >= epoch
            }
            let late = (0..<world).filter { !hasArrived($0) }
            afterLateRanksRead?()
            try checkPeers(late: late, hasArrived: hasArrived, phase: phase, layer: layer, start: start, timeout: timeout)
            _ = moe_atomic_fetch_add_u32(sleepers, 1)
            _ = moe_futex_wait(bell, ring, 20_000_000)
            _ = moe_atomic_fetch_add_u32(sleepers, UInt32.max)  // − 1
        }
    }

    /// Fails if a late peer aborted, finished, died, or the timeout passed.
    ///
    /// `late` was read before the peers' states, so a peer may have arrived, passed this barrier and closed its heap
    /// since: a peer seen finished, lost or gone counts only if its arrival is still missing when read again after
    /// its state. It stored the arrival before it set its state (release), so the second read (after the acquire of
    /// the state) sees it.
    private func checkPeers(
        late: [Int], hasArrived: (Int) -> Bool, phase: ExpertParallelPhase, layer: Int, start: Double, timeout: Double
    ) throws {
        for peer in 0..<world where peer != rank {
            if ControlBlock.state(bases[peer]) == .aborted {
                throw ExpertParallelError.peerAborted(rank: peer, message: ControlBlock.abortMessage(bases[peer]))
            }
        }
        for peer in late {
            switch ControlBlock.state(bases[peer]) {
            case .finished where !hasArrived(peer):
                throw ExpertParallelError.peerFinished(phase: phase, layer: layer, peer: status(of: peer))
            case .lost where !hasArrived(peer):
                throw ExpertParallelError.peerLost(phase: phase, layer: layer, peer: status(of: peer))
            default: break
            }
        }
        let now = MonotonicClock.seconds()
        if now - lastLivenessProbe > 0.02 {
            lastLivenessProbe = now
            // A peer that closed normally is reported above (`finished`), in this round or the next.
            for peer in late where processIsGone(peer) && !hasArrived(peer) {
                throw ExpertParallelError.peerDied(phase: phase, layer: layer, peer: status(of: peer))
            }
        }
        if now - start > timeout {
            throw ExpertParallelError.barrierTimeout(
                phase: phase, layer: layer, seconds: timeout, late: late.map { status(of: $0) })
        }
    }
}

extension ControlBlock {
    static func writeHeader(
        _ base: UnsafeMutableRawPointer, rank: Int, world: Int, layout: SymmetricHeapLayout, identity: HeapIdentity,
        published bytes: [UInt8] = []
    ) {
        base.storeBytes(of: UInt32(bytes.count), toByteOffset: published, as: UInt32.self)
        (base + published + 4).copyMemory(from: bytes, byteCount: bytes.count)
        base.storeBytes(of: version, toByteOffset: versionField, as: UInt32.self)
        base.storeBytes(of: UInt32(rank), toByteOffset: self.rank, as: UInt32.self)
        base.storeBytes(of: UInt32(world), toByteOffset: self.world, as: UInt32.self)
        base.storeBytes(of: getpid(), toByteOffset: pid, as: Int32.self)
        base.storeBytes(of: UInt64(layout.totalBytes), toByteOffset: totalBytes, as: UInt64.self)
        base.storeBytes(of: layout.digest, toByteOffset: layoutDigest, as: UInt64.self)
        base.storeBytes(of: identity.configDigest, toByteOffset: configDigest, as: UInt64.self)
        base.storeBytes(of: identity.weightsDigest, toByteOffset: weightsDigest, as: UInt64.self)
        base.storeBytes(of: identity.assignmentDigest, toByteOffset: assignmentDigest, as: UInt64.self)
        base.storeBytes(of: UInt64(layout.capacity), toByteOffset: capacity, as: UInt64.self)
        writeText(identity.configText, base + identityText, capacity: identityTextBytes)
        base.storeBytes(of: magicValue, toByteOffset: magic, as: UInt64.self)
        setState(base, .ready)  // release: publishes everything above
    }

    static func state(_ base: UnsafeMutableRawPointer) -> State {
        State(rawValue: moe_atomic_load_acquire_u32((base + state).assumingMemoryBound(to: UInt32.self))) ?? .creating
    }

    static func setState(_ base: UnsafeMutableRawPointer, _ value: State) {
        moe_atomic_store_release_u32((base + state).assumingMemoryBound(to: UInt32.self), value.rawValue)
    }

    static func publishAbort(_ base: UnsafeMutableRawPointer, message: String) {
        if self.state(base) == .aborted { return }
        writeText(message, base + abortMessage, capacity: abortMessageBytes)
        setState(base, .aborted)
    }

    static func abortMessage(_ base: UnsafeMutableRawPointer) -> String { readText(base + abortMessage, capacity: abortMessageBytes) }
    static func identityText(_ base: UnsafeMutableRawPointer) -> String { readText(base + identityText, capacity: identityTextBytes) }

    /// Writes UTF-8 text, NUL-terminated, cut to fit (a cut character is repaired when read).
    static func writeText(_ text: String, _ destination: UnsafeMutableRawPointer, capacity: Int) {
        var bytes = Array(text.utf8.prefix(capacity - 1))
        bytes.append(0)
        destination.copyMemory(from: bytes, byteCount: bytes.count)
    }

    static func readText(_ source: UnsafeMutableRawPointer, capacity: Int) -> String {
        let bytes = UnsafeRawBufferPointer(start: source, count: capacity)
        let end = bytes.firstIndex(of: 0) ?? capacity
        return String(decoding: bytes[0..<end], as: UTF8.self)
    }
}
