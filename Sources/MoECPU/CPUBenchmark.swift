import Dispatch
import MoECore

#if canImport(Glibc)
import Glibc
#endif

extension CPUBackend: MoEBenchmarkable {
    public var machineDescription: String { "\(CPUInfo.modelName), \(ProcessorCount.online) cores" }

    public func measureCeilings() throws -> HardwareCeilings {
        let bandwidth = CPUCeilings.readBandwidthGBps(threads: workers)
        let peak = CPUCeilings.fp32FMAPeakTFLOPs(threads: workers)
        return HardwareCeilings(
            bandwidthGBps: bandwidth.value, bandwidthMethod: bandwidth.method,
            peakTFLOPs: peak.value, peakMethod: peak.method)
    }

    public func timeForward(_ input: [Float], tokens: Int, routing: RoutingMode, warmup: Int, iterations: Int) throws -> [Double] {
        var sink: Float = 0
        for _ in 0..<warmup { sink += try forward(input, tokens: tokens, routing: routing, profiler: nil).hidden[0] }
        var times: [Double] = []
        times.reserveCapacity(iterations)
        for _ in 0..<iterations {
            let start = DispatchTime.now().uptimeNanoseconds
            sink += try forward(input, tokens: tokens, routing: routing, profiler: nil).hidden[0]
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        }
        if sink.isNaN { throw MoEError.invalidArgument("benchmark produced NaN output") }
        return times
    }
}

/// Measured CPU ceilings: memory read bandwidth and fp32 FMA rate, with all worker threads.
public enum CPUCeilings {
    /// Sums a 512 MiB buffer (far past every cache) with `threads` threads; best of 5 passes.
    public static func readBandwidthGBps(threads: Int) -> (value: Double, method: String) {
        let count = 512 << 20 / 8
        let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        defer { buffer.deallocate() }
        for i in 0..<count { buffer[i] = UInt64(i) &* 0x9E37_79B9 }
        nonisolated(unsafe) let data = buffer
        var best = Double.infinity
        var total: UInt64 = 0
        for _ in 0..<5 {
            let partial = UnsafeMutablePointer<UInt64>.allocate(capacity: threads)
            nonisolated(unsafe) let sums = partial
            let start = DispatchTime.now().uptimeNanoseconds
            DispatchQueue.concurrentPerform(iterations: threads) { worker in
                let lo = count * worker / threads, hi = count * (worker + 1) / threads
                var acc = SIMD8<UInt64>(repeating: 0)
                var i = lo
                let raw = UnsafeRawPointer(data)
                while i + 8 <= hi {
                    acc &+= raw.loadUnaligned(fromByteOffset: i * 8, as: SIMD8<UInt64>.self)
                    i += 8
                }
                sums[worker] = acc.wrappedSum()
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
            best = min(best, seconds)
            for w in 0..<threads { total &+= partial[w] }
            partial.deallocate()
        }
        if total == 42 { print("") }  // keeps the sums live
        return (Double(count * 8) / best / 1e9, "read 512 MiB with \(threads) threads, SIMD sum, best of 5")
    }

    /// Independent fp32 FMA chains in SIMD16 registers on every thread; best of 3.
    public static func fp32FMAPeakTFLOPs(threads: Int) -> (value: Double, method: String) {
        let steps = 20_000_000
        var best = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            DispatchQueue.concurrentPerform(iterations: threads) { worker in
                var a0 = SIMD16<Float>(repeating: Float(worker) * 1e-9), a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3
                var a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7
                let m = SIMD16<Float>(repeating: 0.999_999), b = SIMD16<Float>(repeating: 1e-7)
                for _ in 0..<(steps / 16) {
                    a0.addProduct(a0, m); a1.addProduct(a1, m); a2.addProduct(a2, m); a3.addProduct(a3, m)
                    a4.addProduct(a4, m); a5.addProduct(a5, m); a6.addProduct(a6, m); a7.addProduct(a7, m)
                    a0 += b
                }
                let s = (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7).sum()
                if s == 42 { print("") }
            }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        }
        let flops = Double(threads) * Double(steps / 16) * 8 * 16 * 2
        return (flops / best / 1e12, "fp32 FMA, 8 independent SIMD16 chains × \(threads) threads, best of 3")
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
