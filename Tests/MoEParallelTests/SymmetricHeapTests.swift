import Dispatch
import MoECore
import Testing

@testable import MoEParallel

#if canImport(Glibc)
import Glibc
#endif

/// The heap, its rendezvous and its barrier, with ranks as threads (the process tests are elsewhere).
@Suite struct SymmetricHeapTests {
    static let identity = HeapIdentity(configDigest: 1, weightsDigest: 2, assignmentDigest: 3, configText: "test config")

    static func join(
        _ job: String, rank: Int, world: Int, capacity: Int = 4, timeout: Double = 20, identity: HeapIdentity = identity
    ) throws -> SymmetricHeap {
        let layout = try SymmetricHeapLayout(ranks: world, capacity: capacity, topK: 2, hidden: 64, resultWords: 16)
        return try SymmetricHeap.join(
            jobID: job, rank: rank, world: world, layout: layout, identity: identity, timeoutSeconds: timeout)
    }

    @Test func regionsAreAlignedDisjointAndSized() throws {
        let layout = try SymmetricHeapLayout(ranks: 3, capacity: 5, topK: 4, hidden: 96)
        var previousEnd = 0
        for region in SymmetricHeapLayout.Region.allCases {
            let offset = layout.offset(of: region)
            #expect(offset % 128 == 0, "\(region) at \(offset)")
            #expect(offset >= previousEnd, "\(region) overlaps the region before it")
            previousEnd = offset + layout.byteCount(of: region)
        }
        #expect(layout.totalBytes >= previousEnd && layout.totalBytes % 128 == 0)
        #expect(layout.byteCount(of: .dispatch) == 3 * 5 * 4 * 96 * 2)
        #expect(layout.byteCount(of: .combine) == 5 * 4 * 96 * 2)
        #expect(layout.byteCount(of: .routingIds) == 3 * 5 * 4 * 4)
        #expect(layout.digest != (try SymmetricHeapLayout(ranks: 3, capacity: 6, topK: 4, hidden: 96)).digest)
        #expect(throws: ExpertParallelError.self) { try SymmetricHeapLayout(ranks: 2, capacity: 0, topK: 4, hidden: 96) }
    }

    @Test func barrierIsReusableAcrossManyLayersAndOrdersStores() throws {
        let job = SymmetricHeap.newJobID()
        let ranks = 4
        let layers = 300
        let results = RankThreads.run(ranks: ranks) { rank -> Int in
            let heap = try Self.join(job, rank: rank, world: ranks)
            defer { heap.close() }
            var checked = 0
            var generator = SplitMix(seed: UInt64(rank))
            for layer in 0..<layers {
                // Every rank writes its word into slot `rank` of every peer, then a barrier; after it, every
                // peer's word for this layer must be visible. A random pause makes some rank late each time.
                if generator.next() % 7 == 0 { MonotonicClock.sleep(seconds: 0.0002) }
                for peer in 0..<ranks {
                    heap.pointer(to: .routingIds, rank: peer, as: Int32.self)[rank] = Int32(layer * 16 + rank)
                }
                try heap.barrier(.route, layer: layer)
                let own = heap.pointer(to: .routingIds, rank: rank, as: Int32.self)
                for peer in 0..<ranks where own[peer] == Int32(layer * 16 + peer) { checked += 1 }
                // A second barrier before the next layer overwrites the slots (the combine barrier's role).
                try heap.barrier(.combine, layer: layer)
            }
            return checked
        }
        for (rank, result) in results.enumerated() {
            #expect((try? result.get()) == layers * ranks, "rank \(rank): \(result)")
        }
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func aStalledRankMakesTheOthersFailNamingItAndThePhase() throws {
        let job = SymmetricHeap.newJobID()
        let start = MonotonicClock.seconds()
        let results = RankThreads.run(ranks: 3) { rank -> Void in
            let heap = try Self.join(job, rank: rank, world: 3, timeout: 0.5)
            defer { heap.close() }
            try heap.barrier(.route, layer: 0)
            if rank == 2 {
                MonotonicClock.sleep(seconds: 3)  // stalls well past the others' timeout
                return
            }
            try heap.barrier(.dispatch, layer: 7)
        }
        let elapsed = MonotonicClock.seconds() - start
        for rank in 0..<2 {
            guard case .failure(let error) = results[rank], let failure = error as? ExpertParallelError,
                case .barrierTimeout(let phase, let layer, _, let late) = failure
            else {
                Issue.record("rank \(rank) should time out, got \(results[rank])")
                continue
            }
            #expect(phase == .dispatch && layer == 7)
            #expect(late.map(\.rank) == [2])
            #expect(late.first?.lastPhase == .route)
            #expect("\(failure)".contains("rank 2"), "\(failure)")
        }
        #expect(elapsed < 5)
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func anAbortingRankStopsTheOthersAtOnce() throws {
        let job = SymmetricHeap.newJobID()
        let start = MonotonicClock.seconds()
        let results = RankThreads.run(ranks: 3) { rank -> Void in
            let heap = try Self.join(job, rank: rank, world: 3, timeout: 30)
            defer { heap.close() }
            if rank == 1 {
                heap.abort(message: "rank 1 could not read its input")
                return
            }
            try heap.barrier(.combine, layer: 3)
        }
        #expect(MonotonicClock.seconds() - start < 10)
        for rank in [0, 2] {
            guard case .failure(let error) = results[rank] else {
                Issue.record("rank \(rank) passed a barrier rank 1 never reached")
                continue
            }
            #expect(error as? ExpertParallelError == .peerAborted(rank: 1, message: "rank 1 could not read its input"))
        }
    }

    @Test func aRankThatFinishedEarlyIsReportedNotWaitedFor() throws {
        let job = SymmetricHeap.newJobID()
        let results = RankThreads.run(ranks: 2) { rank -> Void in
            let heap = try Self.join(job, rank: rank, world: 2, timeout: 30)
            defer { heap.close() }
            try heap.barrier(.route, layer: 0)
            if rank == 0 { try heap.barrier(.route, layer: 1) }
        }
        guard case .failure(let error) = results[0], case .peerFinished(let phase, let layer, let peer)? = error as? ExpertParallelError
        else {
            Issue.record("rank 0 should see rank 1 finish: \(results[0])")
            return
        }
        #expect(phase == .route && layer == 1 && peer.rank == 1)
    }

    /// A waiter reads which ranks are late, then their states. A peer that arrives, passes the barrier and closes its
    /// heap between the two reads has not finished early: the waiter must pass, not report it (CI once failed so).
    @Test func aPeerThatArrivesAndClosesWhileTheWaiterChecksIsNotReportedFinished() throws {
        let job = SymmetricHeap.newJobID()
        let peerMayArrive = DispatchSemaphore(value: 0)
        let peerClosed = DispatchSemaphore(value: 0)
        let results = RankThreads.run(ranks: 2) { rank -> Bool in
            let heap = try Self.join(job, rank: rank, world: 2, timeout: 30)
            if rank == 0 {
                defer { heap.close() }
                var windows = 0
                heap.afterLateRanksRead = {
                    windows += 1
                    guard windows == 1 else { return }
                    peerMayArrive.signal()
                    peerClosed.wait()
                }
                try heap.barrier(.combine, layer: 0)
                return windows >= 1
            }
            peerMayArrive.wait()
            try heap.barrier(.combine, layer: 0)
            heap.close()
            peerClosed.signal()
            return true
        }
        #expect(try results[1].get())
        #expect(try results[0].get(), "rank 0 never waited with rank 1 late, so the window was not tested")
    }

    @Test func ranksAtDifferentPhasesAreCaught() throws {
        let job = SymmetricHeap.newJobID()
        let results = RankThreads.run(ranks: 2) { rank -> Void in
            let heap = try Self.join(job, rank: rank, world: 2, timeout: 5)
            defer { heap.close() }
            try heap.barrier(rank == 0 ? .route : .allToAllCounts, layer: 0)
        }
        // At least one side sees the other's different phase (the other may pass first and finish).
        let mismatches = results.compactMap { result -> ExpertParallelError? in
            if case .failure(let error) = result { return error as? ExpertParallelError }
            return nil
        }
        #expect(mismatches.contains { if case .phaseMismatch = $0 { true } else { false } }, "\(results)")
    }

    @Test func ranksWithAnotherModelAreRefusedAtRendezvous() throws {
        let cases: [(HeapIdentity, String)] = [
            (HeapIdentity(configDigest: 9, weightsDigest: 2, assignmentDigest: 3, configText: "other config"), "model config"),
            (HeapIdentity(configDigest: 1, weightsDigest: 9, assignmentDigest: 3, configText: "test config"), "model weights"),
            (HeapIdentity(configDigest: 1, weightsDigest: 2, assignmentDigest: 9, configText: "test config"), "expert map"),
        ]
        for (other, field) in cases {
            let job = SymmetricHeap.newJobID()
            let results = RankThreads.run(ranks: 2) { rank -> Void in
                let heap = try Self.join(job, rank: rank, world: 2, timeout: 1, identity: rank == 1 ? other : Self.identity)
                heap.close()
            }
            var sawField = false
            for result in results {
                guard case .failure(let error) = result else {
                    Issue.record("a rank joined a mismatched peer (\(field))")
                    continue
                }
                if case .mismatchedPeer(_, let name, _, _)? = error as? ExpertParallelError, name.hasPrefix(field) { sawField = true }
            }
            #expect(sawField, "\(field): \(results)")
            #expect(leftoverSegments(jobID: job).isEmpty)
        }
    }

    @Test func aMissingRankIsNamedAfterTheJoinTimeout() throws {
        let job = SymmetricHeap.newJobID()
        let results = RankThreads.run(ranks: 2) { rank -> Void in
            // world 3: rank 2 never starts.
            let heap = try Self.join(job, rank: rank, world: 3, timeout: 0.4)
            heap.close()
        }
        for result in results {
            guard case .failure(let error) = result, case .joinTimeout(let rank, _, let segment)? = error as? ExpertParallelError
            else {
                Issue.record("expected a join timeout naming rank 2, got \(result)")
                continue
            }
            #expect(rank == 2 && segment == "/moe-\(job)-2")
        }
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func aDuplicateRankOrStaleSegmentIsRefused() throws {
        let job = SymmetricHeap.newJobID()
        let layout = try SymmetricHeapLayout(ranks: 1, capacity: 1, topK: 1, hidden: 32)
        let first = try SymmetricHeap.join(jobID: job, rank: 0, world: 1, layout: layout, identity: Self.identity)
        // The first heap unlinked its name after setup, so a second join of the same rank must create anew.
        let second = try SymmetricHeap.join(jobID: job, rank: 0, world: 1, layout: layout, identity: Self.identity)
        first.close()
        second.close()
        // A name that exists already (another process' segment) is refused with a reason.
        let stale = shm_open("/moe-\(job)-1", O_CREAT | O_RDWR, 0o600)
        defer {
            close(stale)
            shm_unlink("/moe-\(job)-1")
        }
        let layout2 = try SymmetricHeapLayout(ranks: 2, capacity: 1, topK: 1, hidden: 32)
        #expect {
            try SymmetricHeap.join(jobID: job, rank: 1, world: 2, layout: layout2, identity: Self.identity, timeoutSeconds: 0.2)
        } throws: { error in
            "\(error)".contains("already exists")
        }
    }

    @Test func ranksSeeWhatTheirPeersPublished() throws {
        let job = SymmetricHeap.newJobID()
        let layout = try SymmetricHeapLayout(ranks: 3, capacity: 1, topK: 1, hidden: 32)
        let results = RankThreads.run(ranks: 3) { rank -> [[UInt8]] in
            // Stands in for a CUDA IPC handle (64 opaque bytes) of each rank's device heap.
            let handle = (0..<64).map { UInt8(truncatingIfNeeded: rank * 64 + $0) }
            let heap = try SymmetricHeap.join(
                jobID: job, rank: rank, world: 3, layout: layout, identity: Self.identity, published: handle)
            defer { heap.close() }
            return (0..<3).map { heap.published(by: $0) }
        }
        for result in results {
            let seen = try result.get()
            for peer in 0..<3 { #expect(seen[peer] == (0..<64).map { UInt8(truncatingIfNeeded: peer * 64 + $0) }) }
        }
        #expect(throws: ExpertParallelError.self) {
            try SymmetricHeap.join(
                jobID: SymmetricHeap.newJobID(), rank: 0, world: 1, layout: try SymmetricHeapLayout(ranks: 1, capacity: 1, topK: 1, hidden: 32),
                identity: Self.identity, published: [UInt8](repeating: 0, count: 300))
        }
    }

    @Test func badJobIdsAreRejected() throws {
        let layout = try SymmetricHeapLayout(ranks: 1, capacity: 1, topK: 1, hidden: 32)
        #expect(throws: ExpertParallelError.self) {
            try SymmetricHeap.join(jobID: "../etc", rank: 0, world: 1, layout: layout, identity: Self.identity)
        }
        #expect(throws: ExpertParallelError.self) {
            try SymmetricHeap.join(jobID: "ok", rank: 1, world: 1, layout: layout, identity: Self.identity)
        }
    }
}

/// A tiny deterministic generator for test timing jitter.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
