import MoECUDA

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How the GPU all-to-all baseline moves rows (`--a2a-transport`, MOE_A2A_TRANSPORT).
public enum AllToAllTransportChoice: String, CaseIterable, Sendable, CustomStringConvertible {
    /// NCCL when every rank has its own GPU and NCCL loads on every rank; otherwise IPC (one node only).
    case auto
    /// NCCL grouped ncclSend/ncclRecv: one GPU per rank, any number of nodes.
    case nccl
    /// cuMemcpyDtoDAsync through the IPC-mapped peer heaps plus host barriers: ranks on one node, GPUs shared or not.
    case ipc

    public var description: String { rawValue }
}

/// Where one rank runs: which host and which physical GPU, and whether NCCL loaded there. Exchanged between all
/// ranks (through the CPU heap, across nodes too) so every rank makes the same transport decision.
///
/// Encoded as 64 bytes: magic u64 · rank i64 · node i64 · host digest u64 · device ordinal i64 · PCI domain i64 ·
/// PCI bus i64 · (PCI device i64 << 1 | NCCL loaded).
public struct GPUPlacement: Sendable, Equatable {
    public static let byteCount = 64
    static let magic: UInt64 = 0x3154_4E43_4C50_504D  // "MPPLCNT1"
    public var rank: Int
    public var node: Int
    /// A digest of the host as NCCL sees it (`hostDigest`): two ranks with one host and one GPU are a "Duplicate
    /// GPU" to NCCL. Each node of a multi-node job is its own host (the runner sets NCCL_HOSTID per node).
    public var host: UInt64
    public var deviceOrdinal: Int
    /// The GPU's PCI address (−1 when the driver does not say): the physical identity, whatever
    /// CUDA_VISIBLE_DEVICES renumbered.
    public var pciDomain: Int
    public var pciBus: Int
    public var pciDevice: Int
    public var ncclLoaded: Bool

    public init(
        rank: Int, node: Int, host: UInt64, deviceOrdinal: Int, pciDomain: Int = -1, pciBus: Int = -1, pciDevice: Int = -1,
        ncclLoaded: Bool
    ) {
        self.rank = rank
        self.node = node
        self.host = host
        self.deviceOrdinal = deviceOrdinal
        self.pciDomain = pciDomain
        self.pciBus = pciBus
        self.pciDevice = pciDevice
        self.ncclLoaded = ncclLoaded
    }

    /// The physical GPU: host and PCI address, or host and ordinal when the PCI address is unknown.
    public var gpuKey: String {
        pciBus >= 0 ? "\(host)/pci \(pciDomain):\(pciBus):\(pciDevice)" : "\(host)/ordinal \(deviceOrdinal)"
    }

    /// The PCI address as the driver takes it ("0000:1b:00.0"); nil when unknown.
    public var pciBusID: String? {
        pciBus >= 0 ? "\(hex(pciDomain, 4)):\(hex(pciBus, 2)):\(hex(pciDevice, 2)).0" : nil
    }

    /// The GPU as people read it.
    public var gpuName: String {
        pciBus >= 0
            ? "GPU \(deviceOrdinal) (PCI \(hex(pciDomain, 4)):\(hex(pciBus, 2)):\(hex(pciDevice, 2))) of node \(node)"
            : "GPU \(deviceOrdinal) of node \(node)"
    }

    private func hex(_ value: Int, _ digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.byteCount)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.magic, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: Int64(rank), toByteOffset: 8, as: Int64.self)
            raw.storeBytes(of: Int64(node), toByteOffset: 16, as: Int64.self)
            raw.storeBytes(of: host, toByteOffset: 24, as: UInt64.self)
            raw.storeBytes(of: Int64(deviceOrdinal), toByteOffset: 32, as: Int64.self)
            raw.storeBytes(of: Int64(pciDomain), toByteOffset: 40, as: Int64.self)
            raw.storeBytes(of: Int64(pciBus), toByteOffset: 48, as: Int64.self)
            raw.storeBytes(of: Int64(pciDevice) << 1 | (ncclLoaded ? 1 : 0), toByteOffset: 56, as: Int64.self)
        }
        return bytes
    }

    public static func decode(_ bytes: [UInt8], rank: Int) throws -> GPUPlacement {
        guard bytes.count >= byteCount else {
            throw ExpertParallelError.invalidArgument("rank \(rank)'s GPU placement record is \(bytes.count) bytes; expected \(byteCount)")
        }
        func i64(_ at: Int) -> Int64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: Int64.self) } }
        let magic = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) }
        guard magic == Self.magic else {
            throw ExpertParallelError.invalidArgument("rank \(rank) published no GPU placement; is it running the CUDA backend of this build?")
        }
        let last = i64(56)
        return GPUPlacement(
            rank: Int(i64(8)), node: Int(i64(16)), host: UInt64(bitPattern: i64(24)), deviceOrdinal: Int(i64(32)),
            pciDomain: Int(i64(40)), pciBus: Int(i64(48)), pciDevice: Int(last >> 1), ncclLoaded: last & 1 == 1)
    }

    /// FNV-1a of the host as NCCL identifies it: NCCL_HOSTID when set, else this machine's host name.
    public static func hostDigest() -> UInt64 {
        let name = getenv("NCCL_HOSTID").map { String(cString: $0) } ?? hostName()
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    /// This machine's host name.
    public static func hostName() -> String {
        var name = [CChar](repeating: 0, count: 256)
        _ = gethostname(&name, name.count - 1)
        return cString(name)
    }
}

/// The all-to-all baseline's transport for a job, decided identically on every rank from every rank's placement.
public struct GPUAllToAllTransport: Sendable, Equatable {
    public enum Kind: String, Sendable { case nccl, ipc }
    public var kind: Kind
    /// Why: printed in the transport line the ranks print.
    public var reason: String

    /// - `ipc`: refused across nodes (CUDA IPC maps memory between processes of one host).
    /// - `nccl`: refused when two ranks share a GPU (NCCL refuses them: "Duplicate GPU detected") or NCCL did
    ///   not load on some rank.
    /// - `auto`: NCCL when neither applies; else IPC on one node; else (several nodes) refused, naming why.
    public static func decide(requested: AllToAllTransportChoice, placements: [GPUPlacement]) throws -> GPUAllToAllTransport {
        let nodes = Set(placements.map(\.node)).count
        var byGPU: [String: [GPUPlacement]] = [:]
        for p in placements { byGPU[p.gpuKey, default: []].append(p) }
        let shared = byGPU.values.filter { $0.count > 1 }.map { $0.sorted { $0.rank < $1.rank } }.sorted { $0[0].rank < $1[0].rank }
        let sharing: String? = shared.first.map { group in
            let ranks = group.map { String($0.rank) }
            let list = ranks.count == 2 ? "ranks \(ranks[0]) and \(ranks[1])" : "ranks \(ranks.joined(separator: ", "))"
            let more = shared.count > 1 ? " (and \(shared.count - 1) more shared GPU\(shared.count > 2 ? "s" : ""))" : ""
            return "\(list) share \(group[0].gpuName)\(more)"
        }
        let unloaded = placements.filter { !$0.ncclLoaded }.map(\.rank)
        let unloadedText = unloaded.isEmpty ? nil : "libnccl could not be loaded on rank\(unloaded.count > 1 ? "s" : "") \(unloaded.map(String.init).joined(separator: ", "))"
        let ncclWhy = "NCCL refuses two ranks on one GPU (\"Duplicate GPU detected\")"
        switch requested {
        case .ipc:
            guard nodes == 1 else {
                throw ExpertParallelError.invalidArgument(
                    "--a2a-transport ipc cannot serve a job across \(nodes) nodes: CUDA IPC maps device memory between processes of one host; use --a2a-transport nccl (or auto)")
            }
            return GPUAllToAllTransport(kind: .ipc, reason: "forced by --a2a-transport ipc")
        case .nccl:
            if let sharing {
                throw ExpertParallelError.invalidArgument(
                    "--a2a-transport nccl needs one GPU per rank, but \(sharing): \(ncclWhy). Use --a2a-transport ipc or auto, or run at most one rank per GPU")
            }
            if let unloadedText {
                throw ExpertParallelError.invalidArgument(
                    "--a2a-transport nccl: \(unloadedText) (set \(librarySearchVariable) to the folder holding libnccl.so.2)")
            }
            return GPUAllToAllTransport(kind: .nccl, reason: "forced by --a2a-transport nccl")
        case .auto:
            if sharing == nil, unloadedText == nil {
                return GPUAllToAllTransport(kind: .nccl, reason: "auto: every rank has its own GPU")
            }
            let why = sharing.map { "\($0): \(ncclWhy)" } ?? unloadedText!
            guard nodes == 1 else {
                throw ExpertParallelError.invalidArgument(
                    "the all-to-all baseline across \(nodes) nodes needs NCCL (CUDA IPC reaches one host only), but \(why)")
            }
            return GPUAllToAllTransport(kind: .ipc, reason: "auto: \(why)")
        }
    }

    static let librarySearchVariable = "MOE_CUDA_LIBRARY_PATH"

    /// The transport line's all-to-all part.
    public var summary: String {
        switch kind {
        case .nccl: "NCCL grouped ncclSend/ncclRecv after a host-synchronised count exchange (\(reason))"
        case .ipc: "cuMemcpyDtoDAsync through the CUDA IPC mappings and host barriers after a host-synchronised count exchange (\(reason))"
        }
    }
}
