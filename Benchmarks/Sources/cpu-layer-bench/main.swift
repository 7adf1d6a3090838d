// Times the CPU backend on one MoE layer of a preset's shape: both expert GEMMs (router excluded, the figure the
// issue's targets are set in) and the whole layer (router, top-k, plan, gather, GEMMs, reduce), per token count.
// Prints median / p10 / p90 ms, the experts touched, the floor (weight bytes touched ÷ the bandwidth measured in
// the same run, or flops ÷ the measured peak, the larger) and the % of floor reached.
//
//   swift run -c release --package-path Benchmarks cpu-layer-bench \
//       [--preset gpt-oss-20b] [--tokens 1,8,32,128,512] [--kernels avx512-bf16] [--workers 2] [--seconds 2]
import Dispatch
import Foundation
import MoECPU
import MoECore

#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var preset = MoEPreset.gptOss20b
    var tokens = [1, 8, 32, 128, 512]
    var kernels: CPUKernelPath?
    var workers: Int?
    var seconds = 2.0
    var minimumIterations = 5

    static func parse(_ arguments: [String]) throws -> Options {
        var o = Options()
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < arguments.count else { throw MoEError.invalidArgument("\(arguments[i - 1]) needs a value") }
            return arguments[i]
        }
        while i < arguments.count {
            switch arguments[i] {
            case "--preset":
                let name = try value()
                guard let p = MoEPreset(rawValue: name) else { throw MoEError.invalidArgument("unknown preset \(name)") }
                o.preset = p
            case "--tokens":
                o.tokens = try value().split(separator: ",").map {
                    guard let t = Int($0), t >= 1 else { throw MoEError.invalidArgument("bad token count \($0)") }
                    return t
                }
            case "--kernels": o.kernels = try CPUKernelPath.named(try value(), source: "--kernels")
            case "--workers":
                guard let w = Int(try value()), w >= 1 else { throw MoEError.invalidArgument("--workers needs a count ≥ 1") }
                o.workers = w
            case "--seconds":
                guard let s = Double(try value()), s > 0 else { throw MoEError.invalidArgument("--seconds needs a positive number") }
                o.seconds = s
            case "--help", "-h":
                print("cpu-layer-bench [--preset tiny|gpt-oss-20b|gpt-oss-120b] [--tokens 1,8,32] [--kernels \(CPUKernelPath.allCases.map(\.rawValue).joined(separator: "|"))] [--workers N] [--seconds S]")
                exit(0)
            default: throw MoEError.invalidArgument("unknown argument \(arguments[i]); see --help")
            }
            i += 1
        }
        return o
    }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, max(0, Int((p * Double(sorted.count - 1)).rounded())))]
}

func loadAverage() -> String {
    guard let f = fopen("/proc/loadavg", "r") else { return "?" }
    defer { fclose(f) }
    var buffer = [CChar](repeating: 0, count: 128)
    guard fgets(&buffer, 128, f) != nil else { return "?" }
    let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}

/// Runs `body` until `seconds` have passed (at least `minimum` times, after one warm-up), returns seconds per run.
func time(seconds: Double, minimum: Int, _ body: () throws -> Void) rethrows -> [Double] {
    try body()
    var times: [Double] = []
    let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
    while times.count < minimum || DispatchTime.now().uptimeNanoseconds < deadline {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
    }
    return times.sorted()
}

do {
    let options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
    let c = options.preset.config
    let weights = try SyntheticModel.layer(config: c, seed: 7)
    let backend: CPUBackend
    if let kernels = options.kernels {
        backend = try CPUBackend(weights: weights, workers: options.workers, kernels: kernels)
    } else {
        backend = CPUBackend(weights: weights, workers: options.workers)
    }
    print("machine:  \(backend.machineDescription); load average \(loadAverage())")
    print("backend:  \(backend.detail)")
    print("layer:    \(options.preset.rawValue) \(c)")
    let ceilings = try backend.measureCeilings()
    print("ceilings: read \(String(format: "%.1f", ceilings.bandwidthGBps)) GB/s (\(ceilings.bandwidthMethod)); peak \(String(format: "%.3f", ceilings.peakTFLOPs)) TFLOP/s (\(ceilings.peakMethod))")
    print("")
    print("tokens experts | GEMMs ms: median    p10    p90  GFLOP/s  floor ms  % floor | layer ms: median    p10    p90")
    for T in options.tokens {
        let x = SyntheticModel.hiddenStates(tokens: T, hidden: c.hidden, seed: 1000 + UInt64(T))
        let routed = try backend.forward(x, tokens: T, routing: .renormalize, profiler: nil)
        let plan = RoutingPlan(topkIds: routed.topkIds, tokens: T, topK: c.topK, experts: c.experts)
        let touched = plan.expertCounts.filter { $0 > 0 }.count
        var rowWeights = [Float](repeating: 0, count: plan.routedSlots)
        for r in 0..<plan.routedSlots { rowWeights[r] = routed.topkWeights[Int(plan.sortedToSlot[r])] }
        var xBF16 = x.map { BF16.bits($0) }
        var combine = [UInt16](repeating: 0, count: T * c.topK * c.hidden)
        let allExperts = Array(0..<c.experts)
        let gemmTimes = xBF16.withUnsafeMutableBufferPointer { xp in
            combine.withUnsafeMutableBufferPointer { cp in
                plan.sortedToSlot.withUnsafeBufferPointer { order in
                    rowWeights.withUnsafeBufferPointer { rw in
                        time(seconds: options.seconds, minimum: options.minimumIterations) {
                            backend.runExperts(
                                plan: plan, experts: allExperts, rowWeights: rw.baseAddress!,
                                input: RowAddressing(base: xp.baseAddress!, indices: order.baseAddress!, divisor: Int32(c.topK), stride: c.hidden),
                                output: RowAddressing(base: cp.baseAddress!, indices: order.baseAddress!, stride: c.hidden),
                                profiler: nil)
                        }
                    }
                }
            }
        }
        let layerTimes = try backend.timeForward(
            x, tokens: T, routing: .renormalize, warmup: 1,
            iterations: max(options.minimumIterations, Int(options.seconds / max(gemmTimes[0], 1e-6)))).sorted()
        let flops = 2.0 * Double(T * c.topK) * Double(c.hidden) * Double(3 * c.intermediate)
        let bytes = Double(touched * (c.gateUpBytesPerExpert + c.downBytesPerExpert))
        let floor = max(bytes / (ceilings.bandwidthGBps * 1e9), flops / (ceilings.peakTFLOPs * 1e12))
        let median = percentile(gemmTimes, 0.5)
        let gemmColumns = String(
            format: "%15.3f %6.3f %6.3f %8.1f %9.3f %8.1f", median * 1e3, percentile(gemmTimes, 0.1) * 1e3,
            percentile(gemmTimes, 0.9) * 1e3, flops / median / 1e9, floor * 1e3, 100 * floor / median)
        let layerColumns = String(
            format: "%15.3f %6.3f %6.3f", percentile(layerTimes, 0.5) * 1e3, percentile(layerTimes, 0.1) * 1e3,
            percentile(layerTimes, 0.9) * 1e3)
        print(String(format: "%6d %7d", T, touched) + " | " + gemmColumns + " | " + layerColumns)
    }
    print("load average after: \(loadAverage())")
} catch {
    print("cpu-layer-bench: \(error)")
    exit(1)
}
