import MoECore

/// How `moe serve` listens and what it accepts.
public struct MoEServerConfiguration: Sendable, Equatable {
    /// Address to bind. Loopback by default: exposing the server is an explicit choice.
    public var host: String
    /// TCP port; 0 asks the system for a free one (tests).
    public var port: Int
    /// Most tokens the batcher puts into one forward pass (the sum over the requests it merges).
    public var maxBatchTokens: Int
    /// Most tokens (rows of hidden_states) one request may carry; larger requests get 422.
    public var maxRequestTokens: Int
    /// Largest request body accepted; larger bodies get 413 before they are read.
    public var maxBodyBytes: Int
    /// Serves POST /start_profile and /stop_profile (404 otherwise).
    public var enableProfiling: Bool
    /// Where profiles go when /start_profile names no `output_dir`.
    public var profileDirectory: String
    /// Routing used when a request does not name one.
    public var defaultRouting: RoutingMode
    /// Profile one forward pass in N for the per-stage metrics (every pass while a profile session runs). nil: every
    /// pass where profiling is free, one in `defaultStageMetricsEvery` where it slows the pass (the CUDA backend).
    public var stageMetricsEvery: Int?
    public static let defaultStageMetricsEvery = 16

    public init(
        host: String = "127.0.0.1", port: Int = 8000, maxBatchTokens: Int = 256, maxRequestTokens: Int = 256,
        maxBodyBytes: Int = 64 << 20, enableProfiling: Bool = false, profileDirectory: String = "moe-profiles",
        defaultRouting: RoutingMode = .renormalize, stageMetricsEvery: Int? = nil
    ) {
        self.host = host
        self.port = port
        self.maxBatchTokens = maxBatchTokens
        self.maxRequestTokens = maxRequestTokens
        self.maxBodyBytes = maxBodyBytes
        self.enableProfiling = enableProfiling
        self.profileDirectory = profileDirectory
        self.defaultRouting = defaultRouting
        self.stageMetricsEvery = stageMetricsEvery
    }

    /// The sampling period for a backend: the configured one, or the default for what profiling costs it.
    public func stageMetricsPeriod(profiledPassesAreSlower: Bool) -> Int {
        stageMetricsEvery ?? (profiledPassesAreSlower ? Self.defaultStageMetricsEvery : 1)
    }

    /// Throws `invalidArgument` naming the bad setting.
    public func validate() throws {
        guard !host.isEmpty else { throw MoEError.invalidArgument("--host must not be empty (default 127.0.0.1)") }
        guard (0...65_535).contains(port) else { throw MoEError.invalidArgument("--port \(port) must be in 0...65535") }
        guard maxRequestTokens >= 1 else {
            throw MoEError.invalidArgument("--max-request-tokens \(maxRequestTokens) must be ≥ 1")
        }
        guard maxBatchTokens >= maxRequestTokens else {
            throw MoEError.invalidArgument(
                "--max-batch-tokens \(maxBatchTokens) must be ≥ --max-request-tokens \(maxRequestTokens) (a request must fit in one batch)")
        }
        guard maxBodyBytes >= 64 else { throw MoEError.invalidArgument("--max-body-bytes \(maxBodyBytes) must be ≥ 64") }
        guard !profileDirectory.isEmpty else { throw MoEError.invalidArgument("the profile directory must not be empty") }
        if let every = stageMetricsEvery, every < 1 {
            throw MoEError.invalidArgument("--stage-metrics-every \(every) must be ≥ 1 (1 profiles every forward pass)")
        }
    }
}
