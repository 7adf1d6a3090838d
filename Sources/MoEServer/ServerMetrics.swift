import Foundation
import MoECore

/// Counters behind GET /metrics, shared by every request; one lock, held only to add numbers.
public final class ServerMetrics: @unchecked Sendable {
    /// Latency histogram upper bounds in seconds (Prometheus `le`), +Inf implied.
    public static let latencyBuckets: [Double] = [
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
    ]
    /// Tokens-per-batch histogram upper bounds.
    public static let batchTokenBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    /// tokens/s is measured over batches finished in this many recent seconds.
    public static let throughputWindowSeconds = 10.0

    struct Histogram {
        var counts: [UInt64]
        var sum = 0.0
        var count: UInt64 = 0
        init(buckets: Int) { counts = [UInt64](repeating: 0, count: buckets) }
        mutating func observe(_ value: Double, bounds: [Double]) {
            for (i, bound) in bounds.enumerated() where value <= bound { counts[i] += 1 }
            sum += value
            count += 1
        }
    }

    struct RouteStatus: Hashable {
        var route: String
        var status: Int
    }

    private let lock = NSLock()
    private var requests: [RouteStatus: UInt64] = [:]
    private var latency: [String: Histogram] = [:]
    private var inFlight = 0
    private var batches: UInt64 = 0
    private var batchedRequests: UInt64 = 0
    private var tokens: UInt64 = 0
    private var forwardSeconds = 0.0
    private var profiledBatches: UInt64 = 0
    private var forwardErrors: UInt64 = 0
    private var batchTokens = Histogram(buckets: batchTokenBuckets.count)
    private var stageSeconds: [String: Double] = [:]
    private var stageCalls: [String: UInt64] = [:]
    /// (finish time in seconds since start, tokens) of recent batches, oldest first.
    private var recent: [(Double, Int)] = []
    /// Seconds on a monotonic clock (injectable so the tokens/s window can be tested without waiting).
    private let clock: @Sendable () -> Double
    private let started: Double

    public init(clock: @escaping @Sendable () -> Double = ServerMetrics.monotonicSeconds) {
        self.clock = clock
        self.started = clock()
    }

    public static func monotonicSeconds() -> Double { Double(Profiler.now()) * 1e-9 }

    private func withLock<R>(_ body: () -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    private func secondsSinceStart() -> Double { clock() - started }

    func requestStarted() { withLock { inFlight += 1 } }

    /// One finished HTTP request. `route` is the matched route or "other" (bounded label cardinality).
    func requestFinished(route: String, status: Int, seconds: Double) {
        withLock {
            inFlight -= 1
            requests[RouteStatus(route: route, status: status), default: 0] += 1
            latency[route, default: Histogram(buckets: Self.latencyBuckets.count)].observe(seconds, bounds: Self.latencyBuckets)
        }
    }

    /// One forward pass of the batcher: its requests and tokens, wall time and per-stage scopes (nil: not profiled).
    func batchFinished(requests count: Int, tokens batchTokens: Int, seconds: Double, records: [Profiler.Record]?) {
        let now = secondsSinceStart()
        withLock {
            batches += 1
            batchedRequests += UInt64(count)
            tokens += UInt64(batchTokens)
            forwardSeconds += seconds
            self.batchTokens.observe(Double(batchTokens), bounds: Self.batchTokenBuckets)
            if records != nil { profiledBatches += 1 }
            for r in records ?? [] {
                stageSeconds[r.stage, default: 0] += Double(r.durationNanoseconds) * 1e-9
                stageCalls[r.stage, default: 0] += 1
            }
            recent.append((now, batchTokens))
            let cutoff = now - Self.throughputWindowSeconds
            if let keep = recent.firstIndex(where: { $0.0 >= cutoff }) { recent.removeFirst(keep) } else { recent.removeAll() }
        }
    }

    func forwardFailed() { withLock { forwardErrors += 1 } }

    /// Requests answered with `status` on `route` so far (tests, health).
    public func requestCount(route: String, status: Int) -> UInt64 {
        withLock { requests[RouteStatus(route: route, status: status)] ?? 0 }
    }

    public var totalBatches: UInt64 { withLock { batches } }
    public var totalBatchedRequests: UInt64 { withLock { batchedRequests } }
    public var totalTokens: UInt64 { withLock { tokens } }

    /// The Prometheus text exposition format (version 0.0.4).
    public func prometheusText() -> String {
        let now = secondsSinceStart()
        return withLock {
            var out = ""
            func family(_ name: String, _ type: String, _ help: String) {
                out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            }
            func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
                out += name
                if !labels.isEmpty {
                    out += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
                }
                out += " " + Self.number(value) + "\n"
            }
            func histogram(_ name: String, _ labels: [(String, String)], _ h: Histogram, bounds: [Double]) {
                for (i, bound) in bounds.enumerated() {
                    sample(name + "_bucket", labels + [("le", Self.number(bound))], Double(h.counts[i]))
                }
                sample(name + "_bucket", labels + [("le", "+Inf")], Double(h.count))
                sample(name + "_sum", labels, h.sum)
                sample(name + "_count", labels, Double(h.count))
            }

            family("moe_http_requests_total", "counter", "HTTP requests answered, by route and status code.")
            for key in requests.keys.sorted(by: { ($0.route, $0.status) < ($1.route, $1.status) }) {
                sample("moe_http_requests_total", [("route", key.route), ("status", String(key.status))], Double(requests[key]!))
            }
            family("moe_http_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx status, by status code.")
            var errors: [Int: UInt64] = [:]
            for (key, count) in requests where key.status >= 400 { errors[key.status, default: 0] += count }
            for status in errors.keys.sorted() { sample("moe_http_errors_total", [("status", String(status))], Double(errors[status]!)) }
            family("moe_http_request_duration_seconds", "histogram", "Time from request head to response, by route.")
            for route in latency.keys.sorted() {
                histogram("moe_http_request_duration_seconds", [("route", route)], latency[route]!, bounds: Self.latencyBuckets)
            }
            family("moe_http_requests_in_flight", "gauge", "Requests being handled now.")
            sample("moe_http_requests_in_flight", [], Double(inFlight))

            family("moe_forward_batches_total", "counter", "Forward passes run by the batcher.")
            sample("moe_forward_batches_total", [], Double(batches))
            family("moe_forward_requests_total", "counter", "Requests answered by forward passes (several per batch).")
            sample("moe_forward_requests_total", [], Double(batchedRequests))
            family("moe_forward_tokens_total", "counter", "Tokens run through the layer.")
            sample("moe_forward_tokens_total", [], Double(tokens))
            family("moe_forward_errors_total", "counter", "Forward passes that failed.")
            sample("moe_forward_errors_total", [], Double(forwardErrors))
            family("moe_forward_seconds_total", "counter", "Wall time spent in forward passes.")
            sample("moe_forward_seconds_total", [], forwardSeconds)
            family("moe_forward_batch_tokens", "histogram", "Tokens per forward pass.")
            histogram("moe_forward_batch_tokens", [], batchTokens, bounds: Self.batchTokenBuckets)
            family(
                "moe_tokens_per_second", "gauge",
                "Tokens finished per second over the last \(Int(Self.throughputWindowSeconds)) s (or since start).")
            let window = min(Self.throughputWindowSeconds, max(now, 1e-9))
            let recentTokens = recent.filter { $0.0 >= now - Self.throughputWindowSeconds }.reduce(0) { $0 + $1.1 }
            sample("moe_tokens_per_second", [], Double(recentTokens) / window)
            family("moe_stage_profiled_batches_total", "counter", "Forward passes profiled for the stage metrics (sampled).")
            sample("moe_stage_profiled_batches_total", [], Double(profiledBatches))
            family("moe_stage_seconds_total", "counter", "Wall time per layer stage, summed over the profiled forward passes.")
            let stageOrder = Stage.allCases.map(\.rawValue) + stageSeconds.keys.filter { Stage(rawValue: $0) == nil }.sorted()
            for stage in stageOrder where stageSeconds[stage] != nil {
                sample("moe_stage_seconds_total", [("stage", stage)], stageSeconds[stage]!)
            }
            family("moe_stage_calls_total", "counter", "Scopes recorded per layer stage.")
            for stage in stageOrder where stageCalls[stage] != nil {
                sample("moe_stage_calls_total", [("stage", stage)], Double(stageCalls[stage]!))
            }
            return out
        }
    }

    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return value.description
    }

    static func escape(_ label: String) -> String {
        label.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
