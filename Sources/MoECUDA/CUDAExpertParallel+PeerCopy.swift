import CCUDA

/// How a peer copy is driven: the copy engines, or SM stores as the symmetric kernels store into peers.
public enum PeerCopyEngine: String, CaseIterable, Sendable {
    case copyEngine = "cuMemcpyDtoDAsync"
    case smStores = "SM stores (moe_ep_copy_bytes, 16-byte, 4 blocks of 256 per SM)"
}

/// The GPU-to-GPU copy ceiling of an expert-parallel job, measured in the job itself: every rank copies part of its
/// heap into the next rank of its node through that rank's CUDA IPC mapping (the path the symmetric dispatch and
/// combine store through), all ranks at once. Dispatch and combine bandwidth are judged against it.
extension CUDAExpertParallelLayer {
    /// The rank this rank copies into: the next rank of its node (itself when it is alone on its node).
    public var peerCopyTarget: Int {
        grid.nodeRanks(of: rank).lowerBound + (grid.local(of: rank) + 1) % grid.ranksPerNode
    }

    /// Bytes per copy: half the dispatch region (at most 256 MiB): the first half of this rank's region is the
    /// source, the second half of the target's the destination, so a rank that copies into itself and two ranks
    /// copying into each other never overlap.
    public var peerCopyBytes: Int { min(layout.byteCount(of: .dispatch) / 2, 256 << 20) / 256 * 256 }

    /// Copies per timed batch: enough for 256 MiB (at most 64). One small copy between two events would count the
    /// launch's few microseconds against a copy of a few MB and understate the ceiling.
    public var peerCopiesPerTiming: Int { max(1, min(64, (256 << 20) / max(peerCopyBytes, 1))) }

    /// Seconds per copy in each of `repeats` timed batches of `peerCopiesPerTiming` back-to-back copies (after one
    /// untimed batch), device events around each batch. The dispatch region is scratch between layers: every layer
    /// rewrites the rows it reads.
    public func peerCopySeconds(repeats: Int, engine: PeerCopyEngine) throws(CUDAError) -> [Double] {
        let bytes = peerCopyBytes
        guard bytes > 0, repeats >= 1 else { throw .invalidArgument("a peer copy needs ≥ 256 bytes of dispatch region and ≥ 1 repeat") }
        try requireMappedPeers("the peer-copy measurement", nodeOnly: true)
        let device = runtime.device
        try device.makeCurrent()
        let dispatch = CUdeviceptr(layout.offset(of: .dispatch))
        let source = heap.address + dispatch
        let destination = peerBaseAddress(peerCopyTarget) + dispatch + CUdeviceptr(layout.byteCount(of: .dispatch) / 2 / 256 * 256)
        let driver = runtime.driver
        let copies = peerCopiesPerTiming
        var seconds: [Double] = []
        for index in 0...repeats {
            let start = try CUDAEvent(device: device), end = try CUDAEvent(device: device)
            try start.record(stream)
            for _ in 0..<copies {
                switch engine {
                case .copyEngine:
                    try driver.call(
                        "cuMemcpyDtoDAsync", driver.api.cuMemcpyDtoDAsync?(destination, source, bytes, stream.handle))
                case .smStores:
                    try copyBytesKernel.launch(
                        LaunchShape(grid: (4 * device.multiprocessors, 1, 1), block: 256), stream: stream,
                        arguments: [.u64(destination), .u64(source), .u64(UInt64(bytes))])
                }
            }
            try end.record(stream)
            try stream.synchronize()
            if index > 0 { seconds.append(Double(try end.milliseconds(since: start)) * 1e-3 / Double(copies)) }
        }
        return seconds
    }
}
