import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import MoECPU
import MoECore
import ServiceLifecycle
import Testing

@testable import MoEServer

/// Over real loopback HTTP (127.0.0.1 only, ephemeral ports), plus the batcher's merging rules.
@Suite struct ServerLiveTests {
    static let direct = CPUBackend(weights: Fixture.weights)

    /// Runs the server on 127.0.0.1:0 inside a service group, hands `body` the bound port, then shuts it down
    /// gracefully and waits for it to finish.
    static func withLiveServer(_ server: MoEServer, _ body: @Sendable (Int, ServiceGroup) async throws -> Void) async throws {
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let group = ServiceGroup(configuration: .init(
            services: [server.makeApplication(onServerRunning: { portSink.yield($0) })], logger: Fixture.quiet))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            let port = try #require(await iterator.next())
            do {
                try await body(port, group)
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// Whether a new connection to the port gets an answer from GET /health.
    static func answersHealth(port: Int) async -> Bool {
        do {
            return try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: Fixture.client) { client in
                try await client.get("/health").status == .ok
            }
        } catch {
            return false
        }
    }

    static func post(_ client: TestClient, _ x: [Float], routing: RoutingMode) async throws -> TestClient.Response {
        try await client.post(
            "/v1/moe/forward", headers: Fixture.jsonHeaders, body: Fixture.jsonBody(x, routing: routing.rawValue))
    }

    /// Eight clients send at once while an earlier pass holds the engine: their requests share passes (one per
    /// routing mode), and every client gets exactly the rows of a direct forward of its own input.
    @Test func concurrentClientsAreBatchedAndEachGetsItsOwnRows() async throws {
        let backend = GatedBackend(weights: Fixture.weights)
        let server = try Fixture.server(MoEServerConfiguration(port: 0), backend: backend)
        try await Self.withLiveServer(server) { port, _ in
            try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: Fixture.client) { first in
                let x0 = Fixture.input(tokens: 2, seed: 100)
                async let held = Self.post(first, x0, routing: .renormalize)
                #expect(await eventually { backend.calls.count == 1 })

                let inputs = (0..<8).map { i in
                    (x: Fixture.input(tokens: i + 1, seed: UInt64(i)), routing: i % 2 == 0 ? RoutingMode.renormalize : .softmaxFirst)
                }
                try await withThrowingTaskGroup(of: (Int, TestClient.Response).self) { clients in
                    for (i, input) in inputs.enumerated() {
                        clients.addTask {
                            try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: Fixture.client) { client in
                                (i, try await Self.post(client, input.x, routing: input.routing))
                            }
                        }
                    }
                    #expect(await eventually { await server.batcher.waitingCount == 8 })
                    backend.open()
                    var answered = 0
                    for try await (i, response) in clients {
                        #expect(response.status == .ok)
                        let output = try Fixture.ForwardOutput(String(buffer: try #require(response.body)))
                        let direct = try Self.direct.forward(
                            inputs[i].x, tokens: i + 1, routing: inputs[i].routing, profiler: nil)
                        #expect(output.rows == i + 1)
                        #expect(output.matchesBits(direct), "client \(i) did not get its own rows")
                        answered += 1
                    }
                    #expect(answered == 8)
                }
                let firstOutput = try Fixture.ForwardOutput(String(buffer: try #require(try await held.body)))
                #expect(firstOutput.matchesBits(try Self.direct.forward(x0, tokens: 2, routing: .renormalize, profiler: nil)))
            }
        }
        // The held pass, then one pass per routing mode (in whichever order the clients arrived):
        // 1+3+5+7 = 16 renormalize tokens and 2+4+6+8 = 20 softmax-first tokens.
        let calls = backend.calls
        #expect(calls.count == 3)
        #expect(calls.first.map { $0.tokens == 2 && $0.routing == .renormalize } == true)
        #expect(Set(calls.dropFirst().map { "\($0.tokens) \($0.routing.rawValue)" }) == ["16 renormalize", "20 softmax-first"])
        #expect(server.metrics.totalBatches == 3 && server.metrics.totalBatchedRequests == 9)
    }

    /// The token budget splits a queue in arrival order; a request that does not fit starts the next batch.
    @Test func batchesStopAtTheTokenBudget() async throws {
        let backend = GatedBackend(weights: Fixture.weights)
        let server = try Fixture.server(MoEServerConfiguration(port: 0, maxBatchTokens: 6, maxRequestTokens: 6), backend: backend)
        let sizes = [3, 2, 4, 1, 6]
        try await withThrowingTaskGroup(of: (Int, MoEForwardResult).self) { tasks in
            tasks.addTask {
                (-1, try await server.batcher.submit(ForwardInput(values: Fixture.input(tokens: 1, seed: 50), tokens: 1, routing: .renormalize)))
            }
            #expect(await eventually { backend.calls.count == 1 })
            for (i, t) in sizes.enumerated() {
                // Submit one at a time so the arrival order is known.
                tasks.addTask {
                    (i, try await server.batcher.submit(ForwardInput(values: Fixture.input(tokens: t, seed: UInt64(60 + i)), tokens: t, routing: .renormalize)))
                }
                #expect(await eventually { await server.batcher.waitingCount == i + 1 })
            }
            backend.open()
            for try await (i, result) in tasks where i >= 0 {
                let direct = try Self.direct.forward(Fixture.input(tokens: sizes[i], seed: UInt64(60 + i)), tokens: sizes[i], routing: .renormalize, profiler: nil)
                #expect(result.hidden.map(\.bitPattern) == direct.hidden.map(\.bitPattern))
            }
        }
        // [3, 2] fits 6 and 4 does not; then [4, 1]; then [6].
        #expect(backend.calls.map(\.tokens) == [1, 5, 5, 6])
    }

    /// SIGTERM (here: the service group's graceful shutdown, which SIGTERM triggers) lets a request that is in
    /// the middle of its forward pass finish with its full answer before the server exits.
    @Test func gracefulShutdownFinishesInFlightRequests() async throws {
        let backend = GatedBackend(weights: Fixture.weights)
        let server = try Fixture.server(MoEServerConfiguration(port: 0), backend: backend)
        let x = Fixture.input(tokens: 3, seed: 77)
        try await Self.withLiveServer(server) { port, group in
            try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: Fixture.client) { client in
                let response = Task { try await Self.post(client, x, routing: .renormalize) }
                #expect(await eventually { backend.calls.count == 1 })
                await group.triggerGracefulShutdown()
                // The listener closes (new connections fail) while the request is still held…
                let refused = await eventually(60) { await !Self.answersHealth(port: port) }
                #expect(refused, "the server still accepts connections after the shutdown began")
                #expect(backend.calls.count == 1)
                // …and the request in flight completes.
                backend.open()
                let answer = try await response.value
                #expect(answer.status == .ok)
                let output = try Fixture.ForwardOutput(String(buffer: try #require(answer.body)))
                #expect(output.matchesBits(try Self.direct.forward(x, tokens: 3, routing: .renormalize, profiler: nil)))
            }
        }
    }

    /// The real signal: `run()` installs SIGTERM handling; a SIGTERM sent to this process while a request is held
    /// stops the server only after that request is answered.
    @Test func sigtermStopsTheServerAfterInFlightRequests() async throws {
        let backend = GatedBackend(weights: Fixture.weights)
        let server = try Fixture.server(MoEServerConfiguration(port: 0), backend: backend)
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await server.run(onServerRunning: { portSink.yield($0) }) }
            var iterator = ports.makeAsyncIterator()
            let port = try #require(await iterator.next())
            try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: Fixture.client) { client in
                async let response = client.get("/health")
                _ = try await response
                async let forward = Self.post(client, Fixture.input(tokens: 1, seed: 5), routing: .renormalize)
                #expect(await eventually { backend.calls.count == 1 })
                kill(getpid(), SIGTERM)
                try await Task.sleep(for: .milliseconds(200))
                backend.open()
                #expect(try await forward.status == .ok)
            }
            try await tasks.waitForAll()  // run() returned: the server stopped
        }
    }
}
