import MoECUDA

/// The GPU-to-GPU copy ceiling a GPU expert-parallel job measures in the same run as its layers: every rank copies
/// `bytes` into the next rank of its node through that rank's CUDA IPC mapping, all ranks at once, once with the
/// copy engines and once with SM stores, median of the timed copies per rank. Dispatch and combine bandwidth are
/// read against the faster of the two.
public struct PeerCopyCeiling: Sendable, Equatable, CustomStringConvertible {
    public var bytes: Int
    /// Per engine (PeerCopyEngine order), per rank: the median of its copies, GB/s (bytes written per second).
    public var perRankGBps: [[Double]]
    /// Per rank: the rank it copied into (itself when alone on its node).
    public var targets: [Int]

    public init(bytes: Int, perRankGBps: [[Double]], targets: [Int]) {
        self.bytes = bytes
        self.perRankGBps = perRankGBps
        self.targets = targets
    }

    /// The median over ranks of each engine.
    public var engineMedianGBps: [Double] { perRankGBps.map { ExpertParallelBenchmark.percentile($0.sorted(), 0.5) } }
    /// The ceiling: the faster engine's median over ranks.
    public var medianGBps: Double { engineMedianGBps.max() ?? 0 }
    /// The slowest rank of the faster engine.
    public var minimumGBps: Double {
        guard let best = engineMedianGBps.indices.max(by: { engineMedianGBps[$0] < engineMedianGBps[$1] }) else { return 0 }
        return perRankGBps[best].min() ?? 0
    }
    /// Every rank copied into its own heap (one rank per node): a device-local copy, not a GPU-to-GPU one.
    public var isLocal: Bool { targets.enumerated().allSatisfy { $0.offset == $0.element } }

    public var description: String {
        let what = isLocal
            ? "device-local copy (one rank per node: no peer to copy into)"
            : "into the next rank of each node through its CUDA IPC mapping, all ranks at once"
        let mib = Double(bytes) / Double(1 << 20)
        let engines = zip(PeerCopyEngine.allCases, engineMedianGBps).map { "\($0.rawValue) \(fmt($1))" }.joined(separator: ", ")
        return "peer copy \(fmt(medianGBps)) GB/s per rank (the faster engine's median over \(targets.count) ranks, slowest \(fmt(minimumGBps)); \(engines)): \(fmt(mib)) MiB \(what), batches of back-to-back copies of ≥ 256 MiB (at most 64 copies), median of each rank's timed batches"
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
            var record = [Double(layer.peerCopyTarget)]
            for engine in PeerCopyEngine.allCases {
                try heap.barrier(.step, layer: 0)
                let seconds = try layer.peerCopySeconds(repeats: repeats, engine: engine).sorted()
                record.append(Double(layer.peerCopyBytes) / max(ExpertParallelBenchmark.percentile(seconds, 0.5), 1e-12) / 1e9)
            }
            let rows = try Self.allGather(record.withUnsafeBytes { Array($0) }, heap: heap).map { row in
                row.withUnsafeBytes { raw in (0..<record.count).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) } }
            }
            let engines = PeerCopyEngine.allCases.indices.map { e in rows.map { $0[1 + e] } }
            return PeerCopyCeiling(bytes: layer.peerCopyBytes, perRankGBps: engines, targets: rows.map { Int($0[0]) })
        } catch {
            heap.abort(message: "rank \(rank) while measuring the peer-copy ceiling: \(error)")
            throw error
        }
    }
}
