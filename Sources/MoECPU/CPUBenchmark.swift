import CMoECPUKernels
import Dispatch
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension CPUBackend: MoEBenchmarkable {
    public var machineDescription: String { "\(CPUInfo.modelName), \(ProcessorCount.online) cores" }

    /// The machine's read bandwidth and the peak rate of the arithmetic the chosen kernels use, measured now on
    /// the backend's own worker threads.
    public func measureCeilings() throws -> HardwareCeilings {
        // Under the backend's lock: the probes share the pool with forward passes on other threads.
        let (bandwidth, peak) = lock.withLock {
            (CPUCeilings.readBandwidthGBps(pool: pool), CPUCeilings.peakTFLOPs(path: kernelPath, pool: pool))
        }
        return HardwareCeilings(
            bandwidthGBps: bandwidth.value, bandwidthMethod: bandwidth.method,
            peakTFLOPs: peak.value, peakMethod: peak.method)
    }

    /// Times the zero-allocation forward with buffers allocated once up front.
    public func timeForward(_ input: [Float], tokens: Int, routing: RoutingMode, warmup: Int, iterations: Int) throws -> [Double] {
        try InputCheck.validate(input, tokens: tokens, hidden: config.hidden)
        var hidden = [Float](repeating: 0, count: tokens * config.hidden)
        var ids = [Int32](repeating: 0, count: tokens * config.topK)
        var topWeights = [Float](repeating: 0, count: tokens * config.topK)
        var times = [Double](repeating: 0, count: iterations)
        var sink: Float = 0
        try input.withUnsafeBufferPointer { x in
            try hidden.withUnsafeMutableBufferPointer { out in
                try ids.withUnsafeMutableBufferPointer { idBuffer in
                    try topWeights.withUnsafeMutableBufferPointer { weightBuffer in
                        for i in -warmup..<iterations {
                            let start = DispatchTime.now().uptimeNanoseconds
                            try forward(
                                input: x.baseAddress!, tokens: tokens, routing: routing, hidden: out.baseAddress!,
                                topkIds: idBuffer.baseAddress!, topkWeights: weightBuffer.baseAddress!, profiler: nil)
                            if i >= 0 { times[i] = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 }
                            sink += out[0]
                        }
                    }
                }
            }
        }
        if sink.isNaN { throw MoEError.invalidArgument("benchmark produced NaN output") }
        return times
    }
}

/// Measured CPU ceilings, on a backend's worker threads.
public enum CPUCeilings {
    /// Sums a 512 MiB buffer (far past every cache) with every worker, 16-byte SIMD loads; best of 5 passes. The
    /// buffer gets the same page size as the packed weights (2 MiB where the OS allows), so the floor is what
    /// the weights' stream could reach.
    static func readBandwidthGBps(pool: WorkerPool) -> (value: Double, method: String) {
        let count = 512 << 20 / 8
        let storage = AlignedBuffer<UInt64>(count: count, hugePages: true)
        let buffer = storage.pointer
        // Touch every page with distinct values so nothing reads shared zero pages.
        for i in 0..<count { buffer[i] = UInt64(i) &* 0x9E37_79B9 }
        let threads = pool.workers
        let sums = UnsafeMutablePointer<UInt64>.allocate(capacity: threads)
        defer { sums.deallocate() }
        var best = Double.infinity
        var total: UInt64 = 0
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            pool.run { worker in
                let range = pool.share(of: count / 8, worker: worker)
                var acc = SIMD8<UInt64>(repeating: 0)
                let raw = UnsafeRawPointer(buffer)
                for i in range { acc &+= raw.loadUnaligned(fromByteOffset: i * 64, as: SIMD8<UInt64>.self) }
                sums[worker] = acc.wrappedSum()
            }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
            for w in 0..<threads { total &+= sums[w] }
        }
        if total == 42 { print("") }  // keeps the sums live
        return (Double(count * 8) / best / 1e9, "read 512 MiB (huge pages) with \(threads) threads, SIMD sum, best of 5")
    }

    /// The peak of the arithmetic `path` runs on every worker (independent dependency chains); best of 3.
    static func peakTFLOPs(path: CPUKernelPath, pool: WorkerPool) -> (value: Double, method: String) {
        let threads = pool.workers
        let flops = UnsafeMutablePointer<Double>.allocate(capacity: threads)
        defer { flops.deallocate() }
        var best = 0.0
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            pool.run { worker in
                switch path {
                case .amxBF16: flops[worker] = moekit_amxbf16_peak_probe(200_000)
                case .avx512BF16: flops[worker] = moekit_avx512bf16_peak_probe(2_000_000)
                case .avx2: flops[worker] = moekit_avx2_peak_probe(4_000_000)
                case .neon: flops[worker] = moekit_neon_peak_probe(4_000_000)
                case .portable: flops[worker] = portableFMAProbe(steps: 20_000_000)
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
            var total = 0.0
            for w in 0..<threads { total += flops[w] }
            best = max(best, total / seconds / 1e12)
        }
        let method: String
        switch path {
        case .amxBF16: method = "bf16 tile products (tdpbf16ps 16×32 · 32×16, 2 flops per bf16 pair), 4 chains × \(threads) threads, best of 3"
        case .avx512BF16: method = "bf16 dot products (vdpbf16ps zmm, 2 flops per bf16 pair), 12 chains × \(threads) threads, best of 3"
        case .avx2: method = "fp32 FMA (vfmadd ymm), 12 chains × \(threads) threads, best of 3"
        case .neon: method = "fp32 FMA (fmla 4S), 12 chains × \(threads) threads, best of 3"
        case .portable: method = "fp32 multiply-add in Swift SIMD16, 8 chains × \(threads) threads, best of 3"
        }
        return (best, method)
    }

    /// 8 independent SIMD16 multiply-add chains (the portable kernels' arithmetic); returns flops done.
    static func portableFMAProbe(steps: Int) -> Double {
        var a0 = SIMD16<Float>(repeating: 1e-9), a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3
        var a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7
        let m = SIMD16<Float>(repeating: 0.999_999), b = SIMD16<Float>(repeating: 1e-7)
        for _ in 0..<(steps / 16) {
            a0 = a0 * m + b; a1 = a1 * m + b; a2 = a2 * m + b; a3 = a3 * m + b
            a4 = a4 * m + b; a5 = a5 * m + b; a6 = a6 * m + b; a7 = a7 * m + b
        }
        let s = (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7).sum()
        if s == 42 { print("") }
        return Double(steps / 16) * 8 * 16 * 2
    }
}

public enum CPUInfo {
    /// "model name" from /proc/cpuinfo, or the architecture.
    public static var modelName: String {
        #if os(Linux)
        if let text = try? String(decoding: readFile("/proc/cpuinfo"), as: UTF8.self),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
            let value = line.split(separator: ":", maxSplits: 1).last
        {
            return value.trimmingCharacters(in: " \t")
        }
        #endif
        #if arch(x86_64)
        return "x86-64"
        #else
        return "arm64"
        #endif
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        guard let f = fopen(path, "r") else { throw MoEError.io("cannot open \(path)") }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return bytes
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var s = self
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}
