import ArgumentParser
import Foundation
import MoECore

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Verify a backend against the reference, then time the whole layer per token count.",
        discussion: "Measures the machine's memory bandwidth and peak arithmetic in the same run and reports each row's floor (the larger of weight bytes ÷ bandwidth and flops ÷ peak) and the % of floor reached (100% = at the floor).")

    @OptionGroup var model: ModelOptions

    @Option(help: "Comma-separated token counts (default: 1,8,32,128 on the CPU; 1,8,32,128,512,2048,8192,32768 on a GPU).")
    var tokens: TokenList?

    @Option(help: "Backend: auto, cpu or cuda.")
    var backend: BackendChoice = .auto

    @Option(help: "Routing mode: renormalize or softmax-first.")
    var routing: RoutingMode = .renormalize

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Option(help: "Timed runs per row (default: as many as fit in --seconds, at least 5).")
    var iterations: Int?

    @Option(help: "Target seconds of timed runs per row when --iterations is not given.")
    var seconds: Double = 1.0

    @Option(help: "Untimed warm-up runs per row.")
    var warmup: Int = 2

    @Option(help: "Also profile each row (per-stage time, flops, bytes) and write table, JSON summary and Chrome trace per token count into this directory.")
    var profile: String?

    @OptionGroup(title: "Expert parallelism") var parallel: ExpertParallelFlags

    func validate() throws {
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be ≥ 1") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0") }
        if !(seconds > 0) { throw ValidationError("--seconds must be > 0") }
        if profile != nil && parallel.isRequested {
            throw ValidationError("--profile is not available with --ranks; the expert-parallel bench prints per-phase times itself")
        }
    }

    func run() throws {
        if parallel.isRequested {
            return try ExpertParallelBenchCommand.run(
                flags: parallel, model: model, backend: backend, tokens: tokens?.values, routing: routing,
                iterations: iterations, warmup: warmup, json: json)
        }
        let (weights, source) = try model.loadWeights(defaultPreset: .gptOss20b)
        let (engine, why) = try BackendRegistry.make(backend, weights: weights)
        print("model:   \(source): \(weights.config)")
        print("backend: \(engine.detail) [\(why)]")
        let settings = BenchSettings(
            tokens: tokens?.values, routing: routing, iterations: iterations, seconds: seconds, warmup: warmup,
            seed: model.seed, profileDirectory: profile)
        let report = try Bench.run(
            engine: engine, weights: weights, settings: settings, preset: model.model == nil ? (model.preset ?? .gptOss20b).rawValue : nil,
            modelPath: model.model)
        if let json {
            try report.write(to: json)
            print("wrote \(json)")
        }
    }
}

struct BenchSettings {
    var tokens: [Int]?
    var routing: RoutingMode
    var iterations: Int?
    var seconds: Double
    var warmup: Int
    var seed: UInt64
    /// When set: each row is also run under a `Profiler` and its report written here.
    var profileDirectory: String? = nil
}

/// The benchmark procedure shared by `moe bench` and the main job.
enum Bench {
    static func run(
        engine: any MoEBenchmarkable, weights: MoELayerWeights, settings: BenchSettings, preset: String?, modelPath: String?
    ) throws -> BenchmarkReport {
        let c = weights.config
        let progress = Progress()
        // 1. Correctness first: a sample against the float64 reference.
        let checkTokens = 4
        progress.say("checking \(engine.name) against the float64 reference (\(checkTokens) tokens)…")
        let sample = SyntheticModel.hiddenStates(tokens: checkTokens, hidden: c.hidden, seed: settings.seed &+ 77)
        let reference = try ReferenceMoE.forward(weights: weights, input: sample, tokens: checkTokens, mode: settings.routing)
        let result = try engine.forward(sample, tokens: checkTokens, routing: settings.routing, profiler: nil)
        let error = Accuracy.relativeL2(result.hidden, reference.hidden)
        let mismatches = Accuracy.routingMismatches(
            ids: result.topkIds, reference: reference, tokens: checkTokens, experts: c.experts, k: c.topK)
        progress.clear()
        print(String(format: "check:   rel L2 %.2e vs float64 reference, %d routing mismatches (bar: ≤ 1e-2, 0)", error, mismatches.count))
        guard error <= 1e-2, mismatches.isEmpty else {
            throw MoEError.invalidArgument(
                "the \(engine.name) backend disagrees with the reference (rel L2 \(error), tokens \(mismatches) routed differently); not benchmarking a wrong answer")
        }

        // 2. Ceilings, in the same run.
        progress.say("measuring the machine's ceilings…")
        let ceilings = try engine.measureCeilings()
        progress.clear()
        print("machine: \(engine.machineDescription)")
        print(String(format: "ceilings: bandwidth %.1f GB/s (%@); peak %.3f TFLOP/s (%@)",
                     ceilings.bandwidthGBps, ceilings.bandwidthMethod, ceilings.peakTFLOPs, ceilings.peakMethod))

        // 3. Rows.
        let tokenCounts = settings.tokens ?? (engine.name == "cpu" ? [1, 8, 32, 128] : [1, 8, 32, 128, 512, 2048, 8192, 32768])
        var rows: [BenchmarkReport.Row] = []
        print("")
        print("tokens   median µs     p10 µs     p90 µs     tokens/s  TFLOP/s      GB/s   experts   floor µs  % of floor")
        for (index, T) in tokenCounts.enumerated() {
            progress.say("[\(index + 1)/\(tokenCounts.count)] tokens=\(T)…")
            let input = SyntheticModel.hiddenStates(tokens: T, hidden: c.hidden, seed: settings.seed &+ UInt64(T))
            let routed = try engine.forward(input, tokens: T, routing: settings.routing, profiler: nil)
            let touched = Set(routed.topkIds).count
            let iterations: Int
            if let fixed = settings.iterations {
                iterations = fixed
            } else {
                let probe = try engine.timeForward(input, tokens: T, routing: settings.routing, warmup: 0, iterations: 1)[0]
                iterations = max(5, min(1000, Int(settings.seconds / max(probe, 1e-7))))
            }
            let times = try engine.timeForward(
                input, tokens: T, routing: settings.routing, warmup: settings.warmup, iterations: iterations)
            let stats = TimingStats(times)
            let flops = LayerCost.flops(tokens: T, config: c)
            let bytes = LayerCost.weightBytes(expertsTouched: touched, config: c)
            let floor = LayerCost.floorSeconds(flops: flops, bytes: bytes, ceilings: ceilings)
            let row = BenchmarkReport.Row(
                tokens: T, medianMicroseconds: stats.median * 1e6, p10Microseconds: stats.p10 * 1e6,
                p90Microseconds: stats.p90 * 1e6, tokensPerSecond: Double(T) / stats.median,
                TFLOPs: flops / stats.median / 1e12, GBps: bytes / stats.median / 1e9,
                floorMicroseconds: floor * 1e6, percentOfFloor: 100 * floor / stats.median, expertsTouched: touched,
                weightBytes: bytes, flops: flops, iterations: iterations, stages: nil)
            var profiled = row
            if let directory = settings.profileDirectory {
                profiled.stages = try profileRow(
                    engine: engine, input: input, tokens: T, routing: settings.routing, ceilings: ceilings, directory: directory)
            }
            rows.append(profiled)
            progress.clear()
            print(String(format: "%6d %11.1f %10.1f %10.1f %12.1f %8.3f %9.1f %9d %10.1f %10.1f%%",
                         T, row.medianMicroseconds, row.p10Microseconds, row.p90Microseconds, row.tokensPerSecond,
                         row.TFLOPs, row.GBps, touched, row.floorMicroseconds, row.percentOfFloor))
        }
        return BenchmarkReport(
            machine: .init(description: engine.machineDescription, backendDetail: engine.detail),
            ceilings: .init(
                bandwidthGBps: ceilings.bandwidthGBps, bandwidthMethod: ceilings.bandwidthMethod,
                peakTFLOPs: ceilings.peakTFLOPs, peakMethod: ceilings.peakMethod),
            config: .init(
                preset: preset, model: modelPath, E: c.experts, k: c.topK, H: c.hidden, I: c.intermediate,
                backend: engine.name, ranks: 1, comm: "none", routing: settings.routing.rawValue),
            check: .init(tokens: checkTokens, relativeL2: error, routingMismatches: mismatches.count),
            rows: rows)
    }
}

extension Bench {
    /// Runs `runs` profiled forwards of one row, writes their report as `bench-T<tokens>` in `directory`, and
    /// returns each stage's median time with its flops and bytes for the JSON row.
    static func profileRow(
        engine: any MoEBenchmarkable, input: [Float], tokens T: Int, routing: RoutingMode, ceilings: HardwareCeilings,
        directory: String, runs: Int = 5
    ) throws -> [String: BenchmarkReport.StageRow] {
        var profilers: [Profiler] = []
        for _ in 0..<runs {
            let profiler = Profiler()
            _ = try engine.forward(input, tokens: T, routing: routing, profiler: profiler)
            profilers.append(profiler)
        }
        try ProfileReport.write(profilers: [profilers.last!], ceilings: ceilings, name: "bench-T\(T)", to: directory)
        var byStage: [String: [Profiler.Record]] = [:]
        for profiler in profilers { for record in profiler.records { byStage[record.stage, default: []].append(record) } }
        return byStage.mapValues { records in
            let median = TimingStats(records.map { Double($0.durationNanoseconds) * 1e-3 }).median
            return BenchmarkReport.StageRow(medianMicroseconds: median, flops: records[0].flops, bytes: records[0].bytes)
        }
    }
}

/// One-line progress on stderr, only when stderr is a terminal.
struct Progress {
    let enabled = isatty(2) != 0
    func say(_ text: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
    }
    func clear() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
