// Times the CPU backend on one MoE layer of a preset's shape: both expert GEMMs (router excluded, the figure the
// issue's targets are set in) and the whole layer (router, top-k, plan, gather, GEMMs, reduce), per token count.
// Prints median / p10 / p90 ms, the experts touched, the floor (weight bytes touched ÷ the read bandwidth, or
// flops ÷ the peak of the kernels' arithmetic, the larger; both measured just before the row, because this VM's
// memory bandwidth drifts by 2× within minutes) and the % of floor reached.
//
//   swift run -c release --package-path Benchmarks cpu-layer-bench \
//       [--preset gpt-oss-20b] [--tokens 1,8,32,128,512] [--kernels avx512-bf16] [--workers 2] [--seconds 2]
//       [--cold] [--profile]
// --cold reads 96 MiB between timed runs (untimed) so no weights are left in the 32 MiB L3 from the run before,
// as in a model whose consecutive layers have different weights; --profile prints one run's per-stage times.
//
// On a shared machine other processes take the cores now and then. Every timed run also reads how long this
// process's threads waited for a CPU (run_delay in /proc/self/task/*/schedstat); a run is "clean" when that wait
// is under 1% of its time. Figures are over clean runs only (the count is printed); when fewer than 3 runs were
// clean the row says so and uses all runs.
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
    var cold = false
    var profile = false

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
            case "--cold": o.cold = true
            case "--profile": o.profile = true
            case "--help", "-h":
                print("cpu-layer-bench [--preset tiny|gpt-oss-20b|gpt-oss-120b] [--tokens 1,8,32] [--kernels \(CPUKernelPath.allCases.map(\.rawValue).joined(separator: "|"))] [--workers N] [--seconds S] [--cold] [--profile]")
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

/// 96 MiB read between timed runs under --cold, to push the previous run's weights out of the L3.
nonisolated(unsafe) let evictionBuffer: UnsafeMutableBufferPointer<UInt64> = {
    let b = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: 96 << 20 / 8)
    for i in b.indices { b[i] = UInt64(i) }
    return b
}()
nonisolated(unsafe) var evictionSink: UInt64 = 0

func evictCaches() {
    var sum: UInt64 = 0
    for i in stride(from: 0, to: evictionBuffer.count, by: 8) { sum &+= evictionBuffer[i] }
    evictionSink &+= sum
}

/// Nanoseconds this process's threads have spent waiting on a run queue (Linux schedstat), 0 elsewhere.
func runQueueWaitNanoseconds() -> UInt64 {
    #if os(Linux)
    guard let directory = opendir("/proc/self/task") else { return 0 }
    defer { closedir(directory) }
    var total: UInt64 = 0
    var buffer = [CChar](repeating: 0, count: 256)
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard name.first?.isNumber == true, let f = fopen("/proc/self/task/\(name)/schedstat", "r") else { continue }
        if fgets(&buffer, 256, f) != nil {
            let fields = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
            if fields.count >= 2, let wait = UInt64(fields[1]) { total += wait }
        }
        fclose(f)
    }
    return total
    #else
    return 0
    #endif
}

struct Timing {
    /// Sorted seconds per run, clean runs only (all runs when fewer than 3 were clean).
    var seconds: [Double]
    var clean: Int
    var total: Int
    var note: String { clean >= 3 ? "\(clean)/\(total) clean" : "CONTENDED: \(clean)/\(total) clean" }
}

/// Runs `body` until `seconds` of timed runs have passed (at least `minimum` runs, after one warm-up). `between`
/// runs untimed before each timed run.
func time(seconds: Double, minimum: Int, between: () -> Void = {}, _ body: () throws -> Void) rethrows -> Timing {
    try body()
    var all: [Double] = [], clean: [Double] = []
    var spent = 0.0
    while (all.count < minimum || spent < seconds) && all.count < 20_000 {
        between()
        let waitBefore = runQueueWaitNanoseconds()
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        let waitAfter = runQueueWaitNanoseconds()
        let waited = waitAfter >= waitBefore ? waitAfter - waitBefore : 0  // a thread may have exited meanwhile
        let t = Double(elapsed) * 1e-9
        all.append(t)
        if Double(waited) < 0.01 * Double(elapsed) { clean.append(t) }
        spent += t
    }
    return Timing(seconds: (clean.count >= 3 ? clean : all).sorted(), clean: clean.count, total: all.count)
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
    print("machine:  \(backend.machineDescription); load average \(loadAverage())\(options.cold ? "; caches evicted before every timed run" : "")")
    print("backend:  \(backend.detail)")
    print("layer:    \(options.preset.rawValue) \(c)")
    let first = try backend.measureCeilings()
    print("ceilings: \(first.bandwidthMethod); \(first.peakMethod); measured before every row")
    print("")
    print("tokens experts  GB/s TFLOP/s | GEMMs ms: median    p10    p90  GFLOP/s  floor ms  % floor | layer ms: median    p10    p90 | runs")
    for T in options.tokens {
        let ceilings = try backend.measureCeilings()
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
                        time(seconds: options.seconds, minimum: options.minimumIterations, between: options.cold ? evictCaches : {}) {
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
        var hidden = [Float](repeating: 0, count: T * c.hidden)
        var ids = [Int32](repeating: 0, count: T * c.topK)
        var topWeights = [Float](repeating: 0, count: T * c.topK)
        let layerTimes = try x.withUnsafeBufferPointer { input in
            try time(seconds: options.seconds, minimum: options.minimumIterations, between: options.cold ? evictCaches : {}) {
                try backend.forward(
                    input: input.baseAddress!, tokens: T, routing: .renormalize, hidden: &hidden, topkIds: &ids,
                    topkWeights: &topWeights, profiler: nil)
            }
        }
        let flops = 2.0 * Double(T * c.topK) * Double(c.hidden) * Double(3 * c.intermediate)
        let bytes = Double(touched * (c.gateUpBytesPerExpert + c.downBytesPerExpert))
        let floor = max(bytes / (ceilings.bandwidthGBps * 1e9), flops / (ceilings.peakTFLOPs * 1e12))
        let median = percentile(gemmTimes.seconds, 0.5)
        let gemmColumns = String(
            format: "%15.3f %6.3f %6.3f %8.1f %9.3f %8.1f", median * 1e3, percentile(gemmTimes.seconds, 0.1) * 1e3,
            percentile(gemmTimes.seconds, 0.9) * 1e3, flops / median / 1e9, floor * 1e3, 100 * floor / median)
        let layerColumns = String(
            format: "%15.3f %6.3f %6.3f", percentile(layerTimes.seconds, 0.5) * 1e3,
            percentile(layerTimes.seconds, 0.1) * 1e3, percentile(layerTimes.seconds, 0.9) * 1e3)
        print(String(format: "%6d %7d %5.1f %7.3f", T, touched, ceilings.bandwidthGBps, ceilings.peakTFLOPs) + " | " + gemmColumns + " | " + layerColumns
              + " | \(gemmTimes.note), \(layerTimes.note)")
        if options.profile {
            let profiler = Profiler()
            if options.cold { evictCaches() }
            _ = try backend.forward(x, tokens: T, routing: .renormalize, profiler: profiler)
            let stages = profiler.records.map { String(format: "%@ %.3f", $0.stage, Double($0.durationNanoseconds) * 1e-6) }
            print("        stages (ms): " + stages.joined(separator: ", "))
        }
    }
    print("load average after: \(loadAverage())")
} catch {
    print("cpu-layer-bench: \(error)")
    exit(1)
}
