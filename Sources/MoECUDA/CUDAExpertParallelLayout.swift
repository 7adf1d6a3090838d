import CCUDA
import MoECore

/// The byte layout of one rank's GPU symmetric heap (DESIGN §4): identical on every rank, so a kernel reaches
/// region X of rank q at `peerHeaps[q] + offset(X)`. Regions start on 256-byte boundaries (cudaMalloc's and
/// CUDA IPC's granularity is coarser; 256 keeps 16-byte row copies aligned and lines unshared).
///
/// Sized from R ranks, the capacity T_cap (most tokens one rank brings to one step), k and H:
///
/// | region | shape | written by |
/// |---|---|---|
/// | control | epoch u64, status, phase, awaited rank, failed epoch, abort word | owner's barrier kernel; host (abort) |
/// | flags | [R] u64 barrier epochs | rank q at slot q |
/// | routingIds, routingWeights | [R·T_cap·k] i32 / f32 | rank q at rows q·T_loc·k… |
/// | dispatch | [R·T_cap·k, H] bf16 at global sorted positions | tokens' home ranks |
/// | combine | [T_cap·k, H] bf16 at (token, slot) | experts' owners |
/// | allToAllRows | [R·T_cap·k, H] bf16 received (token, slot) rows | all-to-all senders |
/// | allToAllIds, allToAllWeights | [R·T_cap·k] i32 / f32 of those rows | all-to-all senders |
/// | allToAllReturn | [T_cap·k, H] bf16 expert rows coming home, in send order | experts' owners |
/// | railTokens | [N·T_cap, H] bf16 token rows of the rail peers (N > 1 only) | NCCL receives |
/// | railCombineOut | [N·T_cap·k, H] bf16 rows for the rail peer on node m, at its (token, slot) | node peers |
/// | railCombineIn | [N·T_cap·k, H] bf16 rows from node m for this rank's slots | NCCL receives |
///
/// The rail regions are empty on one node, where the layout is what it was before nodes existed.
public struct CUDAExpertParallelLayout: Sendable, Equatable {
    public enum Region: Int, CaseIterable, Sendable {
        case control, flags, routingIds, routingWeights, dispatch, combine
        case allToAllRows, allToAllIds, allToAllWeights, allToAllReturn
        case railTokens, railCombineOut, railCombineIn
    }

    public static let alignment = 256
    /// Byte offsets inside the control region (moe_ep.cu's comment is the other copy of this).
    public enum Control {
        public static let epoch = 0
        public static let status = 8
        public static let phase = 12
        public static let awaitedRank = 16
        public static let failedEpoch = 24
        public static let abortWord = 64
        public static let bytes = 128
    }

    public let ranks: Int
    public let capacity: Int
    public let topK: Int
    public let hidden: Int
    public let offsets: [Int]
    public let sizes: [Int]
    public let totalBytes: Int

    public init(ranks: Int, capacity: Int, topK: Int, hidden: Int, nodes: Int = 1) throws(CUDAError) {
        guard ranks >= 1, ranks <= 1024 else { throw .invalidArgument("GPU expert parallelism needs 1...1024 ranks, got \(ranks)") }
        _ = try NodeGrid(world: ranks, nodes: nodes)  // ranks split evenly over the nodes
        guard capacity >= 1 else { throw .invalidArgument("GPU heap capacity must be ≥ 1 token per rank, got \(capacity)") }
        guard topK >= 1, hidden >= 8, hidden % 8 == 0 else {
            throw .invalidArgument("GPU heap needs k ≥ 1 and H a multiple of 8 (16-byte row copies); got k=\(topK), H=\(hidden)")
        }
        guard ranks * capacity * topK < Int(Int32.max) else {
            throw .invalidArgument("R·T_cap·k = \(ranks)·\(capacity)·\(topK) exceeds 2³¹; lower --max-tokens-per-rank")
        }
        self.ranks = ranks
        self.capacity = capacity
        self.topK = topK
        self.hidden = hidden
        let globalSlots = ranks * capacity * topK, localSlots = capacity * topK, row = hidden * 2
        var sizes = [Int](repeating: 0, count: Region.allCases.count)
        sizes[Region.control.rawValue] = Control.bytes
        sizes[Region.flags.rawValue] = ranks * 8
        sizes[Region.routingIds.rawValue] = globalSlots * 4
        sizes[Region.routingWeights.rawValue] = globalSlots * 4
        sizes[Region.dispatch.rawValue] = globalSlots * row
        sizes[Region.combine.rawValue] = localSlots * row
        sizes[Region.allToAllRows.rawValue] = globalSlots * row
        sizes[Region.allToAllIds.rawValue] = globalSlots * 4
        sizes[Region.allToAllWeights.rawValue] = globalSlots * 4
        sizes[Region.allToAllReturn.rawValue] = localSlots * row
        let railNodes = nodes > 1 ? nodes : 0
        sizes[Region.railTokens.rawValue] = railNodes * capacity * row
        sizes[Region.railCombineOut.rawValue] = railNodes * localSlots * row
        sizes[Region.railCombineIn.rawValue] = railNodes * localSlots * row
        var offsets = [Int](repeating: 0, count: sizes.count)
        var cursor = 0
        for region in Region.allCases {
            offsets[region.rawValue] = cursor
            cursor += (sizes[region.rawValue] + Self.alignment - 1) / Self.alignment * Self.alignment
        }
        self.sizes = sizes
        self.offsets = offsets
        totalBytes = cursor
    }

    public func offset(of region: Region) -> Int { offsets[region.rawValue] }
    public func byteCount(of region: Region) -> Int { sizes[region.rawValue] }
}

/// What a device barrier recorded when it gave up (read back from the control block after a replay).
public struct CUDAExpertParallelFailure: Sendable, Equatable, CustomStringConvertible {
    public enum Reason: UInt32, Sendable { case timeout = 1, aborted = 2 }
    public var reason: Reason
    /// ExpertParallelPhase raw value of the barrier (2 route, 3 dispatch, 4 combine).
    public var phase: UInt32
    /// The rank the barrier was waiting for.
    public var awaitedRank: Int
    public var epoch: UInt64

    /// Decodes the control block's first 32 bytes; nil when the status is OK.
    public static func decode(_ control: [UInt8]) -> CUDAExpertParallelFailure? {
        guard control.count >= 32 else { return nil }
        func u32(_ at: Int) -> UInt32 { control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
        func u64(_ at: Int) -> UInt64 { control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) } }
        let status = u32(CUDAExpertParallelLayout.Control.status)
        guard status != 0 else { return nil }
        return CUDAExpertParallelFailure(
            reason: Reason(rawValue: status) ?? .timeout, phase: u32(CUDAExpertParallelLayout.Control.phase),
            awaitedRank: Int(u32(CUDAExpertParallelLayout.Control.awaitedRank)),
            epoch: u64(CUDAExpertParallelLayout.Control.failedEpoch))
    }

    public var description: String {
        let what = reason == .timeout ? "timed out waiting for" : "was aborted (a peer failed) while waiting for"
        return "the device barrier \(epoch) (phase \(phase)) \(what) rank \(awaitedRank)"
    }
}

/// A CUDA IPC handle with the facts a peer needs to open it, as the bytes exchanged through the CPU heap.
///
/// ```
///  0 magic u64 · 8 device ordinal i64 · 16 heap bytes i64 · 24 pid i64 · 32 handle [64]   (96 bytes)
/// ```
public struct CUDAIPCHandleRecord: Sendable, Equatable {
    public static let byteCount = 96
    static let magic: UInt64 = 0x3150_4950_4755_504D  // "MPUGPIP1"
    public var deviceOrdinal: Int
    public var heapBytes: Int
    public var pid: Int
    public var handle: [UInt8]

    public init(deviceOrdinal: Int, heapBytes: Int, pid: Int, handle: [UInt8]) {
        self.deviceOrdinal = deviceOrdinal
        self.heapBytes = heapBytes
        self.pid = pid
        self.handle = handle
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.byteCount)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.magic, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: Int64(deviceOrdinal), toByteOffset: 8, as: Int64.self)
            raw.storeBytes(of: Int64(heapBytes), toByteOffset: 16, as: Int64.self)
            raw.storeBytes(of: Int64(pid), toByteOffset: 24, as: Int64.self)
        }
        for i in 0..<min(64, handle.count) { bytes[32 + i] = handle[i] }
        return bytes
    }

    /// Decodes rank `rank`'s record; a typed error when it is not one (the peer never wrote it, or wrote another format).
    public static func decode(_ bytes: [UInt8], rank: Int) throws(CUDAError) -> CUDAIPCHandleRecord {
        guard bytes.count >= byteCount else { throw .invalidArgument("rank \(rank)'s IPC handle record is \(bytes.count) bytes; expected \(byteCount)") }
        let (magic, ordinal, size, pid) = bytes.withUnsafeBytes { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: Int64.self),
             raw.loadUnaligned(fromByteOffset: 16, as: Int64.self), raw.loadUnaligned(fromByteOffset: 24, as: Int64.self))
        }
        guard magic == Self.magic else {
            throw .invalidArgument("rank \(rank) published no GPU heap handle (magic 0x\(String(magic, radix: 16))); is it running the CUDA backend too?")
        }
        return CUDAIPCHandleRecord(deviceOrdinal: Int(ordinal), heapBytes: Int(size), pid: Int(pid), handle: Array(bytes[32..<96]))
    }
}
