import Foundation
import Hummingbird
import HummingbirdTesting
import MoECore
import Testing

@testable import MoEServer

/// Bad settings, and backends that fail or return garbage: typed errors and 500s, never a crash or a hang.
@Suite struct ServerFailureTests {
    @Test(arguments: [
        (MoEServerConfiguration(host: ""), "--host must not be empty"),
        (MoEServerConfiguration(port: 70_000), "--port 70000 must be in 0...65535"),
        (MoEServerConfiguration(maxBatchTokens: 8, maxRequestTokens: 0), "--max-request-tokens 0 must be ≥ 1"),
        (MoEServerConfiguration(maxBatchTokens: 8, maxRequestTokens: 16), "--max-batch-tokens 8 must be ≥ --max-request-tokens 16"),
        (MoEServerConfiguration(maxBodyBytes: 10), "--max-body-bytes 10 must be ≥ 64"),
        (MoEServerConfiguration(profileDirectory: ""), "the profile directory must not be empty"),
    ])
    func invalidConfigurationsAreRefusedByName(configuration: MoEServerConfiguration, expected: String) {
        #expect {
            try Fixture.server(configuration)
        } throws: { error in
            guard case .invalidArgument(let message) = error as? MoEError else { return false }
            return message.contains(expected)
        }
    }

    @Test func unknownLogLevelIsRefused() {
        #expect {
            try ServerLogging.bootstrap(level: "loud")
        } throws: { error in
            "\(error)".contains("unknown log level 'loud'; use one of trace, debug, info")
        }
    }

    /// A backend whose forward throws: every request of that pass gets 500, the error is counted, and the server
    /// keeps serving.
    @Test func aFailingForwardIs500AndCounted() async throws {
        let backend = ScriptedBackend(config: Fixture.config) { _, _ in throw MoEError.io("device lost") }
        let server = try Fixture.server(backend: backend)
        try await Fixture.withRouter(server) { client in
            for _ in 0..<2 {
                let response = try await client.execute(
                    uri: "/v1/moe/forward", method: .post, body: Fixture.jsonBody(Fixture.input(tokens: 1, seed: 1)))
                #expect(response.status == .internalServerError)
                #expect(Fixture.errorMessage(response).contains("device lost"))
            }
            #expect(try await client.execute(uri: "/health", method: .get).status == .ok)
        }
        let samples = try PrometheusText.parse(server.metrics.prometheusText())
        #expect(samples["moe_forward_errors_total"] == 2 && samples[#"moe_http_errors_total{status="500"}"#] == 2)
    }

    /// A backend that can no longer serve at all (an expert-parallel job lost a rank): 503 with the reason.
    @Test func anUnavailableBackendIs503WithTheReason() async throws {
        let backend = ScriptedBackend(config: Fixture.config) { _, _ in
            throw MoEError.backendUnavailable(backend: "cpu expert-parallel, 2 ranks", reason: "rank 1 (pid 42) died")
        }
        let server = try Fixture.server(backend: backend)
        try await Fixture.withRouter(server) { client in
            let response = try await client.execute(
                uri: "/v1/moe/forward", method: .post, body: Fixture.jsonBody(Fixture.input(tokens: 2, seed: 1)))
            #expect(response.status == .serviceUnavailable)
            #expect(Fixture.errorMessage(response).contains("can no longer serve: rank 1 (pid 42) died"))
        }
        let samples = try PrometheusText.parse(server.metrics.prometheusText())
        #expect(samples[#"moe_http_errors_total{status="503"}"#] == 1)
    }

    /// A backend that returns NaN: the server refuses to send it (500 naming the row), never `null`s or NaN text.
    @Test func aNonFiniteOutputIs500NamingTheRow() async throws {
        let backend = ScriptedBackend(config: Fixture.config) { input, tokens in
            var hidden = input
            hidden[Fixture.config.hidden * (tokens - 1) + 3] = .nan
            return MoEForwardResult(
                hidden: hidden, topkIds: [Int32](repeating: 0, count: tokens * 4), topkWeights: [Float](repeating: 0.25, count: tokens * 4))
        }
        try await Fixture.withRouter(try Fixture.server(backend: backend)) { client in
            let response = try await client.execute(
                uri: "/v1/moe/forward", method: .post, body: Fixture.jsonBody(Fixture.input(tokens: 3, seed: 1)))
            #expect(response.status == .internalServerError)
            #expect(Fixture.errorMessage(response).contains("non-finite output at row 2"))
        }
    }
}

/// A backend whose forward is a closure (failure injection).
final class ScriptedBackend: MoEBackend, @unchecked Sendable {
    let name = "scripted"
    let detail = "test backend"
    let config: MoEConfig
    let body: ([Float], Int) throws -> MoEForwardResult

    init(config: MoEConfig, body: @escaping ([Float], Int) throws -> MoEForwardResult) {
        self.config = config
        self.body = body
    }

    func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        try body(input, tokens)
    }
}

/// The tokens/s gauge against a clock the test moves.
@Suite struct ThroughputWindowTests {
    final class ManualClock: @unchecked Sendable {
        private let lock = NSLock()
        private var seconds = 100.0
        var now: Double {
            lock.lock()
            defer { lock.unlock() }
            return seconds
        }
        func advance(to offset: Double) {
            lock.lock()
            seconds = 100 + offset
            lock.unlock()
        }
    }

    static func tokensPerSecond(_ metrics: ServerMetrics) throws -> Double? {
        try PrometheusText.parse(metrics.prometheusText())["moe_tokens_per_second"]
    }

    @Test func tokensPerSecondCoversTheLastTenSeconds() throws {
        let clock = ManualClock()
        let metrics = ServerMetrics(clock: { clock.now })
        clock.advance(to: 2)
        metrics.batchFinished(requests: 3, tokens: 30, seconds: 0.1, records: [])
        clock.advance(to: 6)
        // Younger than the window: 30 tokens over the 6 s since start.
        #expect(try Self.tokensPerSecond(metrics) == 5)
        clock.advance(to: 11)
        metrics.batchFinished(requests: 1, tokens: 20, seconds: 0.1, records: [])
        clock.advance(to: 12)
        // Window [2, 12]: both batches, 50 tokens / 10 s.
        #expect(try Self.tokensPerSecond(metrics) == 5)
        clock.advance(to: 15)
        // Window [5, 15]: the first batch (t = 2) has left it.
        #expect(try Self.tokensPerSecond(metrics) == 2)
        clock.advance(to: 30)
        #expect(try Self.tokensPerSecond(metrics) == 0)
        #expect(metrics.totalTokens == 50 && metrics.totalBatches == 2 && metrics.totalBatchedRequests == 4)
    }
}
