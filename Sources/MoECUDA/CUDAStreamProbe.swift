import CCUDA
import MoECore

/// How fast this GPU streams a decode GEMM's weight bytes when nothing but the stream runs (moe_ceilings.cu's
/// `moe_stream_probe_*`): every warp reads its own contiguous region through a shared-memory ring like the resident
/// kernels' (per-lane cp.async or one bulk copy per slot), or straight into registers. The layouts sweep what the
/// decode kernels choose between — warps per SM, slot size, ring depth, copy kind — at the size of one GEMM's weights,
/// so a layout's rate here bounds any kernel built on it, and the gap to the layer's GEMM time is the math's share.
public enum StreamProbe {
    public enum Copy: String, Sendable { case perLane = "cp", bulk, registers = "reg" }

    public struct Layout: Sendable, Equatable, CustomStringConvertible {
        public let copy: Copy
        public let blocks: Int
        public let warpsPerBlock: Int
        /// Bytes per ring slot (a multiple of 512); registers: 4 KB a warp in flight.
        public let stepBytes: Int
        /// Ring slots (S − 1 steps in flight per warp); registers: 0.
        public let slots: Int
        /// Each warp's contiguous share, a multiple of `stepBytes` (the requested bytes over the warps, to the nearest step).
        public let regionBytes: Int

        public var warps: Int { blocks * warpsPerBlock }
        public var totalBytes: Int { warps * regionBytes }
        /// Dynamic shared memory a block needs (each slot keeps its 16-byte mbarrier after the data).
        public var sharedBytes: Int { copy == .registers ? 0 : warpsPerBlock * slots * (stepBytes + 16) }
        public var kernelName: String {
            copy == .registers ? "moe_stream_probe_registers" : "moe_stream_probe_\(copy.rawValue)_\(slots)"
        }
        /// Bytes each warp has requested and not yet consumed, at most.
        public var inFlightPerWarp: Int { copy == .registers ? 4096 : (slots - 1) * stepBytes }
        public var description: String {
            let ring = copy == .registers ? "registers 8×16 B/lane" : "\(copy.rawValue) \(stepBytes / 1024)K×\(slots)"
            return "\(ring), \(blocks)×\(warpsPerBlock) warps, \(regionBytes / 1024) KB/warp"
        }
    }

    /// Ring depths the kernel module instantiates (MOE_STREAM_PROBE lines).
    public static let ringSlots = [2, 3, 4, 6, 8]

    /// The sweep for `bytes` (≈ one GEMM's weights at a decode size): first the resident kernels' own geometry
    /// (`residentBlocks` blocks of 8 warps, 2 KB slots, as the 1-token kernels launch), then one-wave grids of 1–4 blocks
    /// per SM with 2–8 KB slots and every ring depth that fits `maxSharedPerBlock`, then the register reference.
    public static func layouts(bytes: Int, multiprocessors: Int, maxSharedPerBlock: Int, residentBlocks: Int) -> [Layout] {
        var result: [Layout] = []
        func add(_ copy: Copy, blocks: Int, warps: Int, step: Int, slots: Int) {
            // each warp's share to the nearest whole step, so every layout reads within half a step a warp of `bytes`
            let share = Double(bytes) / Double(blocks * warps) / Double(step)
            let region = Int(share.rounded()) * step
            guard region >= step else { return }
            let layout = Layout(copy: copy, blocks: blocks, warpsPerBlock: warps, stepBytes: step, slots: slots, regionBytes: region)
            guard layout.sharedBytes <= maxSharedPerBlock else { return }
            result.append(layout)
        }
        for copy in [Copy.perLane, .bulk] {
            for slots in ringSlots { add(copy, blocks: residentBlocks, warps: 8, step: 2048, slots: slots) }
        }
        for copy in [Copy.perLane, .bulk] {
            for (perSM, warps) in [(1, 8), (2, 8), (4, 4), (1, 16)] {
                for step in [2048, 4096, 8192] {
                    // blocks that all stay resident: the SM keeps 1 KB per block beside the dynamic shared memory
                    for slots in ringSlots where perSM * (warps * slots * (step + 16) + 1024) <= maxSharedPerBlock + 1024 {
                        add(copy, blocks: perSM * multiprocessors, warps: warps, step: step, slots: slots)
                    }
                }
            }
        }
        for perSM in [2, 4, 8] { add(.registers, blocks: perSM * multiprocessors, warps: 8, step: 4096, slots: 0) }
        return result
    }

    public struct Result: Sendable {
        public let layout: Layout
        public let microseconds: Double
        public var gigabytesPerSecond: Double { Double(layout.totalBytes) / microseconds / 1e3 }
    }

    /// Times every layout: `iterations` back-to-back launches between events (as the layer's graph replays are timed),
    /// each reading the next `bytes`-sized slice of a 1 GiB random buffer so that no launch finds its bytes in L2;
    /// median, after `warmup` launches.
    public static func measure(
        _ layouts: [Layout], runtime: CUDARuntime, warmup: Int = 3, iterations: Int = 30
    ) throws -> [Result] {
        let device = runtime.device
        try device.makeCurrent()
        let stream = try CUDAStream(device: device)
        let poolBytes = 1 << 30
        let pool = try DeviceBuffer(device: device, byteCount: poolBytes)
        try CUDACeilings(runtime: runtime, stream: stream).fillRandom(pool, seed: 11)
        let module = try runtime.module(.ceilings)
        let maxThreads = layouts.map { $0.blocks * $0.warpsPerBlock * 32 }.max() ?? 1
        let sink = try DeviceBuffer(device: device, byteCount: maxThreads * 4)
        var results: [Result] = []
        for layout in layouts {
            guard layout.totalBytes * 2 <= poolBytes else {
                throw CUDAError.invalidArgument("stream probe: \(layout.totalBytes) bytes per launch do not fit twice in the 1 GiB pool")
            }
            let kernel = try module.function(layout.kernelName)
            let shape = LaunchShape(grid: (layout.blocks, 1, 1), block: layout.warpsPerBlock * 32, sharedBytes: layout.sharedBytes)
            let slices = poolBytes / layout.totalBytes
            func launch(_ index: Int) throws {
                let source = pool.address + UInt64((index % slices) * layout.totalBytes)
                try kernel.launch(shape, stream: stream, arguments: [
                    .u64(source), .u64(UInt64(layout.regionBytes)), .u32(UInt32(layout.stepBytes)), .u64(sink.address),
                ])
            }
            var launched = 0  // warm-ups and timed launches walk the slices in one sequence
            let times = try stream.backToBackSeconds(warmup: warmup, iterations: iterations) { _ in
                try launch(launched)
                launched += 1
            }
            results.append(Result(layout: layout, microseconds: times.sorted()[times.count / 2] * 1e6))
        }
        return results
    }

    /// The copy ceiling the bench prints (cuMemcpyDtoDAsync of 1 GiB, read + written bytes), for the probe's table.
    public static func copyCeiling(runtime: CUDARuntime) throws(CUDAError) -> (value: Double, method: String) {
        try runtime.device.makeCurrent()
        return try CUDACeilings(runtime: runtime, stream: try CUDAStream(device: runtime.device)).copyBandwidth()
    }
}
