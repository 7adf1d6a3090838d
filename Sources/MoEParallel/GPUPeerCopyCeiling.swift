import MoECUDA

/// The GPU-to-GPU copy ceiling a GPU expert-parallel job measures in the same run as its layers: every rank copies
/// `bytes` into the next rank of its node through that rank's CUDA IPC mapping (cuMemcpyDtoDAsync), all ranks at
/// once, median of the timed copies per rank. Dispatch and combine bandwidth are read against it.
public struct PeerCopyCeiling: Sendable, Equatable, CustomStringConvertible {
    public var bytes: Int
    /// Per rank: the median of its copies, GB/s (bytes written per second).
    public var perRankGBps: [Double]
    /// Per rank: the rank it copied into (itself when alone on its node).
    public var targets: [Int]

    public init(bytes: Int, perRankGBps: [Double], targets: [Int]) {
        self.bytes = bytes
        self.perRankGBps = perRankGBps
        self.targets = targets
    }

    /// The median over ranks.
    public var medianGBps: Double { ExpertParallelBenchmark.percentile(perRankGBps.sorted(), 0.5) }
    public var minimumGBps: Double { perRankGBps.min() ?? 0 }
    /// Every rank copied into its own heap (one rank per node): a device-local copy, not a GPU-to-GPU one.
    public var isLocal: Bool { targets.enumerated().allSatisfy { $0.offset == $0.element } }

    public var description: String {
        let what = isLocal
            ? "device-local copy (one rank per node: no peer to copy into)"
            : "into the next rank of each node through its CUDA IPC mapping, all ranks at once"
        let mib = Double(bytes) / Double(1 << 20)
        return "peer copy \(fmt(medianGBps)) GB/s per rank (median over \(perRankGBps.count) ranks, slowest \(fmt(minimumGBps))): cuMemcpyDtoDAsync of \(fmt(mib)) MiB \(what), median of each rank's timed copies"
    }

    /// GB/s of `remoteBytes` (summed over `ranks`) moved in `microseconds`, per rank.
    public static func perRankGBps(remoteBytes: Double, ranks: Int, microseconds: Double) -> Double {
        guard ranks > 0, microseconds > 0 else { return 0 }
        return remoteBytes / Double(ranks) / (microseconds * 1e-6) / 1e9
    }

    private func fmt(_ value: Double) -> String { String((value * 10).rounded() / 10) }
}

extension GPUExpertParallelRunner {
    /// Measures the peer-copy ceiling on every rank at once (a host barrier first) and gathers it to every rank.
    public func measurePeerCopy(repeats: Int = 5) throws -> PeerCopyCeiling {
        let layer = layers[0]
        do {
            try heap.barrier(.step, layer: 0)
            let seconds = try layer.peerCopySeconds(repeats: repeats).sorted()
            let median = ExpertParallelBenchmark.percentile(seconds, 0.5)
            let gbps = Double(layer.peerCopyBytes) / max(median, 1e-12) / 1e9
            let record = [gbps, Double(layer.peerCopyTarget)]
            let bytes = record.withUnsafeBytes { Array($0) }
            let rows = try Self.allGather(bytes, heap: heap).map { row in
                row.withUnsafeBytes { raw in (raw.loadUnaligned(fromByteOffset: 0, as: Double.self), raw.loadUnaligned(fromByteOffset: 8, as: Double.self)) }
            }
            return PeerCopyCeiling(bytes: layer.peerCopyBytes, perRankGBps: rows.map(\.0), targets: rows.map { Int($0.1) })
        } catch {
            heap.abort(message: "rank \(rank) while measuring the peer-copy ceiling: \(error)")
            throw error
        }
    }
}
