import CCUDA
import Dispatch
import Testing

@testable import MoECUDA

#if canImport(Glibc)
import Glibc
#endif

/// A fake NCCL whose entry points return fixed results: the choke point, the error mapping and the
/// communicator's no-hang setup, with no GPU and no libnccl.
enum FakeNCCL {
    static func table() -> CCUDANCCLAPI {
        var api = CCUDANCCLAPI()
        api.ncclGetErrorString = { code in
            let text: StaticString = code == 5 ? "invalid usage (run with NCCL_DEBUG=WARN for details)" : "remote process exited or there was a network error"
            return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
        }
        api.ncclGetLastError = { _ in
            let text: StaticString = "Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1b000"
            return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
        }
        api.ncclGetUniqueId = { id in
            withUnsafeMutableBytes(of: &id!.pointee) { raw in for i in 0..<raw.count { raw[i] = UInt8(i % 251) } }
            return 0
        }
        api.ncclCommAbort = { _ in 0 }
        return api
    }

    final class Counter: @unchecked Sendable {
        private let lock = DispatchSemaphore(value: 1)
        private var count = 0
        func add() {
            lock.wait()
            count += 1
            lock.signal()
        }
        var value: Int {
            lock.wait()
            defer { lock.signal() }
            return count
        }
    }

    /// A communicator handle for fakes that "succeed" (never dereferenced: every entry point is fake).
    nonisolated(unsafe) static let fakeComm = OpaquePointer(bitPattern: 0x1000)!
}

@Test func ncclErrorsCarryTheRankPhaseCallNameMessageAndDetail() {
    let library = NCCLLibrary(api: FakeNCCL.table(), libraryPath: "fake")
    do {
        try NCCLCommunicator.check(library, rank: 1, phase: "NCCL communicator setup", "ncclCommInitRank", 5, comm: nil)
        Issue.record("a non-zero result must throw")
    } catch {
        guard case .call(let rank, let phase, let call, let code, let message, let detail) = error else {
            Issue.record("wrong error \(error)")
            return
        }
        #expect(rank == 1 && phase == "NCCL communicator setup" && call == "ncclCommInitRank" && code == 5)
        #expect(message.hasPrefix("invalid usage"))
        #expect(detail.contains("Duplicate GPU detected"))
        let text = "\(error)"
        #expect(text.contains("rank 1, NCCL communicator setup: ncclCommInitRank failed: ncclInvalidUsage (5)"), "\(text)")
    }
    #expect(throws: Never.self) { try NCCLCommunicator.check(library, rank: 0, phase: "p", "ncclSend", 0, comm: nil) }
    // The library's own choke point (CUDAError) maps codes the same way.
    #expect(throws: CUDAError.nccl(call: "ncclGroupEnd", code: 6, message: "remote process exited or there was a network error")) {
        try library.call("ncclGroupEnd", 6)
    }
}

@Test func aMissingNCCLEntryPointIsATypedError() {
    var api = FakeNCCL.table()
    api.ncclGetLastError = nil  // NCCL < 2.13: no detail, still a full error
    let library = NCCLLibrary(api: api, libraryPath: "fake")
    #expect(throws: NCCLError.self) { try NCCLCommunicator.check(library, rank: 0, phase: "p", "ncclSend", nil, comm: nil) }
    #expect(NCCLError.resultName(6) == "ncclRemoteError" && NCCLError.resultName(7) == "ncclInProgress")
    #expect(NCCLError.resultName(42) == "ncclResult 42")
}

@Test func theUniqueIdIs128BytesAndMalformedOnesAreRefused() throws {
    let library = NCCLLibrary(api: FakeNCCL.table(), libraryPath: "fake")
    let id = try NCCLCommunicator.makeUniqueID(library: library)
    #expect(id.count == 128 && id[5] == 5 && id[127] == 127)
    #expect(throws: NCCLError.self) {
        _ = try NCCLCommunicator(library: library, uniqueID: [1, 2, 3], rank: 0, world: 1, timeoutSeconds: 1, makeCurrent: {})
    }
    #expect(throws: NCCLError.self) {
        _ = try NCCLCommunicator(library: library, uniqueID: id, rank: 2, world: 2, timeoutSeconds: 1, makeCurrent: {})
    }
}

/// A peer that never joins must not hang setup: the helper thread stays in ncclCommInitRank while the rank
/// fails at the timeout, or at once when the peer watch reports a dead peer.
@Test func communicatorSetupNeverHangsOnAMissingPeer() throws {
    var api = FakeNCCL.table()
    api.ncclCommInitRank = { _, _, _, _ in
        sleep(3)  // a peer that never arrives (the real call would block for good)
        return 2
    }
    let library = NCCLLibrary(api: api, libraryPath: "fake")
    let id = [UInt8](repeating: 1, count: 128)
    let start = DispatchTime.now().uptimeNanoseconds
    do {
        _ = try NCCLCommunicator(library: library, uniqueID: id, rank: 1, world: 2, timeoutSeconds: 0.3, makeCurrent: {})
        Issue.record("setup must time out")
    } catch {
        guard case .timeout(let rank, let phase, _) = error else { Issue.record("wrong error \(error)"); return }
        #expect(rank == 1 && phase.contains("ncclCommInitRank"))
    }
    let watched = DispatchTime.now().uptimeNanoseconds
    #expect(Double(watched - start) * 1e-9 < 2.0)
    do {
        _ = try NCCLCommunicator(
            library: library, uniqueID: id, rank: 0, world: 2, timeoutSeconds: 30, peerWatch: { "rank 1's process is gone" },
            makeCurrent: {})
        Issue.record("setup must fail on a dead peer")
    } catch {
        #expect(error == .peerFailed(rank: 0, phase: "NCCL communicator setup (ncclCommInitRank, 2 ranks)", why: "rank 1's process is gone"))
    }
    #expect(Double(DispatchTime.now().uptimeNanoseconds - watched) * 1e-9 < 2.0)
}

@Test func setupFailuresOfNCCLItselfAreReportedWithTheirDetail() {
    var api = FakeNCCL.table()
    api.ncclCommInitRank = { _, _, _, _ in 5 }
    let library = NCCLLibrary(api: api, libraryPath: "fake")
    do {
        _ = try NCCLCommunicator(
            library: library, uniqueID: [UInt8](repeating: 0, count: 128), rank: 1, world: 2, timeoutSeconds: 5, makeCurrent: {})
        Issue.record("setup must fail")
    } catch {
        #expect("\(error)".contains("Duplicate GPU detected"), "\(error)")
    }
}

@Test func asynchronousErrorsAreSeenAndAbortClosesOnce() throws {
    var api = FakeNCCL.table()
    api.ncclCommInitRank = { comm, _, _, _ in
        comm?.pointee = FakeNCCL.fakeComm
        return 0
    }
    api.ncclCommGetAsyncError = { _, state in
        state?.pointee = 6  // ncclRemoteError: a peer died
        return 0
    }
    api.ncclCommAbort = { _ in
        AbortOnce.count.add()
        return 0
    }
    let library = NCCLLibrary(api: api, libraryPath: "fake")
    let communicator = try NCCLCommunicator(
        library: library, uniqueID: [UInt8](repeating: 0, count: 128), rank: 0, world: 2, timeoutSeconds: 5, makeCurrent: {})
    let error = try #require(communicator.asynchronousError(phase: "all-to-all dispatch"))
    #expect("\(error)".contains("rank 0, all-to-all dispatch: ncclCommGetAsyncError failed: ncclRemoteError (6)"), "\(error)")
    communicator.abort(reason: "test")
    communicator.abort(reason: "again")
    communicator.close()
    // The abort runs on a thread of its own: wait for it, then make sure no second one follows.
    for _ in 0..<200 where AbortOnce.count.value == 0 { usleep(10_000) }
    usleep(50_000)
    #expect(AbortOnce.count.value == 1, "ncclCommAbort runs once whatever calls it")
    #expect(communicator.isAborted)
    #expect(communicator.asynchronousError(phase: "p") == nil)
}

enum AbortOnce { static let count = FakeNCCL.Counter() }

/// NCCL's abort does not return while a CUDA graph holds work of the communicator (NCCL ≥ 2.26): `abort(reason:)`
/// must not wait for it, since destroying those graphs is what the caller does next.
@Test func abortReturnsWhileNCCLWaitsForTheGraphs() throws {
    var api = FakeNCCL.table()
    api.ncclCommInitRank = { comm, _, _, _ in
        comm?.pointee = FakeNCCL.fakeComm
        return 0
    }
    api.ncclCommAbort = { _ in
        BlockingAbort.started.signal()
        BlockingAbort.graphsDestroyed.wait()
        BlockingAbort.finished.signal()
        return 0
    }
    let communicator = try NCCLCommunicator(
        library: NCCLLibrary(api: api, libraryPath: "fake"), uniqueID: [UInt8](repeating: 0, count: 128), rank: 0, world: 2,
        timeoutSeconds: 5, makeCurrent: {})
    let start = MonotonicSeconds.now()
    communicator.abort(reason: "a peer died")
    #expect(MonotonicSeconds.now() - start < 0.5, "abort(reason:) waited for NCCL's teardown")
    #expect(BlockingAbort.started.wait(timeout: .now() + 5) == .success, "ncclCommAbort was not called")
    #expect(communicator.isAborted)
    BlockingAbort.graphsDestroyed.signal()  // what destroying the graphs does for NCCL
    #expect(BlockingAbort.finished.wait(timeout: .now() + 5) == .success)
}

enum BlockingAbort {
    static let started = DispatchSemaphore(value: 0)
    static let graphsDestroyed = DispatchSemaphore(value: 0)
    static let finished = DispatchSemaphore(value: 0)
}

/// What the layer-graph capture sees: a group whose ncclGroupEnd waits for a peer that never connects. The
/// watcher must end it (abort) and name the cause — a dead peer at once, else the timeout — and transfers NCCL
/// cannot serve must be refused before any NCCL call.
enum HangingGroupEnd {
    /// Set by the fake ncclCommAbort; the fake ncclGroupEnd returns once it is (as NCCL's does after an abort).
    static let aborted = FakeNCCL.Counter()
    static let groupStarts = FakeNCCL.Counter()

    static func table() -> CCUDANCCLAPI {
        var api = FakeNCCL.table()
        api.ncclCommInitRank = { comm, _, _, _ in
            comm?.pointee = FakeNCCL.fakeComm
            return 0
        }
        api.ncclCommGetAsyncError = { _, state in
            state?.pointee = 0
            return 0
        }
        api.ncclGroupStart = {
            HangingGroupEnd.groupStarts.add()
            return 0
        }
        api.ncclSend = { _, _, _, _, _, _ in 0 }
        api.ncclRecv = { _, _, _, _, _, _ in 0 }
        api.ncclGroupEnd = {
            let start = HangingGroupEnd.aborted.value
            for _ in 0..<500 where HangingGroupEnd.aborted.value == start { usleep(10_000) }
            return 3
        }
        api.ncclCommAbort = { _ in
            HangingGroupEnd.aborted.add()
            return 0
        }
        return api
    }
}

@Test func aCapturedGroupWaitingForAPeerIsEndedByTheWatcher() throws {
    let library = NCCLLibrary(api: HangingGroupEnd.table(), libraryPath: "fake")
    let transfers = [NCCLTransfer(.send, peer: 1, address: 0x1000, bytes: 64), NCCLTransfer(.receive, peer: 1, address: 0x2000, bytes: 64)]
    func communicator(timeout: Double, watch: (@Sendable () -> String?)?) throws -> NCCLCommunicator {
        let made = try NCCLCommunicator(
            library: library, uniqueID: [UInt8](repeating: 0, count: 128), rank: 0, world: 2, timeoutSeconds: timeout,
            makeCurrent: {})
        made.peerWatch = watch  // after setup: the peer dies while the group waits
        return made
    }
    // A dead peer: the watcher aborts at once.
    let dead = try communicator(timeout: 30, watch: { "rank 1's process is gone" })
    var start = DispatchTime.now().uptimeNanoseconds
    #expect(throws: NCCLError.peerFailed(rank: 0, phase: "route", why: "rank 1's process is gone")) {
        try dead.enqueueWatched(transfers, streamHandle: nil, phase: "route")
    }
    #expect(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 < 2.0)
    #expect(dead.isAborted)
    // A stalled peer: the timeout.
    let stalled = try communicator(timeout: 0.3, watch: nil)
    start = DispatchTime.now().uptimeNanoseconds
    #expect(throws: NCCLError.timeout(rank: 0, phase: "combine", seconds: 0.3)) {
        try stalled.enqueueWatched(transfers, streamHandle: nil, phase: "combine")
    }
    #expect(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 < 2.0)
    // Refused before any NCCL call: a peer outside the communicator; nothing at all for zero-byte transfers.
    let healthy = try communicator(timeout: 30, watch: nil)
    let starts = HangingGroupEnd.groupStarts.value
    #expect(throws: NCCLError.self) {
        try healthy.enqueueWatched([NCCLTransfer(.send, peer: 5, address: 0x1000, bytes: 8)], streamHandle: nil, phase: "p")
    }
    try healthy.enqueueWatched([NCCLTransfer(.send, peer: 1, address: 0x1000, bytes: 0)], streamHandle: nil, phase: "p")
    #expect(HangingGroupEnd.groupStarts.value == starts)
    #expect(!healthy.isAborted)
}

/// NCCL's abort frees the communicator at once before 2.26 (graphs holding its work must then be kept) and waits for
/// those graphs from 2.26 on (they must be destroyed); an unknown version counts as the newer.
@Test func whetherAnAbortWaitsForTheGraphsFollowsTheNCCLVersion() {
    var old = FakeNCCL.table()
    old.ncclGetVersion = { code in
        code?.pointee = 22503
        return 0
    }
    var new = FakeNCCL.table()
    new.ncclGetVersion = { code in
        code?.pointee = 22803
        return 0
    }
    #expect(!NCCLLibrary(api: old, libraryPath: "fake").abortWaitsForGraphs)
    #expect(NCCLLibrary(api: new, libraryPath: "fake").abortWaitsForGraphs)
    #expect(NCCLLibrary(api: FakeNCCL.table(), libraryPath: "fake").abortWaitsForGraphs)
    #expect((try? NCCLLibrary(api: new, libraryPath: "fake").version()) == "2.28.3")
}
