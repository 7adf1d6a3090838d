import Foundation
import MoECPU
import MoECore
import Testing

@testable import MoECLI

/// A CPU backend with fixed ceilings, so bench tests do not spend seconds measuring the machine.
final class FixedCeilingsBackend: MoEBenchmarkable {
    let inner: CPUBackend
    init(_ weights: MoELayerWeights) { inner = CPUBackend(weights: weights) }
    var name: String { "cpu" }
    var detail: String { "cpu (fixed ceilings for tests)" }
    var config: MoEConfig { inner.config }
    var machineDescription: String { "test machine" }
    func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        try inner.forward(input, tokens: tokens, routing: routing, profiler: profiler)
    }
    func measureCeilings() throws -> HardwareCeilings {
        HardwareCeilings(bandwidthGBps: 10, bandwidthMethod: "fixed", peakTFLOPs: 0.5, peakMethod: "fixed")
    }
    func timeForward(_ input: [Float], tokens: Int, routing: RoutingMode, warmup: Int, iterations: Int) throws -> [Double] {
        try inner.timeForward(input, tokens: tokens, routing: routing, warmup: warmup, iterations: iterations)
    }
}

@Suite struct BenchTests {
    @Test func jsonHasTheDocumentedKeysAndConsistentFigures() throws {
        let weights = try SyntheticModel.layer(config: MoEPreset.tiny.config, seed: 1)
        let report = try Bench.run(
            engine: FixedCeilingsBackend(weights), weights: weights,
            settings: BenchSettings(tokens: [1, 5], routing: .renormalize, iterations: 3, seconds: 1, warmup: 1, seed: 1),
            preset: "tiny", modelPath: nil)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(UInt32.random(in: 0...UInt32.max)).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try report.write(to: path)
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        for key in ["machine", "ceilings", "config", "rows"] { #expect(object[key] != nil, "missing \(key)") }
        let ceilings = object["ceilings"] as! [String: Any]
        #expect(ceilings["bandwidth_GBps"] as? Double == 10)
        #expect(ceilings["peak_TFLOPs"] as? Double == 0.5)
        let config = object["config"] as! [String: Any]
        #expect(config["E"] as? Int == 8 && config["k"] as? Int == 4 && config["backend"] as? String == "cpu")
        let rows = object["rows"] as! [[String: Any]]
        #expect(rows.count == 2)
        for key in ["tokens", "median_us", "p10_us", "p90_us", "tokens_per_s", "TFLOPs", "GBps", "floor_us", "pct_of_floor"] {
            #expect(rows[0][key] != nil, "row misses \(key)")
        }
        // Figures agree with each other: floor from the fixed ceilings, % of floor from the median.
        let row = report.rows[1]
        let c = weights.config
        let routerFlops: Double = 2 * 5 * 128 * 8
        let expertFlops: Double = 2 * 5 * 4 * (128 * 192 + 96 * 128)
        let flops = routerFlops + expertFlops
        #expect(row.flops == flops)
        let perExpert = Double(c.gateUpBytesPerExpert + c.downBytesPerExpert + c.biasBytesPerExpert)
        let routerBytes: Double = 8 * 128 * 2 + 16
        let bytes = Double(row.expertsTouched) * perExpert + routerBytes
        #expect(row.weightBytes == bytes)
        #expect(abs(row.floorMicroseconds - max(bytes / 10e9, flops / 0.5e12) * 1e6) < 1e-9)
        #expect(abs(row.percentOfFloor - 100 * row.floorMicroseconds / row.medianMicroseconds) < 1e-9)
        #expect(row.p10Microseconds <= row.medianMicroseconds && row.medianMicroseconds <= row.p90Microseconds)
    }

    @Test func timingStatsInterpolate() {
        let stats = TimingStats([5, 1, 4, 2, 3])
        #expect(stats.median == 3 && stats.p10 == 1.4 && abs(stats.p90 - 4.6) < 1e-12)
    }

    @Test func unavailableExplicitBackendFailsClearly() throws {
        let weights = try SyntheticModel.layer(config: MoEPreset.tiny.config, seed: 1)
        do {
            _ = try BackendRegistry.make(.cuda, weights: weights)
            // A machine with a working GPU may build it; then there is nothing to check here.
        } catch let error as MoEError {
            guard case .backendUnavailable(let name, let reason) = error else { Issue.record("\(error)"); return }
            #expect(name == "cuda" && !reason.isEmpty)
        }
        let (auto, why) = try BackendRegistry.make(.auto, weights: weights)
        #expect(why.hasPrefix("auto: \(auto.name)"))
    }

    @Test func badArgumentsAreRejected() {
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--tokens", "0,3"]) }
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--tokens", "x"]) }
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--preset", "gpt-oss-7b"]) }
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--preset", "tiny", "--model", "/tmp/m"]) }
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--iterations", "0"]) }
        #expect(throws: (any Error).self) { try CheckCommand.parse(["--backend", "tpu"]) }
    }

    @Test func conformanceSuiteFailsABrokenBackend() throws {
        // A backend that drops the routing weight must be caught by the suite (the suite can fail).
        final class Broken: MoEBackend {
            let inner: CPUBackend
            init(_ w: MoELayerWeights) { inner = CPUBackend(weights: w) }
            var name: String { "broken" }
            var detail: String { "" }
            var config: MoEConfig { inner.config }
            func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
                var r = try inner.forward(input, tokens: tokens, routing: routing, profiler: profiler)
                r.hidden[0] += 10
                return r
            }
        }
        let c = Conformance.cases(quick: true)[3]
        #expect(!Conformance.run(c) { Broken($0) }.passed)
        #expect(Conformance.run(c) { CPUBackend(weights: $0) }.passed)
    }
}

@Suite struct BenchProfileTests {
    @Test func profiledRowsCarryStagesAndWriteTheReport() throws {
        let weights = try SyntheticModel.layer(config: MoEPreset.tiny.config, seed: 2)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-profile-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let report = try Bench.run(
            engine: FixedCeilingsBackend(weights), weights: weights,
            settings: BenchSettings(
                tokens: [3], routing: .renormalize, iterations: 2, seconds: 1, warmup: 0, seed: 1, profileDirectory: directory),
            preset: "tiny", modelPath: nil)
        let stages = try #require(report.rows[0].stages)
        for stage in ["router", "topk", "plan", "gemm1", "gemm2", "reduce"] {
            let row = try #require(stages[stage], "missing stage \(stage) in \(stages.keys.sorted())")
            #expect(row.medianMicroseconds > 0)
        }
        // GEMM 1's flops are the stage's own: 2 · rows · H · 2I with rows = T·k.
        let expectedFlops: Double = 2 * 12 * 128 * 192
        #expect(stages["gemm1"]?.flops == expectedFlops)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(files.contains("bench-T3.trace.json") && files.contains("bench-T3.summary.json"), "\(files)")
    }

    @Test func profileWithRanksIsRefused() {
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--profile", "/tmp/p", "--ranks", "2"]) }
        #expect(throws: (any Error).self) {
            try ForwardCommand.parse(["--model", "m", "--input", "i", "--output", "o", "--profile", "/tmp/p", "--ranks", "2"])
        }
    }
}

/// GPU expert parallelism adds its peer-copy ceiling to the JSON's ceilings; every other bench leaves the keys out.
@Test func thePeerCopyCeilingIsInTheJSONOnlyWhenMeasured() throws {
    var ceilings = BenchmarkReport.Ceilings(bandwidthGBps: 4234, bandwidthMethod: "copy", peakTFLOPs: 792, peakMethod: "cuBLAS")
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    let plain = String(decoding: try encoder.encode(ceilings), as: UTF8.self)
    #expect(!plain.contains("peer_copy"), "\(plain)")
    ceilings.peerCopyGBps = 310.5
    ceilings.peerCopyMethod = "peer copy 310.5 GB/s per rank"
    let withPeer = String(decoding: try encoder.encode(ceilings), as: UTF8.self)
    #expect(withPeer.contains("\"peer_copy_GBps\":310.5") && withPeer.contains("\"peer_copy_method\""), "\(withPeer)")
    let decoded = try JSONDecoder().decode(BenchmarkReport.Ceilings.self, from: Data(withPeer.utf8))
    #expect(decoded.peerCopyGBps == 310.5)
}
