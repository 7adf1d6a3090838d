import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MoECPU
import MoECore
import Testing

@testable import MoEServer

/// Every endpoint and every refusal, through the router without a socket.
@Suite struct ServerRouterTests {
    static let direct = CPUBackend(weights: Fixture.weights)

    @Test func healthDescribesTheLoadedLayer() async throws {
        try await Fixture.withRouter(try Fixture.server()) { client in
            let response = try await client.execute(uri: "/health", method: .get)
            #expect(response.status == .ok)
            let object = try #require(JSONSerialization.jsonObject(with: Data(String(buffer: response.body).utf8)) as? [String: Any])
            #expect(object["status"] as? String == "ok" && object["backend"] as? String == "cpu")
            let config = try #require(object["config"] as? [String: Any])
            #expect(config["hidden"] as? Int == 128 && config["experts"] as? Int == 8 && config["top_k"] as? Int == 4)
            #expect((object["profiling"] as? [String: Any])?["enabled"] as? Bool == false)
            #expect(response.headers[HTTPField.Name("x-request-id")!]?.isEmpty == false)
        }
    }

    @Test(arguments: [(1, nil), (7, "renormalize"), (3, "softmax-first")] as [(Int, String?)])
    func forwardMatchesADirectForwardBitForBit(tokens: Int, routing: String?) async throws {
        let x = Fixture.input(tokens: tokens, seed: UInt64(tokens))
        let mode = routing.flatMap(RoutingMode.init(rawValue:)) ?? .renormalize
        let direct = try Self.direct.forward(x, tokens: tokens, routing: mode, profiler: nil)
        try await Fixture.withRouter(try Fixture.server()) { client in
            let response = try await client.execute(
                uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders, body: Fixture.jsonBody(x, routing: routing))
            #expect(response.status == .ok, "\(String(buffer: response.body))")
            let output = try Fixture.ForwardOutput(String(buffer: response.body))
            #expect(output.rows == tokens)
            #expect(output.matchesBits(direct))
        }
    }

    @Test func forwardWithoutContentTypeIsReadAsJSON() async throws {
        let x = Fixture.input(tokens: 2, seed: 9)
        try await Fixture.withRouter(try Fixture.server()) { client in
            let response = try await client.execute(uri: "/v1/moe/forward", method: .post, body: Fixture.jsonBody(x))
            #expect(response.status == .ok)
        }
    }

    /// Malformed requests: 400 naming the problem.
    @Test(arguments: [
        ("{\"hidden_states\": [[1, 2]", "not valid JSON"),
        ("[[1, 2, 3]]", "must be a JSON object"),
        ("{\"hidden_states\": [[1]], \"temperature\": 1}", "unknown key 'temperature'; accepted keys: hidden_states, routing"),
        ("{\"routing\": \"renormalize\"}", "missing 'hidden_states'"),
        ("{\"hidden_states\": 3}", "'hidden_states' must be an array of rows"),
        ("{\"hidden_states\": [[1]], \"routing\": 2}", "'routing' must be a string"),
        ("{\"hidden_states\": [[1]], \"routing\": \"greedy\"}", "unknown routing 'greedy'; use renormalize or softmax-first"),
    ])
    func malformedForwardIs400(body: String, expected: String) async throws {
        try await Fixture.withRouter(try Fixture.server()) { client in
            let response = try await client.execute(
                uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders, body: ByteBuffer(string: body))
            #expect(response.status == .badRequest)
            #expect(Fixture.errorMessage(response).contains(expected), "\(Fixture.errorMessage(response))")
        }
    }

    /// Well-formed bodies with bad rows: 422 naming the first bad row.
    @Test func badRowsAre422NamingTheFirstBadRow() async throws {
        let H = Fixture.config.hidden
        func row(_ values: [String]) -> String { "[" + values.joined(separator: ",") + "]" }
        let good = row([String](repeating: "0.5", count: H))
        var notNumber = [String](repeating: "1", count: H)
        notNumber[3] = "\"x\""
        var overflow = [String](repeating: "1", count: H)
        overflow[5] = "1e39"
        var overflow64 = [String](repeating: "1", count: H)
        overflow64[9] = "-1e400"
        var beyondBF16 = [String](repeating: "1", count: H)
        beyondBF16[2] = "3.4e38"  // a float32, but +Inf once rounded to bf16
        let cases: [(String, String)] = [
            ("[\(good), \(row([String](repeating: "1", count: H - 1)))]", "row 1 of 'hidden_states' has \(H - 1) values; every row must have H = \(H)"),
            ("[\(row([String](repeating: "1", count: 5)))]", "row 0 of 'hidden_states' has 5 values"),
            ("[\(good), \(good), \(row(notNumber))]", "row 2, column 3 of 'hidden_states' is not a number"),
            ("[\(good), \(row(overflow))]", "row 1 holds a non-finite value at column 5"),
            ("[\(row(overflow64)), \(good)]", "row 0 holds a non-finite value at column 9"),
            ("[\(good), \(good), \(row(beyondBF16))]", "row 2 holds a non-finite value (3.4e+38, beyond bf16's largest value"),
            ("[\(good), 7]", "row 1 of 'hidden_states' is not an array of numbers"),
            ("[]", "holds no rows"),
            ("[" + [String](repeating: good, count: 5).joined(separator: ",") + "]", "holds 5 rows (tokens); this server accepts at most 4"),
        ]
        let server = try Fixture.server(MoEServerConfiguration(port: 0, maxBatchTokens: 8, maxRequestTokens: 4))
        try await Fixture.withRouter(server) { client in
            for (rows, expected) in cases {
                let response = try await client.execute(
                    uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders,
                    body: ByteBuffer(string: #"{"hidden_states": "# + rows + "}"))
                #expect(response.status == .unprocessableContent, "\(expected)")
                #expect(Fixture.errorMessage(response).contains(expected), "\(Fixture.errorMessage(response))")
            }
        }
        #expect(server.metrics.requestCount(route: "/v1/moe/forward", status: 422) == UInt64(cases.count))
        #expect(server.metrics.totalBatches == 0)
    }

    @Test func bodiesOverTheLimitAre413() async throws {
        let server = try Fixture.server(MoEServerConfiguration(port: 0, maxBodyBytes: 1_000))
        let big = Fixture.jsonBody(Fixture.input(tokens: 2, seed: 1))
        #expect(big.readableBytes > 1_000)
        try await Fixture.withRouter(server) { client in
            // Refused from Content-Length before reading…
            var headers = Fixture.jsonHeaders
            headers[.contentLength] = String(big.readableBytes)
            let declared = try await client.execute(uri: "/v1/moe/forward", method: .post, headers: headers, body: big)
            #expect(declared.status == .contentTooLarge)
            #expect(Fixture.errorMessage(declared).contains("larger than the limit of 1000 bytes"))
            // …and while reading when no length is declared.
            let streamed = try await client.execute(uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders, body: big)
            #expect(streamed.status == .contentTooLarge)
            #expect(Fixture.errorMessage(streamed).contains("--max-body-bytes"))
        }
    }

    @Test func otherContentTypesAre415() async throws {
        try await Fixture.withRouter(try Fixture.server()) { client in
            let response = try await client.execute(
                uri: "/v1/moe/forward", method: .post, headers: [.contentType: "text/csv"], body: ByteBuffer(string: "1,2"))
            #expect(response.status == .unsupportedMediaType)
            #expect(Fixture.errorMessage(response).contains("application/octet-stream"))
        }
    }

    @Test func unknownPathsAre404AndCounted() async throws {
        let server = try Fixture.server()
        try await Fixture.withRouter(server) { client in
            let response = try await client.execute(uri: "/v2/nothing", method: .get)
            #expect(response.status == .notFound)
            #expect(response.headers[HTTPField.Name("x-request-id")!] != nil)
        }
        #expect(server.metrics.requestCount(route: "other", status: 404) == 1, "\(server.metrics.prometheusText())")
    }

    @Test func metricsArePrometheusTextWithRequestsErrorsLatencyThroughputAndStages() async throws {
        try await Fixture.withRouter(try Fixture.server()) { client in
            _ = try await client.execute(
                uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders,
                body: Fixture.jsonBody(Fixture.input(tokens: 3, seed: 5)))
            _ = try await client.execute(
                uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders, body: ByteBuffer(string: "{}"))
            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
            let text = String(buffer: response.body)
            let samples = try PrometheusText.parse(text)
            #expect(samples[#"moe_http_requests_total{route="/v1/moe/forward",status="200"}"#] == 1)
            #expect(samples[#"moe_http_requests_total{route="/v1/moe/forward",status="400"}"#] == 1)
            #expect(samples[#"moe_http_errors_total{status="400"}"#] == 1)
            #expect(samples[#"moe_http_request_duration_seconds_count{route="/v1/moe/forward"}"#] == 2)
            #expect(samples[#"moe_http_request_duration_seconds_bucket{route="/v1/moe/forward",le="+Inf"}"#] == 2)
            #expect(samples["moe_forward_tokens_total"] == 3 && samples["moe_forward_batches_total"] == 1)
            // tokens/s covers the last 10 s only (its arithmetic is tested with a manual clock below).
            #expect(samples["moe_tokens_per_second"] != nil)
            for stage in try Fixture.cpuStages() {
                #expect((samples[#"moe_stage_seconds_total{stage="\#(stage)"}"#] ?? 0) > 0, "\(stage)")
                #expect(samples[#"moe_stage_calls_total{stage="\#(stage)"}"#] == 1, "\(stage)")
            }
            // Histogram buckets are cumulative.
            let buckets = ServerMetrics.latencyBuckets.map {
                samples[#"moe_http_request_duration_seconds_bucket{route="/v1/moe/forward",le="\#(ServerMetrics.number($0))"}"#] ?? -1
            }
            #expect(zip(buckets, buckets.dropFirst()).allSatisfy { $0 <= $1 } && buckets.allSatisfy { $0 >= 0 })
        }
    }

    // MARK: profiling control

    @Test func profilingEndpointsAre404WhenDisabled() async throws {
        try await Fixture.withRouter(try Fixture.server()) { client in
            for path in ["/start_profile", "/stop_profile"] {
                let response = try await client.execute(uri: path, method: .post)
                #expect(response.status == .notFound)
                #expect(Fixture.errorMessage(response).contains("--enable-profiling"))
            }
        }
    }

    @Test(arguments: [
        ("{\"name\": \"a\"", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("\"trace\"", "must be a JSON object"),
        ("null", "must be a JSON object"),
        ("{\"nmae\": \"a\"}", "unknown key 'nmae'"),
        ("{\"name\": 5}", "'name' must be a string"),
        ("{\"name\": \"\"}", "'name' must not be empty"),
        ("{\"output_dir\": true}", "'output_dir' must be a string"),
        ("{\"with_flops\": \"yes\"}", "'with_flops' must be a boolean"),
        ("{\"trace\": 1}", "'trace' must be a boolean"),
        ("{\"stages\": \"gemm1\"}", "'stages' must be a list of stage names"),
        ("{\"stages\": [\"gemm1\", 2]}", "'stages' must be a list of stage names"),
        ("{\"stages\": []}", "'stages' must list at least one stage"),
        ("{\"stages\": [\"gemm3\"]}", "unknown stage 'gemm3' in 'stages'; stages are router, topk, plan, dispatch, gemm1, gemm2, combine, reduce"),
    ])
    func badStartProfileBodiesAre400(body: String, expected: String) async throws {
        let server = try Fixture.server(MoEServerConfiguration(port: 0, enableProfiling: true, profileDirectory: Self.temporaryDirectory()))
        try await Fixture.withRouter(server) { client in
            let response = try await client.execute(
                uri: "/start_profile", method: .post, headers: Fixture.jsonHeaders, body: ByteBuffer(string: body))
            #expect(response.status == .badRequest)
            let message = Fixture.errorMessage(response)
            #expect(message.contains(expected), "\(message)")
            if !expected.hasPrefix("unknown stage") {
                #expect(message.contains("accepted keys: name (string), output_dir (string), with_flops (bool), trace (bool), stages"))
            }
            // Nothing was started.
            #expect(try await client.execute(uri: "/stop_profile", method: .post).status == .conflict)
        }
    }

    @Test func startTwiceIs409AndStopWithoutStartIs409() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try Fixture.server(MoEServerConfiguration(port: 0, enableProfiling: true, profileDirectory: directory))
        try await Fixture.withRouter(server) { client in
            let early = try await client.execute(uri: "/stop_profile", method: .post)
            #expect(early.status == .conflict && Fixture.errorMessage(early).contains("no profile is running"))
            // No body and an empty body both mean defaults.
            #expect(try await client.execute(uri: "/start_profile", method: .post).status == .ok)
            let again = try await client.execute(uri: "/start_profile", method: .post, body: ByteBuffer(string: ""))
            #expect(again.status == .conflict && Fixture.errorMessage(again).contains("already running"))
            #expect(try await client.execute(uri: "/stop_profile", method: .post).status == .ok)
            #expect(try await client.execute(uri: "/stop_profile", method: .post).status == .conflict)
            #expect(try await client.execute(uri: "/start_profile", method: .post, body: ByteBuffer(string: " \n")).status == .ok)
            #expect(try await client.execute(uri: "/stop_profile", method: .post).status == .ok)
        }
    }

    @Test func aProfileCoversTheForwardsBetweenStartAndStop() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ceilings = HardwareCeilings(bandwidthGBps: 10, bandwidthMethod: "test", peakTFLOPs: 0.1, peakMethod: "test")
        let server = try Fixture.server(
            MoEServerConfiguration(port: 0, enableProfiling: true, profileDirectory: "/nonexistent-unused"), ceilings: ceilings)
        try await Fixture.withRouter(server) { client in
            let forward = { @Sendable (tokens: Int) in
                let response = try await client.execute(
                    uri: "/v1/moe/forward", method: .post, headers: Fixture.jsonHeaders,
                    body: Fixture.jsonBody(Fixture.input(tokens: tokens, seed: 2)))
                #expect(response.status == .ok)
            }
            try await forward(1)  // before the profile: not in it
            let start = try await client.execute(
                uri: "/start_profile", method: .post, headers: Fixture.jsonHeaders,
                body: ByteBuffer(string: #"{"name": "run1", "output_dir": "\#(directory)/p", "stages": ["gemm1", "gemm2"], "with_flops": true, "trace": true}"#))
            #expect(start.status == .ok, "\(String(buffer: start.body))")
            try await forward(2)
            try await forward(3)
            let stop = try await client.execute(uri: "/stop_profile", method: .post)
            #expect(stop.status == .ok)
            let summary = try #require(JSONSerialization.jsonObject(with: Data(String(buffer: stop.body).utf8)) as? [String: Any])
            #expect(summary["name"] as? String == "run1")
            let stages = try #require(summary["stages"] as? [[String: Any]])
            #expect(stages.map { $0["stage"] as? String } == ["gemm1", "gemm2"])
            #expect(stages.allSatisfy { $0["calls"] as? Int == 2 })
            // GEMM 1 flops of the two passes: 2·rows·H·2I with rows = T·k = 8 and 12 (tiny: H = 128, I = 96).
            #expect(stages[0]["flops"] as? Double == Double(2 * (8 + 12) * 128 * 192))
            #expect(stages[0]["pct_of_peak_TFLOPs"] is Double)
            let files = try #require(summary["files"] as? [String: Any])
            #expect(files["trace"] as? String == "\(directory)/p/run1.trace.json")
            let trace = try ChromeTrace(json: String(contentsOfFile: "\(directory)/p/run1.trace.json", encoding: .utf8))
            #expect(trace.complete.map(\.name) == ["gemm1", "gemm2", "gemm1", "gemm2"])
            #expect(trace.complete[0].ts < trace.complete[2].ts)
            #expect(FileManager.default.fileExists(atPath: "\(directory)/p/run1.txt"))
            #expect(FileManager.default.fileExists(atPath: "\(directory)/p/run1.summary.json"))
        }
    }

    @Test func aProfileWithoutFlopsOrTraceWritesTimesOnly() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try Fixture.server(MoEServerConfiguration(port: 0, enableProfiling: true, profileDirectory: directory))
        try await Fixture.withRouter(server) { client in
            let start = try await client.execute(
                uri: "/start_profile", method: .post, body: ByteBuffer(string: #"{"name": "lite", "with_flops": false, "trace": false}"#))
            #expect(start.status == .ok)
            _ = try await client.execute(
                uri: "/v1/moe/forward", method: .post, body: Fixture.jsonBody(Fixture.input(tokens: 1, seed: 4)))
            let stop = try await client.execute(uri: "/stop_profile", method: .post)
            let summary = try #require(JSONSerialization.jsonObject(with: Data(String(buffer: stop.body).utf8)) as? [String: Any])
            let stages = try #require(summary["stages"] as? [[String: Any]])
            #expect(stages.map { $0["stage"] as? String } == (try Fixture.cpuStages()))
            #expect(stages.allSatisfy { $0["flops"] == nil && ($0["total_us"] as? Double ?? 0) > 0 })
            #expect((summary["files"] as? [String: Any])?["trace"] is NSNull)
            #expect(!FileManager.default.fileExists(atPath: "\(directory)/lite.trace.json"))
        }
    }

    @Test func anUnusableOutputDirectoryIs400() async throws {
        let file = NSTemporaryDirectory() + "moe-serve-file-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: file, contents: Data()))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let server = try Fixture.server(MoEServerConfiguration(port: 0, enableProfiling: true))
        try await Fixture.withRouter(server) { client in
            let response = try await client.execute(
                uri: "/start_profile", method: .post, body: ByteBuffer(string: #"{"output_dir": "\#(file)"}"#))
            #expect(response.status == .badRequest)
            #expect(Fixture.errorMessage(response).contains("cannot use output_dir"))
        }
    }

    static func temporaryDirectory() -> String { NSTemporaryDirectory() + "moe-serve-\(UUID().uuidString)" }
}

/// The Prometheus text exposition format, checked line by line: `# HELP`/`# TYPE` comments, then samples
/// `name{label="value",...} number`. Returns samples by their full series text.
enum PrometheusText {
    struct Invalid: Error, CustomStringConvertible { var description: String }

    static func parse(_ text: String) throws -> [String: Double] {
        var samples: [String: Double] = [:]
        var typed: Set<String> = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# HELP ") { continue }
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram"].contains(parts[3]) else {
                    throw Invalid(description: "bad TYPE line: \(line)")
                }
                typed.insert(String(parts[2]))
                continue
            }
            guard let space = line.lastIndex(of: " ") else { throw Invalid(description: "no value: \(line)") }
            let series = String(line[..<space])
            let valueText = line[line.index(after: space)...]
            guard let value = Double(valueText) ?? (valueText == "+Inf" ? .infinity : nil) else {
                throw Invalid(description: "bad value: \(line)")
            }
            let name = String(series.prefix { $0 != "{" })
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }) else {
                throw Invalid(description: "bad metric name: \(line)")
            }
            let family = ["_bucket", "_sum", "_count"].reduce(name) { n, suffix in
                n.hasSuffix(suffix) && typed.contains(String(n.dropLast(suffix.count))) ? String(n.dropLast(suffix.count)) : n
            }
            guard typed.contains(family) else { throw Invalid(description: "sample before its TYPE: \(line)") }
            if series.contains("{") {
                guard series.hasSuffix("}") else { throw Invalid(description: "unclosed labels: \(line)") }
            }
            samples[series] = value
        }
        return samples
    }
}
