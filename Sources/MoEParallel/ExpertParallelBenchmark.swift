import MoECPU
import MoECore

/// What `moe bench --ranks R` measures: one MoE layer through both communication paths, side by side.
public struct ExpertParallelBenchOptions: Sendable {
    /// Global batch sizes T.
    public var tokenCounts: [Int]
    public var iterations: Int = 20
    public var warmup: Int = 3
    public var mode: RoutingMode = .renormalize
    /// The paths to compare (both by default); iterations alternate their order.
    public var comms: [CommMode] = CommMode.allCases
    /// Also time the single-rank CPU forward of the whole batch on rank 0 (all the ranks' threads), for context.
    public var includeSingleRank: Bool = false
    /// Seed of the synthetic hidden states.
    public var inputSeed: UInt64 = 7

    public init(tokenCounts: [Int]) { self.tokenCounts = tokenCounts }

    func validate(resultWords: Int) throws {
        guard !tokenCounts.isEmpty, tokenCounts.allSatisfy({ $0 >= 1 }) else {
            throw ExpertParallelError.invalidArgument("token counts must be ≥ 1")
        }
        guard iterations >= 1, warmup >= 0, !comms.isEmpty else {
            throw ExpertParallelError.invalidArgument("need ≥ 1 iteration, ≥ 0 warm-up runs and at least one path")
        }
        guard ExpertParallelBenchmark.wordsPerRank(iterations: iterations, comms: comms.count) <= resultWords else {
            throw ExpertParallelError.invalidArgument(
                "\(iterations) iterations do not fit the results region; use at most \((resultWords / comms.count - 12) / ExpertParallelBenchmark.wordsPerIteration)")
        }
    }
}

/// Per-phase times and bytes of both paths for each batch size, ready to print or encode.
///
/// Times: for every iteration, a phase's time is the mean over ranks and the layer's time is the slowest
/// rank's; the report gives medians over iterations (and p10/p90 of the layer). Bytes are per layer, summed
/// over ranks.
public struct ExpertParallelBenchReport: Sendable, Codable, Equatable {
    public struct PathSummary: Sendable, Codable, Equatable {
        public var comm: String
        /// Median, p10, p90 of the layer time (slowest rank), microseconds.
        public var medianMicroseconds: Double
        public var p10Microseconds: Double
        public var p90Microseconds: Double
        public var tokensPerSecond: Double
        /// Per phase (ExpertParallelStage order): median microseconds, of which waiting in the phase's barrier,
        /// bytes moved, bytes stored remotely.
        public var phaseMicroseconds: [Double]
        public var phaseWaitMicroseconds: [Double]
        public var phaseBytesMoved: [Double]
        public var phaseBytesRemote: [Double]

        /// The communication phases' own work, without barrier waits: the median over iterations of Σ over
        /// metadata, dispatch and combine of (phase time − wait), microseconds. Waits mostly measure load
        /// imbalance between ranks and scheduling.
        public var communicationWorkMicroseconds: Double

        static func communicationWork(phase: [Double], wait: [Double]) -> Double {
            [ExpertParallelStage.metadata, .dispatch, .combine].reduce(0) { sum, stage in
                sum + max(0, phase[stage.index] - wait[stage.index])
            }
        }

        enum CodingKeys: String, CodingKey {
            case comm
            case medianMicroseconds = "median_us"
            case p10Microseconds = "p10_us"
            case p90Microseconds = "p90_us"
            case tokensPerSecond = "tokens_per_s"
            case phaseMicroseconds = "phase_us"
            case phaseWaitMicroseconds = "phase_wait_us"
            case phaseBytesMoved = "phase_bytes_moved"
            case phaseBytesRemote = "phase_bytes_remote"
            case communicationWorkMicroseconds = "comm_work_us"
        }
    }

    public struct Row: Sendable, Codable, Equatable {
        public var tokens: Int
        public var tokensPerRank: Int
        public var paths: [PathSummary]
        /// all-to-all median / symmetric median (> 1: symmetric is faster), when both ran.
        public var ratio: Double?
        /// Single-rank CPU forward of the whole batch, median microseconds, when measured.
        public var singleRankMicroseconds: Double?

        enum CodingKeys: String, CodingKey {
            case tokens
            case tokensPerRank = "tokens_per_rank"
            case paths
            case ratio = "alltoall_over_symmetric"
            case singleRankMicroseconds = "single_rank_us"
        }
    }

    public var model: String
    public var ranks: Int
    public var workersPerRank: Int
    public var mode: String
    public var iterations: Int
    public var warmup: Int
    public var phases: [String]
    public var rows: [Row]

    enum CodingKeys: String, CodingKey {
        case model, ranks
        case workersPerRank = "workers_per_rank"
        case mode, iterations, warmup, phases, rows
    }

    /// A text table per batch size.
    public func table() -> String {
        var lines: [String] = []
        lines.append(
            "expert parallelism: \(model); R=\(ranks) ranks × \(workersPerRank) CPU thread\(workersPerRank == 1 ? "" : "s"); "
                + "\(mode); \(iterations) iterations after \(warmup) warm-up")
        for row in rows {
            lines.append("")
            var title = "T=\(row.tokens) (\(row.tokensPerRank) per rank)"
            if let single = row.singleRankMicroseconds { title += "; single-rank CPU forward \(Self.number(single)) µs" }
            lines.append(title)
            let header = ["phase"] + row.paths.map { "\($0.comm) µs (wait)" } + (row.paths.count == 2 ? ["a2a/sym"] : [])
                + row.paths.map { "\($0.comm) bytes (remote)" }
            var table: [[String]] = [header]
            for (index, phase) in phases.enumerated() {
                var cells = [phase]
                cells += row.paths.map { path in
                    let wait = path.phaseWaitMicroseconds[index]
                    return Self.number(path.phaseMicroseconds[index]) + (wait > 0 ? " (\(Self.number(wait)))" : "")
                }
                if row.paths.count == 2 {
                    let sym = row.paths[0].phaseMicroseconds[index], a2a = row.paths[1].phaseMicroseconds[index]
                    cells.append(sym > 0 ? Self.ratio(a2a / sym) : "-")
                }
                cells += row.paths.map { "\(Self.bytes($0.phaseBytesMoved[index])) (\(Self.bytes($0.phaseBytesRemote[index])))" }
                table.append(cells)
            }
            var layer = ["layer median"] + row.paths.map { Self.number($0.medianMicroseconds) }
            if row.paths.count == 2 { layer.append(row.ratio.map(Self.ratio) ?? "-") }
            layer += row.paths.map { "p10 \(Self.number($0.p10Microseconds)) p90 \(Self.number($0.p90Microseconds))" }
            table.append(layer)
            var work = ["comm work, no waits"] + row.paths.map { Self.number($0.communicationWorkMicroseconds) }
            if row.paths.count == 2 {
                let sym = row.paths[0].communicationWorkMicroseconds, a2a = row.paths[1].communicationWorkMicroseconds
                work.append(sym > 0 ? Self.ratio(a2a / sym) : "-")
            }
            work += row.paths.map { _ in "" }
            table.append(work)
            var rate = ["tokens/s"] + row.paths.map { Self.number($0.tokensPerSecond) }
            if row.paths.count == 2 { rate.append("") }
            rate += row.paths.map { _ in "" }
            table.append(rate)
            lines.append(contentsOf: Self.align(table))
        }
        return lines.joined(separator: "\n")
    }

    static func align(_ rows: [[String]]) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in
                i == 0 ? cell.padding(widths[i]) : String(repeating: " ", count: widths[i] - cell.count) + cell
            }.joined(separator: "  ")
        }
    }

    static func number(_ value: Double) -> String {
        if value >= 100 { return String(Int(value.rounded())) }
        if value >= 10 { return String((value * 10).rounded() / 10) }
        return String((value * 100).rounded() / 100)
    }

    static func ratio(_ value: Double) -> String { String((value * 100).rounded() / 100) + "×" }

    static func bytes(_ value: Double) -> String {
        if value >= 1_048_576 { return String((value / 1_048_576 * 10).rounded() / 10) + " MiB" }
        if value >= 1024 { return String((value / 1024 * 10).rounded() / 10) + " KiB" }
        return String(Int(value)) + " B"
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}

enum ExpertParallelBenchmark {
    /// f64 words one rank stores per batch size: per path, 13 per iteration (6 phases, 6 waits, the layer)
    /// and 12 byte counts.
    static let wordsPerIteration = 13
    static func wordsPerRank(iterations: Int, comms: Int) -> Int { comms * (wordsPerIteration * iterations + 12) }

    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let position = p * Double(sorted.count - 1)
        let low = Int(position.rounded(.down)), high = Int(position.rounded(.up))
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }
}

extension ExpertParallelRunner {
    /// Times layer 0 through each path for each batch size, every rank taking part; returns the report on
    /// rank 0 and nil elsewhere.
    public func benchmark(_ options: ExpertParallelBenchOptions, modelName: String) throws -> ExpertParallelBenchReport? {
        let words = heap.layout.resultWords
        try options.validate(resultWords: words)
        let stages = ExpertParallelStage.allCases.count
        let H = config.hidden
        let backend = backends[0]
        var rows: [ExpertParallelBenchReport.Row] = []
        for tokens in options.tokenCounts {
            let tokensPerRank = (tokens + world - 1) / world
            let range = tokenRange(tokens: tokens)
            let global = SyntheticModel.hiddenStates(tokens: tokens, hidden: H, seed: options.inputSeed)
            let x = Array(global[(range.lowerBound * H)..<(range.upperBound * H)])
            func runLayer(_ comm: CommMode, _ measurement: inout LayerMeasurement) throws {
                _ = try engine.forward(
                    x, validTokens: range.count, tokensPerRank: tokensPerRank, kernels: backend, mode: options.mode,
                    comm: comm, measurement: &measurement)
            }
            for _ in 0..<options.warmup {
                for comm in options.comms {
                    var ignored = LayerMeasurement()
                    try runLayer(comm, &ignored)
                }
            }
            // [path][iteration] → 6 phase seconds + the layer's wall time; bytes from the last iteration.
            var samples = [[[Double]]](repeating: [], count: options.comms.count)
            var bytes = [LayerMeasurement](repeating: LayerMeasurement(), count: options.comms.count)
            for iteration in 0..<options.iterations {
                let order = iteration % 2 == 0 ? Array(options.comms.indices) : options.comms.indices.reversed()
                for path in order {
                    try heap.barrier(.step, layer: 0)
                    var measurement = LayerMeasurement()
                    let start = MonotonicClock.nanoseconds()
                    try runLayer(options.comms[path], &measurement)
                    let wall = Double(MonotonicClock.nanoseconds() - start) * 1e-9
                    samples[path].append(measurement.seconds + measurement.waitSeconds + [wall])
                    bytes[path] = measurement
                }
            }
            var singleRank: Double?
            if options.includeSingleRank {
                try heap.barrier(.step, layer: 0)
                if isRoot {
                    let threads = workers * environment.localWorld
                    let single = CPUBackend(weights: backend.weights, workers: threads)
                    let times = try single.timeForward(
                        global, tokens: tokens, routing: options.mode, warmup: 1, iterations: max(3, options.iterations / 4))
                    singleRank = ExpertParallelBenchmark.percentile(times.sorted(), 0.5) * 1e6
                }
                try heap.barrier(.step, layer: 0)
            }
            // Every rank stores its samples into rank 0's results region, row `rank`.
            var row: [Double] = []
            for path in options.comms.indices {
                for sample in samples[path] { row.append(contentsOf: sample) }
                row.append(contentsOf: bytes[path].bytesMoved + bytes[path].bytesRemote)
            }
            try heap.store(to: 0, .results, byteOffset: rank * words * 8, from: row, count: row.count * 8)
            try heap.barrier(.gather, layer: 0)
            if isRoot {
                rows.append(summarize(
                    options: options, tokens: tokens, tokensPerRank: tokensPerRank, stages: stages, singleRank: singleRank))
            }
        }
        guard isRoot else { return nil }
        return ExpertParallelBenchReport(
            model: modelName, ranks: world, workersPerRank: workers, mode: options.mode.rawValue,
            iterations: options.iterations, warmup: options.warmup,
            phases: ExpertParallelStage.allCases.map(\.rawValue), rows: rows)
    }

    /// Rank 0: reads every rank's samples from its results region and reduces them.
    private func summarize(
        options: ExpertParallelBenchOptions, tokens: Int, tokensPerRank: Int, stages: Int, singleRank: Double?
    ) -> ExpertParallelBenchReport.Row {
        let words = heap.layout.resultWords
        let results = heap.pointer(to: .results, rank: 0, as: Double.self)
        let perIteration = ExpertParallelBenchmark.wordsPerIteration
        let perPath = perIteration * options.iterations + 12
        var paths: [ExpertParallelBenchReport.PathSummary] = []
        for (path, comm) in options.comms.enumerated() {
            var layer: [Double] = []
            var phases = [[Double]](repeating: [], count: stages)
            var waits = [[Double]](repeating: [], count: stages)
            var communicationWork: [Double] = []
            for iteration in 0..<options.iterations {
                var slowest = 0.0
                var phaseMeans = [Double](repeating: 0, count: stages)
                var waitMeans = [Double](repeating: 0, count: stages)
                for peer in 0..<world {
                    let sample = results + peer * words + path * perPath + iteration * perIteration
                    for s in 0..<stages {
                        phaseMeans[s] += sample[s] / Double(world)
                        waitMeans[s] += sample[stages + s] / Double(world)
                    }
                    slowest = max(slowest, sample[2 * stages])
                }
                layer.append(slowest)
                for s in 0..<stages {
                    phases[s].append(phaseMeans[s])
                    waits[s].append(waitMeans[s])
                }
                communicationWork.append(
                    ExpertParallelBenchReport.PathSummary.communicationWork(phase: phaseMeans, wait: waitMeans))
            }
            var moved = [Double](repeating: 0, count: stages)
            var remote = [Double](repeating: 0, count: stages)
            for peer in 0..<world {
                let b = results + peer * words + path * perPath + perIteration * options.iterations
                for s in 0..<stages {
                    moved[s] += b[s]
                    remote[s] += b[stages + s]
                }
            }
            let sorted = layer.sorted()
            let median = ExpertParallelBenchmark.percentile(sorted, 0.5)
            let phaseMedians = phases.map { ExpertParallelBenchmark.percentile($0.sorted(), 0.5) * 1e6 }
            let waitMedians = waits.map { ExpertParallelBenchmark.percentile($0.sorted(), 0.5) * 1e6 }
            paths.append(.init(
                comm: comm.rawValue, medianMicroseconds: median * 1e6,
                p10Microseconds: ExpertParallelBenchmark.percentile(sorted, 0.1) * 1e6,
                p90Microseconds: ExpertParallelBenchmark.percentile(sorted, 0.9) * 1e6,
                tokensPerSecond: Double(tokens) / median,
                phaseMicroseconds: phaseMedians, phaseWaitMicroseconds: waitMedians,
                phaseBytesMoved: moved, phaseBytesRemote: remote,
                communicationWorkMicroseconds: ExpertParallelBenchmark.percentile(communicationWork.sorted(), 0.5) * 1e6))
        }
        var ratio: Double?
        if let sym = paths.first(where: { $0.comm == CommMode.symmetric.rawValue }),
            let a2a = paths.first(where: { $0.comm == CommMode.alltoall.rawValue }), sym.medianMicroseconds > 0
        {
            ratio = a2a.medianMicroseconds / sym.medianMicroseconds
        }
        // Symmetric first in the table, whatever order the paths ran in.
        paths.sort { ($0.comm == CommMode.symmetric.rawValue ? 0 : 1) < ($1.comm == CommMode.symmetric.rawValue ? 0 : 1) }
        return .init(tokens: tokens, tokensPerRank: tokensPerRank, paths: paths, ratio: ratio, singleRankMicroseconds: singleRank)
    }
}
