import Foundation
import Hummingbird
import HummingbirdTesting
import MoECPU
import MoECore
import Testing

@testable import MoEServer

/// A bounded soak over loopback: 100 concurrent clients, each on its own connection, 5 requests each.
@Suite struct ServerSoakTests {
    static let clients = 100
    static let requestsPerClient = 5

    /// Client c's request r: 1–4 tokens, both routing modes.
    static func request(client c: Int, round r: Int) -> (x: [Float], tokens: Int, routing: RoutingMode) {
        let tokens = 1 + (c * 3 + r) % 4
        return (Fixture.input(tokens: tokens, seed: UInt64(c * 100 + r)), tokens, (c + r) % 3 == 0 ? .softmaxFirst : .renormalize)
    }

    /// Every client sends its requests back to back; returns how many answers matched a direct forward bit for bit.
    static func round(port: Int, rounds: Range<Int>, expected: [[MoEForwardResult]]) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for c in 0..<clients {
                group.addTask {
                    try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: Fixture.client) { client in
                        var matched = 0
                        for r in rounds {
                            let q = request(client: c, round: r)
                            let response = try await client.post(
                                "/v1/moe/forward", headers: Fixture.jsonHeaders,
                                body: Fixture.jsonBody(q.x, routing: q.routing.rawValue))
                            guard response.status == .ok, let body = response.body else { continue }
                            if try Fixture.ForwardOutput(String(buffer: body)).matchesBits(expected[c][r]) { matched += 1 }
                        }
                        return matched
                    }
                }
            }
            return try await group.reduce(0, +)
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func hundredConcurrentClientsWithoutErrorsLossOrGrowth() async throws {
        let expected = try (0..<Self.clients).map { c in
            try (0..<(Self.requestsPerClient + 1)).map { r in
                let q = Self.request(client: c, round: r)
                return try ServerLiveTests.direct.forward(q.x, tokens: q.tokens, routing: q.routing, profiler: nil)
            }
        }
        let server = try Fixture.server(MoEServerConfiguration(port: 0, maxBatchTokens: 128, maxRequestTokens: 8))
        try await ServerLiveTests.withLiveServer(server) { port, _ in
            // Warm-up: one request per client, so buffers, caches and connections exist before the baseline.
            #expect(try await Self.round(port: port, rounds: Self.requestsPerClient..<(Self.requestsPerClient + 1), expected: expected) == Self.clients)
            let baseline = Fixture.residentBytes()
            let start = ContinuousClock.now
            let matched = try await Self.round(port: port, rounds: 0..<Self.requestsPerClient, expected: expected)
            let elapsed = ContinuousClock.now - start
            #expect(matched == Self.clients * Self.requestsPerClient, "lost or wrong answers")
            #expect(elapsed < .seconds(60), "soak took \(elapsed)")
            // Tests share this process, so allow other tests' transient memory to be returned before judging.
            var growth = Fixture.residentBytes() - baseline
            for _ in 0..<10 where growth > 64 << 20 {
                try await Task.sleep(for: .seconds(2))
                growth = min(growth, Fixture.residentBytes() - baseline)
            }
            #expect(growth < 64 << 20, "resident memory grew by \(growth >> 20) MiB over the soak")
            print("soak: \(Self.clients) clients × \(Self.requestsPerClient) requests in \(elapsed), RSS growth \(growth >> 10) KiB, \(server.metrics.totalBatches) passes")
        }
        let total = UInt64(Self.clients * (Self.requestsPerClient + 1))
        #expect(server.metrics.requestCount(route: "/v1/moe/forward", status: 200) == total)
        #expect(server.metrics.totalBatchedRequests == total)
        let errors = try PrometheusText.parse(server.metrics.prometheusText()).filter { $0.key.hasPrefix("moe_http_errors_total") }
        #expect(errors.isEmpty, "\(errors)")
    }
}
