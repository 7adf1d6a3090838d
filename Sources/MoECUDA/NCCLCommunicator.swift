import CCUDA
import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Failures of an NCCL communicator. Each names this rank and the phase it was in, and the cause: the NCCL call
/// with its result name, `ncclGetErrorString` and `ncclGetLastError`'s detail; a timeout; or a failed peer.
public enum NCCLError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An NCCL call returned an error (`call` "ncclCommGetAsyncError" for an error raised while operations ran).
    case call(rank: Int, phase: String, call: String, code: Int32, message: String, detail: String)
    /// The phase did not complete within `seconds`; the communicator was aborted (ncclCommAbort).
    case timeout(rank: Int, phase: String, seconds: Double)
    /// A peer failed (dead, aborted) while this rank waited; the communicator was aborted.
    case peerFailed(rank: Int, phase: String, why: String)
    /// The communicator was aborted earlier and cannot run another operation.
    case aborted(rank: Int, phase: String, why: String)
    /// A transfer list or unique id this communicator cannot use.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .call(let rank, let phase, let call, let code, let message, let detail):
            let name = NCCLError.resultName(code)
            return "rank \(rank), \(phase): \(call) failed: \(name) (\(code)): \(message)"
                + (detail.isEmpty || detail == message ? "" : " — \(detail)")
        case .timeout(let rank, let phase, let seconds):
            return "rank \(rank), \(phase): NCCL did not complete within \(NCCLTimeFormat.seconds(seconds)) s (a peer is stalled or gone); the communicator was aborted"
        case .peerFailed(let rank, let phase, let why):
            return "rank \(rank), \(phase): \(why); the NCCL communicator was aborted"
        case .aborted(let rank, let phase, let why):
            return "rank \(rank), \(phase): the NCCL communicator was aborted earlier (\(why))"
        case .invalidArgument(let why):
            return why
        }
    }

    /// nccl.h's name of an ncclResult_t.
    public static func resultName(_ code: Int32) -> String {
        switch code {
        case 0: "ncclSuccess"
        case 1: "ncclUnhandledCudaError"
        case 2: "ncclSystemError"
        case 3: "ncclInternalError"
        case 4: "ncclInvalidArgument"
        case 5: "ncclInvalidUsage"
        case 6: "ncclRemoteError"
        case 7: "ncclInProgress"
        default: "ncclResult \(code)"
        }
    }
}

enum NCCLTimeFormat {
    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String((value * 1000).rounded() / 1000)
    }
}

/// One point-to-point transfer of an NCCL group: `bytes` from (send) or into (receive) device memory at
/// `address`, with rank `peer`. Sent as ncclUint8 (a row copy needs no element type).
public struct NCCLTransfer: Sendable, Equatable {
    public enum Direction: Sendable, Equatable { case send, receive }
    public var direction: Direction
    public var peer: Int
    public var address: CUdeviceptr
    public var bytes: Int

    public init(_ direction: Direction, peer: Int, address: CUdeviceptr, bytes: Int) {
        self.direction = direction
        self.peer = peer
        self.address = address
        self.bytes = bytes
    }
}

/// An NCCL communicator of `world` ranks, one GPU each (NCCL refuses two ranks on one GPU), used eagerly by the
/// all-to-all baseline: grouped ncclSend/ncclRecv on a stream, then a wait that cannot hang.
///
/// Setup: rank 0 makes the unique id (`makeUniqueID`), the job hands it to every rank (the CPU heap, which
/// spans nodes over TCP), every rank calls `init`. `ncclCommInitRank` runs on a helper thread while the caller
/// watches the clock and `peerWatch`: a peer that never arrives fails setup with an error naming the phase
/// instead of blocking forever.
///
/// Every `exchange` runs under a watcher thread that polls `ncclCommGetAsyncError`, `peerWatch` and the
/// timeout while the caller is in ncclGroupEnd or waits on the stream; on any failure it calls ncclCommAbort,
/// which makes NCCL's kernels and proxy give up, so the wait returns and the caller throws the watcher's error.
/// After an abort the communicator refuses every further operation.
public final class NCCLCommunicator: @unchecked Sendable {
    public static let uniqueIDBytes = 128
    public let library: NCCLLibrary
    public let rank: Int
    public let world: Int
    public let timeoutSeconds: Double
    /// Polled while this rank waits on NCCL; a non-nil reason (a dead or aborted peer) aborts the communicator.
    public var peerWatch: (@Sendable () -> String?)?

    /// Makes this rank's GPU context current on the calling thread (NCCL follows the current context).
    private let makeCurrent: @Sendable () throws -> Void
    private let lock = DispatchSemaphore(value: 1)
    private var handle: ncclComm_t?
    /// Signalled when an abort's ncclCommAbort has returned (nil: no abort started).
    private var pendingAbort: DispatchSemaphore?
    private var abortReason: String?

    /// A fresh ncclUniqueId (rank 0 only): 128 bytes naming rank 0's bootstrap socket.
    public static func makeUniqueID(library: NCCLLibrary, rank: Int = 0) throws(NCCLError) -> [UInt8] {
        keepNVLinkMulticastOff()
        var id = ncclUniqueId()
        try check(library, rank: rank, phase: "NCCL unique id", "ncclGetUniqueId", library.api.ncclGetUniqueId?(&id), comm: nil)
        return withUnsafeBytes(of: &id) { Array($0) }
    }

    /// Joins the communicator on `device` (every rank at once; `uniqueID` from rank 0). Waits at most `timeoutSeconds`.
    public convenience init(
        library: NCCLLibrary, device: CUDADevice, uniqueID: [UInt8], rank: Int, world: Int, timeoutSeconds: Double,
        peerWatch: (@Sendable () -> String?)? = nil
    ) throws(NCCLError) {
        try self.init(
            library: library, uniqueID: uniqueID, rank: rank, world: world, timeoutSeconds: timeoutSeconds, peerWatch: peerWatch,
            makeCurrent: { try device.makeCurrent() })
    }

    /// The designated initializer: `makeCurrent` selects the GPU on a thread (tests pass a no-op with a fake table).
    public init(
        library: NCCLLibrary, uniqueID: [UInt8], rank: Int, world: Int, timeoutSeconds: Double,
        peerWatch: (@Sendable () -> String?)? = nil, makeCurrent: @escaping @Sendable () throws -> Void
    ) throws(NCCLError) {
        guard uniqueID.count == Self.uniqueIDBytes else {
            throw .invalidArgument("an NCCL unique id is \(Self.uniqueIDBytes) bytes; rank \(rank) got \(uniqueID.count)")
        }
        guard world >= 1, rank >= 0, rank < world else { throw .invalidArgument("NCCL rank \(rank) is outside 0..<\(world)") }
        guard timeoutSeconds > 0 else { throw .invalidArgument("the NCCL timeout must be > 0 s") }
        guard let initRank = library.api.ncclCommInitRank else {
            throw .call(rank: rank, phase: "NCCL communicator setup", call: "ncclCommInitRank", code: -1, message: "missing entry point", detail: "")
        }
        self.library = library
        self.makeCurrent = makeCurrent
        self.rank = rank
        self.world = world
        self.timeoutSeconds = timeoutSeconds
        self.peerWatch = peerWatch
        Self.keepNVLinkMulticastOff()

        let phase = "NCCL communicator setup (ncclCommInitRank, \(world) rank\(world == 1 ? "" : "s"))"
        final class Outcome: @unchecked Sendable {
            var comm: ncclComm_t?
            var result: Int32 = 0
            var contextError: (any Error)?
        }
        let outcome = Outcome()
        let finished = DispatchSemaphore(value: 0)
        var id = ncclUniqueId()
        withUnsafeMutableBytes(of: &id) { raw in for i in 0..<Self.uniqueIDBytes { raw[i] = uniqueID[i] } }
        let idCopy = id
        // NCCL picks its GPU from the calling thread's current context (the CUDA runtime follows the driver's).
        // A thread of its own: it may stay blocked in NCCL for good (a missing peer), which must not cost a
        // Dispatch worker that watchers need.
        DetachedThread.start {
            do {
                try makeCurrent()
            } catch {
                outcome.contextError = error
                finished.signal()
                return
            }
            var comm: ncclComm_t?
            outcome.result = initRank(&comm, Int32(world), idCopy, Int32(rank))
            outcome.comm = comm
            finished.signal()
        }
        let start = MonotonicSeconds.now()
        while finished.wait(timeout: .now() + .milliseconds(10)) == .timedOut {
            // The helper thread stays blocked in NCCL; the rank fails now and its process exits.
            if let why = peerWatch?() { throw .peerFailed(rank: rank, phase: phase, why: why) }
            if MonotonicSeconds.now() - start > timeoutSeconds { throw .timeout(rank: rank, phase: phase, seconds: timeoutSeconds) }
        }
        if let error = outcome.contextError {
            throw .call(rank: rank, phase: phase, call: "cuCtxSetCurrent", code: -1, message: "\(error)", detail: "")
        }
        try Self.check(library, rank: rank, phase: phase, "ncclCommInitRank", outcome.result, comm: nil)
        guard let comm = outcome.comm else {
            throw .call(rank: rank, phase: phase, call: "ncclCommInitRank", code: 3, message: "returned no communicator", detail: "")
        }
        handle = comm
    }

    deinit { close() }

    /// Releases the communicator. ncclCommAbort, not ncclCommDestroy: a local teardown that never waits for a
    /// peer (every operation has completed by the time a rank closes, and a failing rank must not block). Close
    /// the CUDA graphs that captured its work first (see `abort`); this waits at most 10 s for the teardown.
    public func close() {
        lock.wait()
        let comm = handle
        handle = nil
        if abortReason == nil { abortReason = "closed" }
        let pending = pendingAbort
        lock.signal()
        if let comm {
            _ = Self.tearDown(comm, library: library).wait(timeout: .now() + 10)
        } else if let pending {
            // An earlier abort may still run (it waited for the graphs, destroyed by now): let it finish before
            // the process goes on to exit, at most 10 s.
            if pending.wait(timeout: .now() + 10) == .success { pending.signal() }
        }
    }

    /// Aborts the communicator (any thread) and returns at once: NCCL operations in flight give up; later ones are
    /// refused. ncclCommAbort raises NCCL's abort flag first (its kernels and connection loops exit), then does not
    /// return until every CUDA graph that captured work of the communicator is destroyed (NCCL ≥ 2.26 counts them).
    /// So it runs on a thread of its own, and the caller goes on to destroy its graphs, which lets it finish.
    public func abort(reason: String) {
        lock.wait()
        let comm = handle
        handle = nil
        if abortReason == nil { abortReason = reason }
        if let comm { pendingAbort = Self.tearDown(comm, library: library) }
        lock.signal()
    }

    /// ncclCommAbort on a detached thread of its own (not a Dispatch worker: it may block until the graphs are
    /// destroyed, and blocked workers would starve the watchers); the semaphore is signalled when it returns.
    private static func tearDown(_ comm: OpaquePointer, library: NCCLLibrary) -> DispatchSemaphore {
        nonisolated(unsafe) let comm = comm
        let finished = DispatchSemaphore(value: 0)
        DetachedThread.start {
            _ = library.api.ncclCommAbort?(comm)
            finished.signal()
        }
        return finished
    }

    public var isAborted: Bool {
        lock.wait()
        defer { lock.signal() }
        return handle == nil
    }

    /// Runs `transfers` as one NCCL group on `stream` (sends and receives with every peer at once, so no
    /// ordering between peers can deadlock), then waits for the stream. Zero-byte transfers are skipped.
    /// Throws `NCCLError` naming `phase`: a failed call, an asynchronous NCCL error, a failed peer or a timeout
    /// (the last three after aborting the communicator).
    public func exchange(_ transfers: [NCCLTransfer], stream: CUDAStream, phase: String) throws {
        let active = try validated(transfers, phase: phase)
        guard !active.isEmpty else { return }
        try watched(phase: phase) {
            try enqueue(active, stream: stream.handle, phase: phase)
            try stream.synchronize()
        }
    }

    /// Enqueues `transfers` as one NCCL group on `stream` without waiting for them: how a layer's graph captures
    /// them (the graph replays them at these addresses and sizes). ncclGroupEnd may wait for a peer to connect,
    /// so it runs watched like `exchange`; waiting for the transfers themselves is the caller's (see
    /// `asynchronousError` and `abort`).
    public func enqueueWatched(_ transfers: [NCCLTransfer], stream: CUDAStream, phase: String) throws {
        try enqueueWatched(transfers, streamHandle: stream.handle, phase: phase)
    }

    /// `enqueueWatched` on a raw stream handle (tests pass none, with a fake NCCL).
    func enqueueWatched(_ transfers: [NCCLTransfer], streamHandle: CUstream?, phase: String) throws {
        let active = try validated(transfers, phase: phase)
        guard !active.isEmpty else { return }
        try watched(phase: phase) { try enqueue(active, stream: streamHandle, phase: phase) }
    }

    private func validated(_ transfers: [NCCLTransfer], phase: String) throws(NCCLError) -> [NCCLTransfer] {
        for t in transfers {
            guard t.peer >= 0, t.peer < world, t.bytes >= 0 else {
                throw NCCLError.invalidArgument("rank \(rank), \(phase): a transfer with peer \(t.peer) of \(world) ranks, \(t.bytes) bytes")
            }
        }
        return transfers.filter { $0.bytes > 0 }
    }

    /// Runs `body` while a watcher thread polls ncclCommGetAsyncError, `peerWatch` and the timeout; on a failure the
    /// watcher aborts the communicator (so NCCL calls and kernels give up) and its error is the one thrown.
    private func watched(phase: String, _ body: () throws -> Void) throws {
        try makeCurrent()
        let verdict = Verdict()
        let done = StopSignal()
        let group = DispatchGroup()
        let watch = peerWatch
        let timeout = timeoutSeconds
        let this = self
        DispatchQueue.global().async(group: group) {
            let start = MonotonicSeconds.now()
            while !done.isSet {
                if let error = this.asynchronousError(phase: phase) {
                    verdict.set(error)
                    this.abort(reason: "\(error)")
                    return
                }
                if let why = watch?() {
                    verdict.set(.peerFailed(rank: this.rank, phase: phase, why: why))
                    this.abort(reason: why)
                    return
                }
                if MonotonicSeconds.now() - start > timeout {
                    verdict.set(.timeout(rank: this.rank, phase: phase, seconds: timeout))
                    this.abort(reason: "timed out in \(phase)")
                    return
                }
                if done.sleep(microseconds: 1_000) { return }
            }
        }
        func finish() {
            done.set()
            group.wait()
        }
        do {
            try body()
        } catch {
            finish()
            if let decided = verdict.value { throw decided }
            abort(reason: "\(error)")
            throw error
        }
        finish()
        if let decided = verdict.value { throw decided }
    }

    /// ncclGroupStart, the sends and receives, ncclGroupEnd. The group is built under the lock (an abort from
    /// the watcher cannot free the communicator mid-call); ncclGroupEnd, which may wait for a peer to connect,
    /// runs outside it so that the watcher can abort it.
    private func enqueue(_ transfers: [NCCLTransfer], stream: CUstream?, phase: String) throws(NCCLError) {
        lock.wait()
        guard let comm = handle else {
            let why = abortReason ?? "aborted"
            lock.signal()
            throw .aborted(rank: rank, phase: phase, why: why)
        }
        let api = library.api
        do throws(NCCLError) {
            try Self.check(library, rank: rank, phase: phase, "ncclGroupStart", api.ncclGroupStart?(), comm: comm)
            for t in transfers {
                let pointer = UnsafeMutableRawPointer(bitPattern: UInt(t.address))
                switch t.direction {
                case .send:
                    try Self.check(
                        library, rank: rank, phase: phase, "ncclSend",
                        api.ncclSend?(pointer, t.bytes, Int32(CCUDA_NCCL_UINT8), Int32(t.peer), comm, stream), comm: comm)
                case .receive:
                    try Self.check(
                        library, rank: rank, phase: phase, "ncclRecv",
                        api.ncclRecv?(pointer, t.bytes, Int32(CCUDA_NCCL_UINT8), Int32(t.peer), comm, stream), comm: comm)
                }
            }
        } catch {
            _ = api.ncclGroupEnd?()  // closes the group; the communicator is then unusable
            lock.signal()
            abort(reason: "\(error)")
            throw error
        }
        lock.signal()
        do throws(NCCLError) {
            try Self.check(library, rank: rank, phase: phase, "ncclGroupEnd", api.ncclGroupEnd?(), comm: nil)
        } catch {
            abort(reason: "\(error)")
            throw error
        }
    }

    /// ncclCommGetAsyncError as an error, nil while healthy (or in progress).
    func asynchronousError(phase: String) -> NCCLError? {
        lock.wait()
        defer { lock.signal() }
        guard let comm = handle, let get = library.api.ncclCommGetAsyncError else { return nil }
        var state: ncclResult_t = 0
        let result = get(comm, &state)
        let code = result != 0 ? result : state
        guard code != 0, code != Int32(CCUDA_NCCL_IN_PROGRESS) else { return nil }
        return Self.error(library, rank: rank, phase: phase, "ncclCommGetAsyncError", code, comm: comm)
    }

    /// The choke point: nil (missing entry point) and non-zero results become `NCCLError.call`.
    static func check(
        _ library: NCCLLibrary, rank: Int, phase: String, _ call: String, _ result: Int32?, comm: ncclComm_t?
    ) throws(NCCLError) {
        guard let result else {
            throw .call(rank: rank, phase: phase, call: call, code: -1, message: "the loaded libnccl has no entry point \(call)", detail: "")
        }
        if result == 0 { return }
        throw error(library, rank: rank, phase: phase, call, result, comm: comm)
    }

    static func error(_ library: NCCLLibrary, rank: Int, phase: String, _ call: String, _ code: Int32, comm: ncclComm_t?) -> NCCLError {
        var message = "NCCL error"
        if let get = library.api.ncclGetErrorString, let text = get(code) { message = String(cString: text) }
        var detail = ""
        if let last = library.api.ncclGetLastError, let text = last(comm) { detail = String(cString: text) }
        return .call(rank: rank, phase: phase, call: call, code: code, message: message, detail: detail)
    }

    /// DEVICE.md: NVLink multicast stays off on the multi-GPU machines (NCCL would set it up at init): a program
    /// that uses it can take a host's GPUs out of service. Overwritten whatever the environment says, since MoEKit
    /// never needs it.
    static func keepNVLinkMulticastOff() { setenv("NCCL_NVLS_ENABLE", "0", 1) }

    /// The first error a watcher decided, shared with the waiting thread.
    final class Verdict: @unchecked Sendable {
        private let lock = DispatchSemaphore(value: 1)
        private var stored: NCCLError?
        func set(_ error: NCCLError) {
            lock.wait()
            if stored == nil { stored = error }
            lock.signal()
        }
        var value: NCCLError? {
            lock.wait()
            defer { lock.signal() }
            return stored
        }
    }
}

enum MonotonicSeconds {
    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }
}

/// A detached POSIX thread running one closure (falls back to a Dispatch worker if the OS refuses a thread).
enum DetachedThread {
    final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    static func start(_ run: @escaping @Sendable () -> Void) {
        let body = Unmanaged.passRetained(Body(run)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let body = Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue()
            body.run()
            return nil
        }, body)
        if rc == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<Body>.fromOpaque(body).release()
            DispatchQueue.global().async(execute: run)
        }
    }
}
