import Dispatch
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import MoECPU
import MoECore
import Testing

@testable import MoEServer

/// Shared fixtures: the tiny synthetic layer, servers over it, request bodies and response parsing.
enum Fixture {
    static let config = MoEPreset.tiny.config
    static let weights = try! SyntheticModel.layer(config: MoEPreset.tiny.config, seed: 1)
    static let quiet = Logger(label: "moe.serve.test", factory: { _ in SwiftLogNoOpLogHandler() })

    static func server(
        _ configuration: MoEServerConfiguration = MoEServerConfiguration(port: 0), backend: (any MoEBackend)? = nil,
        ceilings: HardwareCeilings? = nil
    ) throws -> MoEServer {
        try MoEServer(backend: backend ?? CPUBackend(weights: weights), configuration: configuration, ceilings: ceilings, logger: quiet)
    }

    /// Runs `body` against the server's router, no socket involved.
    static func withRouter(_ server: MoEServer, _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await Application(router: server.buildRouter(), logger: quiet).test(.router, body)
    }

    /// The stages the CPU backend records, in order (from a profiled direct forward).
    static func cpuStages() throws -> [String] {
        let profiler = Profiler()
        _ = try CPUBackend(weights: weights).forward(input(tokens: 2, seed: 0), tokens: 2, routing: .renormalize, profiler: profiler)
        return ProfileReport(records: profiler.records).stages.map(\.stage)
    }

    /// Hidden states [T, H] as bf16-exact floats.
    static func input(tokens: Int, seed: UInt64) -> [Float] {
        SyntheticModel.hiddenStates(tokens: tokens, hidden: config.hidden, seed: seed)
    }

    /// `{"hidden_states": [[...], ...]}` (and `routing` when given) with each float's shortest text.
    static func jsonBody(_ x: [Float], width: Int = config.hidden, routing: String? = nil) -> ByteBuffer {
        var rows: [String] = []
        var i = 0
        while i < x.count {
            rows.append("[" + x[i..<min(i + width, x.count)].map { $0.description }.joined(separator: ",") + "]")
            i += width
        }
        var text = #"{"hidden_states":["# + rows.joined(separator: ",") + "]"
        if let routing { text += #","routing":"\#(routing)""# }
        return ByteBuffer(string: text + "}")
    }

    static let jsonHeaders: HTTPFields = [.contentType: "application/json"]
    /// Loopback clients wait long for answers: a loaded CI machine can stall a forward pass for many seconds.
    static let client = TestClient.Configuration(timeout: .seconds(300))

    /// The forward response parsed exactly: every number read with Float(String)/Int32(String) from its text.
    struct ForwardOutput: Equatable {
        var hidden: [Float]
        var topkIds: [Int32]
        var topkWeights: [Float]
        var rows: Int

        init(_ text: String) throws {
            let object = try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            #expect(Set(object.keys) == ["hidden_states", "topk_ids", "topk_weights"])
            let hiddenRows = try Self.matrix(text, key: "hidden_states")
            rows = hiddenRows.count
            hidden = try hiddenRows.flatMap { try $0.map { try #require(Float($0)) } }
            topkIds = try Self.matrix(text, key: "topk_ids").flatMap { try $0.map { try #require(Int32($0)) } }
            topkWeights = try Self.matrix(text, key: "topk_weights").flatMap { try $0.map { try #require(Float($0)) } }
        }

        /// The number texts of `"key":[[a,b],[c,d]]`.
        static func matrix(_ text: String, key: String) throws -> [[Substring]] {
            let start = try #require(text.range(of: "\"\(key)\":[["))
            let end = try #require(text[start.upperBound...].range(of: "]]"))
            return text[start.upperBound..<end.lowerBound].components(separatedBy: "],[").map {
                $0.split(separator: ",").map { Substring($0) }
            }
        }

        /// Bit-for-bit equality with a direct forward of the same input.
        func matchesBits(_ direct: MoEForwardResult) -> Bool {
            hidden.map(\.bitPattern) == direct.hidden.map(\.bitPattern) && topkIds == direct.topkIds
                && topkWeights.map(\.bitPattern) == direct.topkWeights.map(\.bitPattern)
        }
    }

    /// The error object of a refused request.
    static func errorMessage(_ response: TestResponse) -> String {
        let object = try? JSONSerialization.jsonObject(with: Data(String(buffer: response.body).utf8)) as? [String: Any]
        let error = object?["error"] as? [String: Any]
        if let status = error?["status"] as? Int, status != Int(response.status.code) { return "status mismatch \(status)" }
        return error?["message"] as? String ?? "<no error message in \(String(buffer: response.body))>"
    }

    /// Resident set size of this process in bytes (Linux /proc/self/statm, second field in pages).
    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }
}

/// A backend that records every forward call and can hold calls at a gate until the test releases them, to make
/// batching and shutdown deterministic. Computes with the CPU backend.
final class GatedBackend: MoEBackend, @unchecked Sendable {
    let inner: CPUBackend
    let name = "gated-cpu"
    var detail: String { "CPU backend behind a test gate" }
    var config: MoEConfig { inner.config }
    private let lock = NSLock()
    private var _calls: [(tokens: Int, routing: RoutingMode)] = []
    private var closed: Bool
    private let gate = DispatchSemaphore(value: 0)

    init(weights: MoELayerWeights, startClosed: Bool = true) {
        inner = CPUBackend(weights: weights)
        closed = startClosed
    }

    var calls: [(tokens: Int, routing: RoutingMode)] {
        lock.lock()
        defer { lock.unlock() }
        return _calls
    }

    /// Lets every held and future call through.
    func open() {
        lock.lock()
        let wasClosed = closed
        closed = false
        lock.unlock()
        if wasClosed { gate.signal() }
    }

    func forward(_ input: [Float], tokens: Int, routing: RoutingMode, profiler: Profiler?) throws -> MoEForwardResult {
        lock.lock()
        _calls.append((tokens, routing))
        let hold = closed
        lock.unlock()
        if hold {
            gate.wait()
            gate.signal()  // pass the opening on to the next held call
        }
        return try inner.forward(input, tokens: tokens, routing: routing, profiler: profiler)
    }
}

/// Polls `condition` every 5 ms for up to `seconds` (generous: on a loaded 2-core CI machine other tests can hold
/// both cooperative threads for a long time; a condition that holds returns at once).
func eventually(_ seconds: Double = 180, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return await condition()
}
