import CCUDA
import MoECore

extension CUDABackend: MoEBenchmarkable {
    public var machineDescription: String { runtime.device.summary }

    /// Copy bandwidth (device-to-device, bytes read + written) and the bf16 matrix peak (cuBLAS when it loads,
    /// else MoEKit's register-resident mma.sync loop, named as such), measured now on this device.
    public func measureCeilings() throws -> HardwareCeilings {
        lock.wait()
        defer { lock.signal() }
        try runtime.device.makeCurrent()
        let ceilings = CUDACeilings(runtime: runtime, stream: stream)
        let bandwidth = try ceilings.copyBandwidth()
        let peak = try ceilings.bf16Peak()
        return HardwareCeilings(
            bandwidthGBps: bandwidth.value, bandwidthMethod: bandwidth.method, peakTFLOPs: peak.value,
            peakMethod: peak.method)
    }

    /// Graph replays timed with device events, one event pair per replay, after `warmup` untimed replays.
    /// Four input variants (the input's columns rotated) are replayed in turn, so routing, and the experts whose
    /// weights are read, change from one replay to the next (the weights of one decode step fit in L2).
    public func timeForward(_ input: [Float], tokens: Int, routing: RoutingMode, warmup: Int, iterations: Int) throws
        -> [Double]
    {
        try InputCheck.validate(input, tokens: tokens, hidden: config.hidden)
        try KernelBuildSwitches.refuseAliasedExperts("timing the layer")
        lock.wait()
        defer { lock.signal() }
        try runtime.device.makeCurrent()
        let bucket = try bucket(tokens: tokens)
        let H = config.hidden
        var graphs: [CUDAGraphExec] = []
        for slot in 0..<TokenBucket.inputSlots {
            let shift = slot * 977 % H
            var rotated = [UInt16](repeating: 0, count: input.count)
            for t in 0..<tokens {
                for h in 0..<H { rotated[t * H + h] = BF16.bits(input[t * H + (h + shift) % H]) }
            }
            try bucket.inputs[slot].uploadAsync(rotated, stream: stream)
            graphs.append(try bucket.graph(slot: slot, mode: routing, layer: layer, kernels: kernels, stream: stream))
        }
        let seconds = try stream.backToBackSeconds(warmup: warmup, iterations: iterations) { i in
            try graphs[i % graphs.count].launch(stream)
        }
        // Keep the result live: a NaN would mean the layer produced garbage.
        let probe = try bucket.output.download(UInt16.self, count: 1)
        if BF16.float(probe[0]).isNaN { throw MoEError.invalidArgument("CUDA benchmark produced NaN output") }
        return seconds
    }
}

/// The device's ceilings, measured in the caller's run.
struct CUDACeilings {
    let runtime: CUDARuntime
    let stream: CUDAStream

    /// cuMemcpyDtoDAsync of 1 GiB (random bytes), median of 10 after 3 warm-ups; counts bytes read + written.
    func copyBandwidth() throws(CUDAError) -> (value: Double, method: String) {
        let device = runtime.device
        let bytes = 1 << 30
        let source = try DeviceBuffer(device: device, byteCount: bytes)
        let destination = try DeviceBuffer(device: device, byteCount: bytes)
        try fillRandom(source, seed: 7)
        let driver = device.driver
        let copy = { () throws(CUDAError) in
            try driver.call(
                "cuMemcpyDtoDAsync", driver.api.cuMemcpyDtoDAsync?(destination.address, source.address, bytes, stream.handle))
        }
        for _ in 0..<3 { try copy() }
        var times: [Double] = []
        let start = try CUDAEvent(device: device), end = try CUDAEvent(device: device)
        for _ in 0..<10 {
            try start.record(stream)
            try copy()
            try end.record(stream)
            try end.synchronize()
            times.append(Double(try end.milliseconds(since: start)) * 1e-3)
        }
        let median = times.sorted()[times.count / 2]
        return (2 * Double(bytes) / median / 1e9, "cuMemcpyDtoDAsync 1 GiB device-to-device, read + write bytes, median of 10")
    }

    /// bf16 GEMM 8192³ (fp32 accumulate) through cuBLAS on random data, median of 10 after 3 warm-ups; falls back
    /// to the mma.sync register loop when cuBLAS cannot be loaded.
    func bf16Peak() throws(CUDAError) -> (value: Double, method: String) {
        let cublas: CuBLASLibrary
        do throws(CUDAError) {
            cublas = try CuBLASLibrary.load()
        } catch {
            let loop = try mmaLoopPeak()
            return (loop, "no cuBLAS (\(firstLine(error.description))): MoEKit mma.sync m16n8k16 bf16 register loop, instruction peak")
        }
        let device = runtime.device
        let n = 8192
        let a = try DeviceBuffer(device: device, byteCount: n * n * 2)
        let b = try DeviceBuffer(device: device, byteCount: n * n * 2)
        let c = try DeviceBuffer(device: device, byteCount: n * n * 2)
        try fillRandom(a, seed: 1)
        try fillRandom(b, seed: 2)
        var handle: cublasHandle_t?
        try cublas.call("cublasCreate", cublas.api.cublasCreate?(&handle))
        defer { _ = cublas.api.cublasDestroy?(handle) }
        try cublas.call("cublasSetStream", cublas.api.cublasSetStream?(handle, stream.handle))
        var alpha: Float = 1, beta: Float = 0
        let gemm = { () throws(CUDAError) in
            let status = cublas.api.cublasGemmEx?(
                handle, Int32(CCUDA_CUBLAS_OP_N), Int32(CCUDA_CUBLAS_OP_N), Int32(n), Int32(n), Int32(n), &alpha,
                UnsafeRawPointer(bitPattern: UInt(a.address)), Int32(CCUDA_R_16BF), Int32(n),
                UnsafeRawPointer(bitPattern: UInt(b.address)), Int32(CCUDA_R_16BF), Int32(n), &beta,
                UnsafeMutableRawPointer(bitPattern: UInt(c.address)), Int32(CCUDA_R_16BF), Int32(n),
                Int32(CCUDA_CUBLAS_COMPUTE_32F), Int32(CCUDA_CUBLAS_GEMM_DEFAULT))
            try cublas.call("cublasGemmEx", status)
        }
        for _ in 0..<3 { try gemm() }
        let start = try CUDAEvent(device: device), end = try CUDAEvent(device: device)
        var times: [Double] = []
        for _ in 0..<10 {
            try start.record(stream)
            try gemm()
            try end.record(stream)
            try end.synchronize()
            times.append(Double(try end.milliseconds(since: start)) * 1e-3)
        }
        let median = times.sorted()[times.count / 2]
        return (2 * pow3(n) / median / 1e12, "cuBLAS cublasGemmEx bf16 8192³, fp32 accumulate, random inputs, median of 10 (\(cublas.libraryPath))")
    }

    func mmaLoopPeak() throws(CUDAError) -> Double {
        let module = try runtime.module(.ceilings)
        let kernel = try module.function("moe_mma_peak")
        let device = runtime.device
        let blocks = device.multiprocessors * 8, threads = 256, iterations: Int32 = 4096
        let sink = try DeviceBuffer(device: device, byteCount: blocks * threads * 4)
        let shape = LaunchShape(grid: (blocks, 1, 1), block: threads)
        let arguments: [KernelArgument] = [.u64(sink.address), .i32(iterations), .u32(5)]
        try kernel.launch(shape, stream: stream, arguments: arguments)
        let start = try CUDAEvent(device: device), end = try CUDAEvent(device: device)
        var times: [Double] = []
        for _ in 0..<5 {
            try start.record(stream)
            try kernel.launch(shape, stream: stream, arguments: arguments)
            try end.record(stream)
            try end.synchronize()
            times.append(Double(try end.milliseconds(since: start)) * 1e-3)
        }
        let flops = Double(blocks * threads / 32) * Double(iterations) * 8 * 2 * 16 * 8 * 16
        return flops / times.sorted()[times.count / 2] / 1e12
    }

    func fillRandom(_ buffer: DeviceBuffer, seed: UInt32) throws(CUDAError) {
        let kernel = try runtime.module(.ceilings).function("moe_fill_random_bf16")
        let shape = LaunchShape(grid: (runtime.device.multiprocessors * 16, 1, 1), block: 256)
        try kernel.launch(shape, stream: stream, arguments: [.u64(buffer.address), .u64(UInt64(buffer.byteCount / 2)), .u32(seed)])
    }

    private func pow3(_ n: Int) -> Double { Double(n) * Double(n) * Double(n) }
    private func firstLine(_ text: String) -> String { String(text.split(separator: "\n").first ?? "") }
}
