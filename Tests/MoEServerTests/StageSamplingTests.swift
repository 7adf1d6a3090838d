import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MoECPU
import MoECore
import Testing

@testable import MoEServer

/// A CPU backend that says its profiled passes are slower (as the CUDA backend's are) and records which passes got
/// a profiler.
final class SlowProfilingBackend: MoEBackend, @unchecked Sendable {
    let inner = CPUBackend(weights: Fixture.weights)
    let name = "slow-profiling-cpu"
    let detail = "CPU backend that reports slower profiled passes"
    var config: MoEConfig { inner.config }
    var profiledPassesAreSlower: Bool { true }
    private let lock = NSLock()
    private var _profiled: [Bool] = []
    var profiled: [Bool] { lock.withLock { _profiled } }

    func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        lock.withLock { _profiled.append(profiler != nil) }
        return try inner.forward(input, tokens: tokens, routing: routing, profiler: profiler)
    }
}

/// The stage metrics profile one pass in N where a profiled pass is slower (the first pass, then every Nth), every
/// pass where profiling is free, and every pass while a profile session records.
@Suite struct StageSamplingTests {
    static func forwardOnce(_ client: any TestClientProtocol, seed: UInt64) async throws {
        let response = try await client.execute(
            uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders, body: Fixture.jsonBody(Fixture.input(tokens: 2, seed: seed)))
        #expect(response.status == .ok)
    }

    @Test func theSamplingPeriodFollowsTheBackendUnlessConfigured() throws {
        #expect(MoEServerConfiguration().stageMetricsPeriod(profiledPassesAreSlower: false) == 1)
        #expect(MoEServerConfiguration().stageMetricsPeriod(profiledPassesAreSlower: true) == MoEServerConfiguration.defaultStageMetricsEvery)
        #expect(MoEServerConfiguration(stageMetricsEvery: 3).stageMetricsPeriod(profiledPassesAreSlower: false) == 3)
        #expect(MoEServerConfiguration(stageMetricsEvery: 1).stageMetricsPeriod(profiledPassesAreSlower: true) == 1)
        #expect(CPUBackend(weights: Fixture.weights).profiledPassesAreSlower == false)
        for bad in [0, -4] {
            #expect(throws: MoEError.invalidArgument("--stage-metrics-every \(bad) must be ≥ 1 (1 profiles every forward pass)")) {
                try MoEServerConfiguration(stageMetricsEvery: bad).validate()
            }
        }
    }

    @Test func aBackendWithSlowerProfiledPassesIsProfiledOnceInN() async throws {
        let backend = SlowProfilingBackend()
        let server = try Fixture.server(MoEServerConfiguration(port: 0, stageMetricsEvery: 4), backend: backend)
        try await Fixture.withRouter(server) { client in
            for seed in 0..<9 { try await Self.forwardOnce(client, seed: UInt64(seed)) }
            let health = try await client.execute(uri: "/health", method: .get)
            let object = try #require(JSONSerialization.jsonObject(with: Data(String(buffer: health.body).utf8)) as? [String: Any])
            #expect(object["stage_metrics_every"] as? Int == 4)
        }
        #expect(backend.profiled == [true, false, false, false, true, false, false, false, true])
        let samples = try PrometheusText.parse(server.metrics.prometheusText())
        #expect(samples["moe_forward_batches_total"] == 9 && samples["moe_stage_profiled_batches_total"] == 3)
        for stage in try Fixture.cpuStages() {
            #expect(samples[#"moe_stage_calls_total{stage="\#(stage)"}"#] == 3, "\(stage)")
        }
    }

    @Test func byDefaultSuchABackendIsProfiledOnceInSixteenAndTheCPUBackendEveryPass() async throws {
        let slow = SlowProfilingBackend()
        let server = try Fixture.server(backend: slow)
        try await Fixture.withRouter(server) { client in
            for seed in 0..<17 { try await Self.forwardOnce(client, seed: UInt64(seed)) }
        }
        #expect(slow.profiled.enumerated().allSatisfy { $0.element == ($0.offset % 16 == 0) } && slow.profiled.count == 17)
        let cpu = try Fixture.server()
        try await Fixture.withRouter(cpu) { client in
            for seed in 0..<3 { try await Self.forwardOnce(client, seed: UInt64(seed)) }
        }
        #expect(try PrometheusText.parse(cpu.metrics.prometheusText())["moe_stage_profiled_batches_total"] == 3)
    }

    @Test func everyPassIsProfiledWhileAProfileRecords() async throws {
        let backend = SlowProfilingBackend()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("moe-sampling-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try Fixture.server(
            MoEServerConfiguration(port: 0, enableProfiling: true, profileDirectory: directory, stageMetricsEvery: 100), backend: backend)
        try await Fixture.withRouter(server) { client in
            try await Self.forwardOnce(client, seed: 1)  // pass 0: sampled
            try await Self.forwardOnce(client, seed: 2)  // not sampled
            let start = try await client.execute(uri: "/start_profile", method: .post, headers: Fixture.jsonHeaders, body: ByteBuffer(string: "{}"))
            #expect(start.status == .ok, "\(String(buffer: start.body))")
            try await Self.forwardOnce(client, seed: 3)
            try await Self.forwardOnce(client, seed: 4)
            let stop = try await client.execute(uri: "/stop_profile", method: .post)
            #expect(stop.status == .ok, "\(String(buffer: stop.body))")
            try await Self.forwardOnce(client, seed: 5)  // not sampled again
        }
        #expect(backend.profiled == [true, false, true, true, false])
    }
}
