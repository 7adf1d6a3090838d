import Foundation
import Hummingbird
import HummingbirdTesting
import MoECPU
import MoECheckpoint
import MoECore
import SafeTensors
import Testing

@testable import MoEServer

/// Safetensors request bodies: the files `moe forward` reads, posted as application/octet-stream.
@Suite struct ServerSafeTensorsTests {
    static let octetStream: HTTPFields = [.contentType: "application/octet-stream"]

    /// The bytes of an input file written by the project's own writer (`HiddenStatesFile.writeInput`).
    static func inputFileBytes(_ x: [Float], tokens: Int, dtype: SafeTensorsDType) throws -> ByteBuffer {
        let path = NSTemporaryDirectory() + "moe-serve-input-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try HiddenStatesFile.writeInput(path, values: x, tokens: tokens, hidden: Fixture.config.hidden, dtype: dtype)
        return ByteBuffer(bytes: try FileSystem.readFile(path))
    }

    /// A hand-made safetensors body: u64 LE header length, the JSON header, the data.
    static func body(header: String, data: [UInt8]) -> ByteBuffer {
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
        bytes += Array(header.utf8) + data
        return ByteBuffer(bytes: bytes)
    }

    static func f32Bytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }
    }

    static func tensorHeader(dtype: String = "F32", shape: [Int], bytes: Int, name: String = "hidden_states", metadata: String? = nil) -> String {
        let entry = #""\#(name)":{"dtype":"\#(dtype)","shape":[\#(shape.map(String.init).joined(separator: ","))],"data_offsets":[0,\#(bytes)]}"#
        return "{" + (metadata.map { #""__metadata__":\#($0),"# } ?? "") + entry + "}"
    }

    @Test(arguments: [SafeTensorsDType.f32, .bf16], [nil, RoutingMode.softmaxFirst])
    func writerFilesAreServedBitForBit(dtype: SafeTensorsDType, routing: RoutingMode?) async throws {
        let x = Fixture.input(tokens: 5, seed: 31)
        let body = try Self.inputFileBytes(x, tokens: 5, dtype: dtype)
        let direct = try ServerRouterTests.direct.forward(x, tokens: 5, routing: routing ?? .renormalize, profiler: nil)
        try await Fixture.withRouter(try Fixture.server()) { client in
            let uri = "/v1/moe/forward" + (routing.map { "?routing=\($0.rawValue)" } ?? "")
            let response = try await client.execute(uri: uri, method: .post, headers: Self.octetStream, body: body)
            #expect(response.status == .ok, "\(Fixture.errorMessage(response))")
            #expect(try Fixture.ForwardOutput(String(buffer: response.body)).matchesBits(direct))
        }
    }

    @Test func routingFromMetadata() async throws {
        let x = Fixture.input(tokens: 2, seed: 8)
        let header = Self.tensorHeader(shape: [2, 128], bytes: 1024, metadata: #"{"routing":"softmax-first","format":"pt"}"#)
        let direct = try ServerRouterTests.direct.forward(x, tokens: 2, routing: .softmaxFirst, profiler: nil)
        try await Fixture.withRouter(try Fixture.server()) { client in
            let response = try await client.execute(
                uri: "/v1/moe/forward", method: .post, headers: Self.octetStream, body: Self.body(header: header, data: Self.f32Bytes(x)))
            #expect(response.status == .ok)
            #expect(try Fixture.ForwardOutput(String(buffer: response.body)).matchesBits(direct))
            let contradicted = try await client.execute(
                uri: "/v1/moe/forward?routing=renormalize", method: .post, headers: Self.octetStream,
                body: Self.body(header: header, data: Self.f32Bytes(x)))
            #expect(contradicted.status == .badRequest)
            #expect(Fixture.errorMessage(contradicted).contains("contradicts"))
        }
    }

    @Test func refusals() async throws {
        let H = 128
        let row = [Float](repeating: 0.5, count: H)
        var nanRows = row + row
        nanRows[H + 7] = .nan
        let cases: [(String, ByteBuffer, HTTPResponse.Status, String)] = [
            ("", ByteBuffer(bytes: [1, 2, 3]), .badRequest, "too small for a safetensors file"),
            ("", Self.body(header: "{}", data: []).droppingLast(1), .badRequest, "declares a 2-byte safetensors header"),
            ("", Self.body(header: "{\"hidden_states\": ", data: []), .badRequest, "the request body"),
            ("", Self.body(header: Self.tensorHeader(shape: [1, H], bytes: 4 * H, name: "x"), data: Self.f32Bytes(row)), .badRequest,
             "holds tensor 'x'; it must hold only hidden_states"),
            ("", Self.body(header: "{}", data: []), .badRequest, "holds no hidden_states tensor"),
            ("", Self.body(header: Self.tensorHeader(shape: [1, H], bytes: 4 * H, metadata: #"{"routing":"top1"}"#), data: Self.f32Bytes(row)),
             .badRequest, "unknown routing 'top1' in __metadata__"),
            ("?routing=top1", Self.body(header: Self.tensorHeader(shape: [1, H], bytes: 4 * H), data: Self.f32Bytes(row)),
             .badRequest, "unknown routing 'top1'"),
            ("", Self.body(header: Self.tensorHeader(dtype: "F16", shape: [1, H], bytes: 2 * H), data: [UInt8](repeating: 0, count: 2 * H)),
             .unprocessableContent, "hidden_states is F16; send F32 or BF16"),
            ("", Self.body(header: Self.tensorHeader(shape: [2, 64], bytes: 4 * H), data: Self.f32Bytes(row)),
             .unprocessableContent, "has shape [2, 64]; it must be [T, 128]"),
            ("", Self.body(header: Self.tensorHeader(shape: [1, 1, H], bytes: 4 * H), data: Self.f32Bytes(row)),
             .unprocessableContent, "has shape [1, 1, 128]"),
            ("", Self.body(header: Self.tensorHeader(shape: [0, H], bytes: 0), data: []), .unprocessableContent, "holds no rows"),
            ("", Self.body(header: Self.tensorHeader(shape: [5, H], bytes: 20 * H), data: Self.f32Bytes(row + row + row + row + row)),
             .unprocessableContent, "holds 5 rows (tokens); this server accepts at most 4"),
            ("", Self.body(header: Self.tensorHeader(shape: [2, H], bytes: 8 * H), data: Self.f32Bytes(nanRows)),
             .unprocessableContent, "row 1 holds a non-finite value (nan at column 7)"),
        ]
        let server = try Fixture.server(MoEServerConfiguration(port: 0, maxBatchTokens: 4, maxRequestTokens: 4))
        try await Fixture.withRouter(server) { client in
            for (query, body, status, expected) in cases {
                let response = try await client.execute(
                    uri: "/v1/moe/forward" + query, method: .post, headers: Self.octetStream, body: body)
                #expect(response.status == status, "\(expected): \(Fixture.errorMessage(response))")
                #expect(Fixture.errorMessage(response).contains(expected), "\(Fixture.errorMessage(response))")
            }
        }
        #expect(server.metrics.totalBatches == 0)
    }

    /// The issue's acceptance check: clients posting `moe forward` input files to a server over loopback get
    /// exactly what `moe forward` (ForwardJob, the command's implementation) writes for the same model directory.
    @Test func concurrentClientsMatchMoeForwardOfTheirOwnInput() async throws {
        let directory = NSTemporaryDirectory() + "moe-serve-model-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try ModelWriter.writeSynthetic(config: Fixture.config, seed: 21, to: directory + "/model", shards: 2)
        let weights = try ModelDirectory(path: directory + "/model").layer(1)
        let server = try Fixture.server(MoEServerConfiguration(port: 0), backend: CPUBackend(weights: weights))

        // Each client's input file and what `moe forward --layer 1` writes for it.
        let clients = (0..<6).map { i in (tokens: 1 + 2 * i, routing: i % 2 == 0 ? RoutingMode.renormalize : .softmaxFirst) }
        var expected: [(input: ByteBuffer, hidden: [Float], ids: [Int32], weights: [Float])] = []
        for (i, c) in clients.enumerated() {
            let input = directory + "/in\(i).safetensors", output = directory + "/out\(i).safetensors"
            try HiddenStatesFile.writeInput(
                input, values: Fixture.input(tokens: c.tokens, seed: UInt64(90 + i)), tokens: c.tokens, hidden: 128)
            _ = try ForwardJob.run(
                ForwardJob.Request(model: directory + "/model", layer: 1, input: input, output: output, routing: c.routing)
            ) { CPUBackend(weights: $0) }
            let file = try SafeTensorsFile(path: output)
            expected.append((
                ByteBuffer(bytes: try FileSystem.readFile(input)), try file.floats("hidden_states"), try file.int32s("topk_ids"),
                try file.floats("topk_weights")))
        }
        let cases = expected
        try await ServerLiveTests.withLiveServer(server) { port, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, c) in clients.enumerated() {
                    group.addTask {
                        try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: Fixture.client) { client in
                            let response = try await client.post(
                                "/v1/moe/forward?routing=\(c.routing.rawValue)", headers: Self.octetStream, body: cases[i].input)
                            #expect(response.status == .ok)
                            let output = try Fixture.ForwardOutput(String(buffer: try #require(response.body)))
                            #expect(output.rows == c.tokens)
                            #expect(output.hidden.map(\.bitPattern) == cases[i].hidden.map(\.bitPattern), "client \(i)")
                            #expect(output.topkIds == cases[i].ids && output.topkWeights.map(\.bitPattern) == cases[i].weights.map(\.bitPattern))
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}

extension ByteBuffer {
    func droppingLast(_ n: Int) -> ByteBuffer { getSlice(at: readerIndex, length: readableBytes - n)! }
}
