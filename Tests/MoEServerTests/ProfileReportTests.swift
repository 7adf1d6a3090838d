import Foundation
import MoECPU
import MoECore
import Testing

/// The profiler's per-stage costs on a gpt-oss-20b layer, and the three report outputs.
@Suite struct ProfileReportTests {
    /// gpt-oss-20b's MoE shape (E=32, k=4, H=I=2880) with cheap weights: constant MXFP4 bytes instead of random
    /// ones (the costs depend only on shapes and routing), a random router so tokens spread over experts.
    static func gptOss20bBackend() throws -> CPUBackend {
        let c = MoEPreset.gptOss20b.config
        let (E, H, I) = (c.experts, c.hidden, c.intermediate)
        let router = SyntheticModel.hiddenStates(tokens: E, hidden: H, seed: 7).map { BF16.round($0 / 50) }
        let gateUp = MXFP4ExpertStack(
            experts: E, rows: 2 * I, columns: H, blocks: [UInt8](repeating: 0x21, count: E * 2 * I * H / 2),
            scales: [UInt8](repeating: 120, count: E * 2 * I * H / 32))
        let down = MXFP4ExpertStack(
            experts: E, rows: H, columns: I, blocks: [UInt8](repeating: 0x9A, count: E * H * I / 2),
            scales: [UInt8](repeating: 118, count: E * H * I / 32))
        let weights = try MoELayerWeights(
            config: c, routerWeight: router, routerBias: [Float](repeating: 0, count: E), gateUp: gateUp,
            gateUpBias: [Float](repeating: 0.25, count: E * 2 * I), down: down, downBias: [Float](repeating: 0, count: E * H))
        return CPUBackend(weights: weights)
    }

    /// One token on gpt-oss-20b: k = 4 rows on exactly 4 distinct experts, so every number below is fixed.
    @Test func gptOss20bStageCostsMatchHandComputedValues() throws {
        let backend = try Self.gptOss20bBackend()
        let x = SyntheticModel.hiddenStates(tokens: 1, hidden: 2880, seed: 3)
        let profiler = Profiler()
        let out = try backend.forward(x, tokens: 1, routing: .renormalize, profiler: profiler)
        #expect(Set(out.topkIds).count == 4)
        let report = ProfileReport(name: "gpt-oss-20b", profilers: [profiler])
        func cost(_ stage: Stage) -> StageCost? {
            report.stage(stage).map { StageCost(flops: $0.flops, bytes: $0.bytes) }
        }
        // router: 2·T·H·E = 2·1·2880·32 flops. Bytes: x 2880·2 + Wr 32·2880·2 + br 32·2 + logits 32·4.
        #expect(cost(.router) == StageCost(flops: 184_320, bytes: 5_760 + 184_320 + 64 + 128))
        // top-k: 3·T·E flops; reads logits 32·4 B, writes ids and weights 4·(4+4) B.
        #expect(cost(.topk) == StageCost(flops: 96, bytes: 128 + 32))
        // plan: no arithmetic; T·k = 4 entries, 4 arrays of 4-byte ints.
        #expect(cost(.plan) == StageCost(flops: 0, bytes: 64))
        // GEMM 1: rows = T·k = 4 on 4 experts; 2·4·2880·5760 flops. Bytes: gathered x 4·2880·2 = 23_040, a out
        // 4·2880·2 = 23_040, and per expert W1 = 5760 rows · 90 blocks · 17 B = 8_812_800 plus b1 5760·2 = 11_520.
        #expect(cost(.gemm1) == StageCost(flops: 132_710_400, bytes: 23_040 + 23_040 + 4 * (8_812_800 + 11_520)))
        // GEMM 2: 2·4·2880·2880 flops. Bytes: a 4·2880·2 + y 4·2880·2, per expert W2 = 2880 rows · 90 blocks · 17 B
        // = 4_406_400 plus b2 2880·2 = 5_760.
        #expect(cost(.gemm2) == StageCost(flops: 66_355_200, bytes: 23_040 + 23_040 + 4 * (4_406_400 + 5_760)))
        // reduce: T·k·H = 11_520 adds; reads 4·2880·2 B, writes 2880·4 B.
        #expect(cost(.reduce) == StageCost(flops: 11_520, bytes: 23_040 + 11_520))
        // dispatch (the CPU backend's gather into packed GEMM 1 input): no arithmetic; reads 4 rows of bf16 x
        // (4·2880·2 B) and writes them packed: fp32 on the avx2 path (4·2880·4 B), bf16 pairs otherwise (4·2880·2 B).
        let packedBytes: Double = backend.kernelPath == .avx2 ? 46_080 : 23_040
        #expect(cost(.dispatch) == StageCost(flops: 0, bytes: 23_040 + packedBytes))
        // The single-rank CPU backend has no combine stage (that is expert parallelism's).
        #expect(report.stages.map(\.stage) == ["router", "topk", "plan", "dispatch", "gemm1", "gemm2", "reduce"])
        #expect(report.stages.allSatisfy { $0.calls == 1 && $0.seconds > 0 })
        #expect(abs(report.stages.reduce(0) { $0 + $1.share } - 1) < 1e-12)

        // The trace of this forward is valid Chrome trace JSON with one X event per stage.
        let trace = try ChromeTrace(json: report.chromeTraceJSON())
        #expect(trace.complete.map(\.name) == ["router", "topk", "plan", "dispatch", "gemm1", "gemm2", "reduce"])
        let gemm1 = try #require(trace.complete.first { $0.name == "gemm1" })
        #expect(gemm1.flops == 132_710_400 && gemm1.bytes == 23_040 + 23_040 + 4 * (8_812_800 + 11_520))
    }

    /// Records with known times: two ranks, gemm1 twice on rank 0.
    static func twoRankRecords() -> [Profiler.Record] {
        func r(_ stage: String, _ rank: Int, _ start: UInt64, _ duration: UInt64, _ flops: Double, _ bytes: Double) -> Profiler.Record {
            Profiler.Record(stage: stage, rank: rank, startNanoseconds: start, durationNanoseconds: duration, flops: flops, bytes: bytes)
        }
        return [
            r("router", 0, 0, 1_000, 2e6, 1e6), r("gemm1", 0, 1_000, 4_000, 8e9, 2e6), r("gemm1", 0, 6_000, 4_000, 8e9, 2e6),
            r("router", 1, 500, 1_000, 2e6, 1e6), r("gemm2", 1, 2_000, 10_000, 4e9, 6e6),
        ]
    }

    static let ceilings = HardwareCeilings(bandwidthGBps: 1_000, bandwidthMethod: "test", peakTFLOPs: 10, peakMethod: "test")

    @Test func summaryAggregatesStagesOverCallsAndRanks() throws {
        let report = ProfileReport(name: "ep2", records: Self.twoRankRecords(), ceilings: Self.ceilings)
        #expect(report.ranks == [0, 1])
        #expect(report.stages.map(\.stage) == ["router", "gemm1", "gemm2"])
        let gemm1 = try #require(report.stage(.gemm1))
        // 2 calls of 4 µs = 8 µs of 20 µs recorded; 16 GFLOP in 8 µs = 2000 TFLOP/s = 20000 % of a 10 TFLOP/s peak.
        #expect(gemm1.calls == 2 && abs(gemm1.seconds - 8e-6) < 1e-18 && abs(gemm1.share - 0.4) < 1e-12)
        #expect(abs(gemm1.tflops - 2_000) < 1e-9 && abs(gemm1.percentOfPeak(Self.ceilings)! - 20_000) < 1e-6)
        // 4 MB in 8 µs = 500 GB/s = 50 % of 1000 GB/s; floor = max(16e9/10e12, 4e6/1e12) s = 1.6 ms.
        #expect(abs(gemm1.gbps - 500) < 1e-9 && abs(gemm1.percentOfBandwidth(Self.ceilings)! - 50) < 1e-9)
        #expect(abs(gemm1.floorSeconds(Self.ceilings)! - 1.6e-3) < 1e-15)
        #expect(abs(report.totalSeconds - 20e-6) < 1e-18)

        let summary = try #require(JSONSerialization.jsonObject(with: Data(report.summaryJSON().utf8)) as? [String: Any])
        #expect(summary["name"] as? String == "ep2" && summary["ranks"] as? [Int] == [0, 1])
        let stages = try #require(summary["stages"] as? [[String: Any]])
        #expect(stages.map { $0["stage"] as? String } == ["router", "gemm1", "gemm2"])
        #expect(stages[1]["calls"] as? Int == 2 && stages[1]["flops"] as? Double == 16e9)
        #expect((stages[1]["pct_of_bandwidth"] as? Double).map { abs($0 - 50) < 1e-9 } == true)
        #expect((summary["ceilings"] as? [String: Any])?["bandwidth_GBps"] as? Double == 1_000)

        let table = report.table()
        #expect(table.contains("gemm1") && table.contains("% peak") && table.contains(" 500 "))
    }

    @Test func traceHasOneTrackPerRank() throws {
        let report = ProfileReport(name: "ep2", records: Self.twoRankRecords())
        let trace = try ChromeTrace(json: report.chromeTraceJSON())
        #expect(trace.processNames == [0: "rank 0", 1: "rank 1"])
        #expect(trace.complete.count == 5)
        #expect(trace.complete.allSatisfy { $0.pid == $0.tid })
        #expect(trace.complete.filter { $0.pid == 1 }.map(\.name) == ["router", "gemm2"])
        let gemm2 = try #require(trace.complete.first { $0.name == "gemm2" })
        // ts and dur in microseconds.
        #expect(gemm2.ts == 2 && gemm2.dur == 10 && gemm2.flops == 4e9 && gemm2.bytes == 6e6)
    }

    @Test func withoutCostsLeavesOutFlopsAndBytes() throws {
        let report = ProfileReport(records: Self.twoRankRecords(), ceilings: Self.ceilings, includeCosts: false)
        let trace = try ChromeTrace(json: report.chromeTraceJSON())
        #expect(trace.complete.allSatisfy { $0.flops == nil && $0.bytes == nil })
        let summary = try #require(JSONSerialization.jsonObject(with: Data(report.summaryJSON().utf8)) as? [String: Any])
        let stages = try #require(summary["stages"] as? [[String: Any]])
        #expect(stages.allSatisfy { $0["flops"] == nil && $0["TFLOPs"] == nil && $0["total_us"] != nil })
        #expect(!report.table().contains("GFLOP") && report.table().contains("mean us"))
    }

    @Test func writeCreatesTheDirectoryAndAllThreeFiles() throws {
        let directory = NSTemporaryDirectory() + "moe-profile-\(UUID().uuidString)/nested"
        defer { try? FileManager.default.removeItem(atPath: (directory as NSString).deletingLastPathComponent) }
        let files = try ProfileReport.write(
            profilers: [], ceilings: nil, name: "bench run/1", to: directory)
        #expect(files.summary == directory + "/bench_run_1.summary.json")
        for path in [files.table, files.summary, files.trace!] { #expect(FileManager.default.fileExists(atPath: path)) }

        let report = ProfileReport(name: "t", records: Self.twoRankRecords())
        let written = try report.write(to: directory, trace: false)
        #expect(written.trace == nil && !FileManager.default.fileExists(atPath: directory + "/t.trace.json"))
        let summary = try #require(
            JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: written.summary))) as? [String: Any])
        #expect((summary["files"] as? [String: Any])?["table"] as? String == written.table)
    }

    @Test func writeIntoAFileFailsWithAnIOError() throws {
        let file = NSTemporaryDirectory() + "moe-profile-file-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: file, contents: Data()))
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect {
            try ProfileReport(records: Self.twoRankRecords()).write(to: file)
        } throws: { error in
            guard case .io(let message) = error as? MoEError else { return false }
            return message.contains(file) && message.contains("not a directory")
        }
    }

    /// With no profiler the stage body runs and the cost expression is never evaluated.
    @Test func noProfilerEvaluatesNoCost() {
        let profiler: Profiler? = nil
        var costEvaluated = false
        var bodyRan = false
        func expensiveCost() -> StageCost {
            costEvaluated = true
            return StageCost(flops: 1)
        }
        profiler.scope(.gemm1, cost: expensiveCost()) { bodyRan = true }
        #expect(bodyRan && !costEvaluated)

        let real: Profiler? = Profiler(rank: 3)
        real.scope(.gemm1, cost: expensiveCost()) {}
        #expect(costEvaluated && real?.records.map(\.rank) == [3])
    }

    @Test func jsonTextEscapesAndRendersNumbers() throws {
        let text = JSONText.object([
            ("s", .string("a\"b\\c\n\u{01}")), ("n", .number(0.1)), ("i", .number(3)), ("nan", .number(.nan)),
        ]).rendered
        #expect(text == #"{"s":"a\"b\\c\n\u0001","n":0.1,"i":3,"nan":null}"#)
        _ = try JSONSerialization.jsonObject(with: Data(text.utf8))
        #expect(Fixed.format(-0.0004, digits: 3) == "0.000" && Fixed.format(12.3456, digits: 2) == "12.35")
        #expect(Fixed.significant(1234.5) == "1235" && Fixed.significant(2.54841) == "2.55")
        #expect(Fixed.significant(0.000123456) == "0.000123" && Fixed.significant(0) == "0" && Fixed.significant(-0.5) == "-0.500")
    }
}
