import CMoEAtomics

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A peer rank on another node, reached over TCP: the cross-node half of the symmetric heap on CPUs (on GPUs
/// this part would be NCCL). It keeps the heap's one-sided semantics:
///
/// - `write` queues "store these bytes at (region, offset) of the peer's heap"; the peer's receiver thread
///   stores them straight into its own segment.
/// - `arrive` sends a barrier arrival after every queued store; TCP keeps the order, so when the peer sees
///   the arrival, the stores before it have landed (the receiver stores the arrival word with release).
/// - The peer's side of the connection keeps a *shadow control block* for us: our last arrival, our state
///   (finished, aborted with a message, or lost when the connection drops), so the barrier's waiting and
///   error reporting work the same as for a peer in shared memory.
///
/// Wire format, little-endian: a 16-byte header (kind u8, region u8, reserved u16, length u32, offset u64),
/// then `length` payload bytes.
final class NetworkPeer: @unchecked Sendable {
    enum Kind: UInt8 {
        case write = 1, arrive = 2, abort = 3, finish = 4, hello = 5
    }

    /// The remote rank.
    let rank: Int
    let ownRank: Int
    let socket: TCPSocket
    private let layout: SymmetricHeapLayout
    /// This rank's own segment (where incoming stores land).
    private let ownBase: UnsafeMutableRawPointer
    /// The shadow control block of the remote rank (its last arrival, state, abort message).
    let shadow: UnsafeMutableRawPointer
    private var outgoing: [UInt8] = []
    private var thread = pthread_t()
    private var receiving = false
    private var sendFailed = false
    private static let flushBytes = 4 << 20

    init(rank: Int, ownRank: Int, socket: TCPSocket, layout: SymmetricHeapLayout, ownBase: UnsafeMutableRawPointer, pid: Int32) {
        self.rank = rank
        self.ownRank = ownRank
        self.socket = socket
        self.layout = layout
        self.ownBase = ownBase
        let bytes = ControlBlock.byteCount(ranks: layout.ranks)
        shadow = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        shadow.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        shadow.storeBytes(of: pid, toByteOffset: ControlBlock.pid, as: Int32.self)
        ControlBlock.setState(shadow, .ready)
        outgoing.reserveCapacity(1 << 16)
    }

    deinit {
        stop()
        shadow.deallocate()
    }

    // MARK: handshake

    /// Sends who we are: rank, pid, layout digest.
    static func sendHello(_ socket: TCPSocket, rank: Int, layout: SymmetricHeapLayout) throws {
        var message = header(.hello, region: 0, length: 16, offset: 0)
        append(UInt64(rank) | UInt64(UInt32(bitPattern: getpid())) << 32, to: &message)
        append(layout.digest, to: &message)
        try message.withUnsafeBytes { try socket.send($0) }
    }

    /// Reads a peer's hello: (rank, pid); checks its layout.
    static func receiveHello(_ socket: TCPSocket, layout: SymmetricHeapLayout) throws -> (rank: Int, pid: Int32) {
        var bytes = [UInt8](repeating: 0, count: 32)
        let received = try bytes.withUnsafeMutableBytes { try socket.receive(into: $0) }
        guard received, bytes[0] == Kind.hello.rawValue else {
            throw ExpertParallelError.invalidArgument("\(socket.label) did not introduce itself")
        }
        let word = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self) }
        let digest = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt64.self) }
        let rank = Int(word & 0xFFFF_FFFF)
        guard digest == layout.digest else {
            throw ExpertParallelError.mismatchedPeer(
                rank: rank, field: "heap layout", mine: "digest 0x\(String(layout.digest, radix: 16))",
                theirs: "digest 0x\(String(digest, radix: 16))")
        }
        return (rank, Int32(bitPattern: UInt32(word >> 32)))
    }

    // MARK: sending (the rank's own thread)

    /// Queues a store of `count` bytes at `byteOffset` in `region` of the peer's heap.
    func write(_ region: SymmetricHeapLayout.Region, byteOffset: Int, from source: UnsafeRawPointer, count: Int) throws {
        outgoing.append(contentsOf: Self.header(.write, region: region.rawValue, length: count, offset: byteOffset))
        outgoing.append(contentsOf: UnsafeRawBufferPointer(start: source, count: count))
        if outgoing.count >= Self.flushBytes { try flush() }
    }

    /// Sends a barrier arrival (after every queued store).
    func arrive(word: UInt64, layer: Int) throws {
        outgoing.append(contentsOf: Self.header(.arrive, region: 0, length: 8, offset: Int(word)))
        Self.append(UInt64(layer), to: &outgoing)
        try flush()
    }

    /// Tells the peer this rank gives up, and why (best effort).
    func abort(message: String) {
        let text = Array(message.utf8.prefix(ControlBlock.abortMessageBytes - 1))
        outgoing.append(contentsOf: Self.header(.abort, region: 0, length: text.count, offset: 0))
        outgoing.append(contentsOf: text)
        try? flush()
    }

    /// Tells the peer this rank is done with the heap (best effort), then stops sending.
    func finish() {
        outgoing.append(contentsOf: Self.header(.finish, region: 0, length: 0, offset: 0))
        try? flush()
        socket.shutdownWrite()
    }

    func flush() throws {
        guard !outgoing.isEmpty else { return }
        defer { outgoing.removeAll(keepingCapacity: true) }
        guard !sendFailed else { return }
        do {
            try outgoing.withUnsafeBytes { try socket.send($0) }
        } catch {
            sendFailed = true
            throw error
        }
    }

    private static func header(_ kind: Kind, region: Int, length: Int, offset: Int) -> [UInt8] {
        var bytes: [UInt8] = [kind.rawValue, UInt8(region), 0, 0]
        withUnsafeBytes(of: UInt32(length).littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt64(offset).littleEndian) { bytes.append(contentsOf: $0) }
        return bytes
    }

    private static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    // MARK: receiving (a thread per peer)

    /// Starts the receiver thread; `ring` wakes this rank's barrier waiter.
    func startReceiving(ring: @escaping @Sendable () -> Void) throws {
        let context = ReceiverContext(peer: self, ring: ring)
        let box = Unmanaged.passRetained(context)
        let rc = pthread_create(&thread, nil, { raw in
            let context = Unmanaged<ReceiverContext>.fromOpaque(raw!).takeRetainedValue()
            context.peer.receiveLoop(ring: context.ring)
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw ExpertParallelError.system(call: "pthread_create", object: "receiver for rank \(rank)", errno: rc)
        }
        receiving = true
    }

    private final class ReceiverContext: @unchecked Sendable {
        let peer: NetworkPeer
        let ring: @Sendable () -> Void
        init(peer: NetworkPeer, ring: @escaping @Sendable () -> Void) {
            self.peer = peer
            self.ring = ring
        }
    }

    /// Stops the receiver (closes the connection) and waits for it.
    func stop() {
        guard receiving else { return }
        receiving = false
        socket.shutdownBoth()
        pthread_join(thread, nil)
        socket.close()
    }

    private func receiveLoop(ring: @Sendable () -> Void) {
        var header = [UInt8](repeating: 0, count: 16)
        var scratch = [UInt8](repeating: 0, count: ControlBlock.abortMessageBytes)
        let arrivals = ControlBlock.arrivals(ranks: layout.ranks)
        while true {
            do {
                guard try header.withUnsafeMutableBytes({ try socket.receive(into: $0) }) else { break }
                let kind = Kind(rawValue: header[0])
                let region = Int(header[1])
                let length = Int(header.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) })
                let offset = Int(header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) })
                switch kind {
                case .write:
                    guard let target = SymmetricHeapLayout.Region(rawValue: region), offset >= 0,
                        offset + length <= layout.byteCount(of: target),
                        target != .control || (offset >= ControlBlock.stepShapes && offset + length <= ControlBlock.stepShapes + layout.ranks * 8)
                    else {
                        throw ExpertParallelError.invalidArgument("rank \(rank) stored outside the heap (region \(region), offset \(offset), \(length) bytes)")
                    }
                    let destination = ownBase + layout.offset(of: target) + offset
                    guard try socket.receive(into: UnsafeMutableRawBufferPointer(start: destination, count: length)) || length == 0 else { break }
                case .arrive:
                    var layer: UInt64 = 0
                    _ = try withUnsafeMutableBytes(of: &layer) { try socket.receive(into: $0) }
                    shadow.storeBytes(of: UInt64(littleEndian: layer), toByteOffset: ControlBlock.lastLayer, as: UInt64.self)
                    moe_atomic_store_release_u64((shadow + ControlBlock.lastArrival).assumingMemoryBound(to: UInt64.self), UInt64(offset))
                    moe_atomic_store_release_u64((ownBase + arrivals + rank * 64).assumingMemoryBound(to: UInt64.self), UInt64(offset))
                    ring()
                case .abort:
                    guard length < scratch.count else {
                        throw ExpertParallelError.invalidArgument("rank \(rank) sent an oversized abort message")
                    }
                    let count = length
                    _ = try scratch.withUnsafeMutableBytes { try socket.receive(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<length])) }
                    ControlBlock.publishAbort(shadow, message: String(decoding: scratch[0..<count], as: UTF8.self))
                    ring()
                case .finish:
                    if ControlBlock.state(shadow) != .aborted { ControlBlock.setState(shadow, .finished) }
                    ring()
                case .hello, .none:
                    throw ExpertParallelError.invalidArgument("rank \(rank) sent an unknown message (kind \(header[0]))")
                }
            } catch {
                break
            }
        }
        if ControlBlock.state(shadow) == .ready { ControlBlock.setState(shadow, .lost) }
        ring()
    }
}
