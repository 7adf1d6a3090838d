import HTTPTypes
import Hummingbird
import Logging
import MoECore

/// The `moe serve` HTTP service: one loaded MoE layer behind a small JSON API (Hummingbird 2).
///
/// Endpoints:
/// - `POST /v1/moe/forward` — hidden states in (JSON, or a safetensors body), the layer's outputs and routing out;
///   concurrent requests share forward passes (`ForwardBatcher`).
/// - `GET /health` — liveness and what is loaded.
/// - `GET /metrics` — Prometheus text: requests and errors by status, latency histograms, tokens/s, stage times.
/// - `POST /start_profile`, `POST /stop_profile` — with `enableProfiling` only (404 otherwise).
///
/// Every response carries `x-request-id`, the id in the request's log lines.
public struct MoEServer: Sendable {
    public let configuration: MoEServerConfiguration
    public let metrics: ServerMetrics
    let engine: ForwardEngine
    let batcher: ForwardBatcher
    let profiles = ProfileSessions()
    let ceilings: HardwareCeilings?
    let logger: Logger

    /// `backend` is owned by the server from here on (it calls `forward` from one thread only).
    /// `ceilings` are shown in profiles (% of peak and bandwidth) when given.
    public init(
        backend: any MoEBackend, configuration: MoEServerConfiguration = MoEServerConfiguration(),
        ceilings: HardwareCeilings? = nil, logger: Logger = Logger(label: "moe.serve")
    ) throws {
        try configuration.validate()
        self.configuration = configuration
        self.ceilings = ceilings
        self.logger = logger
        let metrics = ServerMetrics()
        self.metrics = metrics
        self.engine = ForwardEngine(backend: backend)
        self.batcher = ForwardBatcher(
            engine: engine, maxBatchTokens: configuration.maxBatchTokens, metrics: metrics, profiles: profiles,
            stageMetricsEvery: configuration.stageMetricsPeriod(profiledPassesAreSlower: backend.profiledPassesAreSlower),
            logger: logger)
    }

    // MARK: application

    /// The routes, without a socket: tests call it through `Application(router:).test(.router)`.
    public func buildRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ObservingMiddleware(metrics: metrics))
        router.post("/v1/moe/forward") { request, context in try await self.forward(request, context: context) }
        router.get("/health") { _, _ in self.health() }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: self.metrics.prometheusText())))
        }
        router.post("/start_profile") { request, context in try await self.startProfile(request, context: context) }
        router.post("/stop_profile") { _, context in try self.stopProfile(context: context) }
        return router
    }

    /// The application bound to `configuration.host`/`port`. `onServerRunning` receives the bound port (useful
    /// with port 0).
    public func makeApplication(
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let logger = self.logger
        let address = "\(configuration.host):\(configuration.port)"
        return Application(
            router: buildRouter(),
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.host, port: configuration.port), serverName: "moe-serve"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? -1
                logger.info("listening", metadata: ["address": "\(address)", "port": "\(port)"])
                await onServerRunning(port)
            },
            logger: logger)
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting connections and finishes the requests in flight.
    public func run(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        try await makeApplication(onServerRunning: onServerRunning).runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }

    // MARK: handlers

    func forward(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let body = try await collectBody(request, limit: configuration.maxBodyBytes)
        let c = engine.config
        let input: ForwardInput
        switch mediaType(request) {
        case nil, "application/json":
            input = try ForwardJSON.decode(
                body, hidden: c.hidden, maxTokens: configuration.maxRequestTokens, defaultRouting: configuration.defaultRouting)
        case "application/octet-stream":
            input = try ForwardSafeTensors.decode(
                body, hidden: c.hidden, maxTokens: configuration.maxRequestTokens, routing: try routingQuery(request),
                defaultRouting: configuration.defaultRouting)
        case let other?:
            throw ServerError(
                .unsupportedMediaType,
                "Content-Type '\(other)' is not accepted; send application/json or a safetensors body as application/octet-stream"
                    + (other == "application/x-www-form-urlencoded"
                        ? " (curl -d sends \(other); add -H 'Content-Type: application/json')" : ""))
        }
        let result = try await batcher.submit(input)
        if let bad = result.hidden.firstIndex(where: { !$0.isFinite }) {
            throw ServerError(
                .internalServerError,
                "the layer produced a non-finite output at row \(bad / c.hidden); the weights or backend are broken")
        }
        context.logger.debug("forward", metadata: ["tokens": "\(input.tokens)", "routing": "\(input.routing.rawValue)"])
        return json(ByteBuffer(bytes: ForwardJSONAnswer.encode(result, tokens: input.tokens, hidden: c.hidden, topK: c.topK)))
    }

    func health() -> Response {
        let c = engine.config
        return json(JSONText.object([
            ("status", .string("ok")), ("backend", .string(engine.name)), ("detail", .string(engine.detail)),
            ("config", .object([
                ("hidden", .int(c.hidden)), ("intermediate", .int(c.intermediate)), ("experts", .int(c.experts)),
                ("top_k", .int(c.topK)),
            ])),
            ("max_batch_tokens", .int(configuration.maxBatchTokens)),
            ("max_request_tokens", .int(configuration.maxRequestTokens)),
            ("max_body_bytes", .int(configuration.maxBodyBytes)),
            ("profiling", .object([("enabled", .bool(configuration.enableProfiling)), ("active", .bool(profiles.isActive))])),
            ("stage_metrics_every", .int(batcher.stageMetricsEvery)),
        ]).rendered)
    }

    func startProfile(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try requireProfiling()
        let options = try ProfileOptions.decode(try await collectBody(request, limit: 64 << 10))
        let session = try profiles.start(options, defaultDirectory: configuration.profileDirectory)
        context.logger.info("profile started", metadata: ["name": "\(session.name)", "directory": "\(session.directory)"])
        return json(JSONText.object([
            ("status", .string("profiling")), ("name", .string(session.name)), ("output_dir", .string(session.directory)),
            ("with_flops", .bool(options.withFlops)), ("trace", .bool(options.trace)),
            ("stages", .array((options.stages ?? Stage.allCases).map { .string($0.rawValue) })),
        ]).rendered)
    }

    func stopProfile(context: BasicRequestContext) throws -> Response {
        try requireProfiling()
        let (report, files) = try profiles.stop(ceilings: ceilings)
        context.logger.info("profile stopped", metadata: ["name": "\(report.name)", "summary": "\(files.summary)"])
        return json(report.summaryJSON(files: files))
    }

    // MARK: helpers

    private func requireProfiling() throws {
        guard configuration.enableProfiling else {
            throw ServerError(.notFound, "profiling is disabled on this server; restart it with --enable-profiling")
        }
    }

    /// The body, refusing (413) anything over `limit` bytes: by Content-Length before reading, or while reading.
    private func collectBody(_ request: Request, limit: Int) async throws -> ByteBuffer {
        let tooLarge = { (size: String) in
            ServerError(
                .contentTooLarge,
                "the request body (\(size)) is larger than the limit of \(limit) bytes; send fewer tokens per request"
                    + (limit == configuration.maxBodyBytes ? " or raise --max-body-bytes" : ""))
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw tooLarge("\(length) bytes")
        }
        var request = request
        do {
            return try await request.collectBody(upTo: limit)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw tooLarge("more than \(limit) bytes")
        }
    }

    private func mediaType(_ request: Request) -> String? {
        guard let value = request.headers[.contentType] else { return nil }
        let type = value.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        return type?.isEmpty == false ? type : nil
    }

    /// `?routing=` on the URI (safetensors bodies carry no JSON fields).
    private func routingQuery(_ request: Request) throws -> RoutingMode? {
        guard let name = request.uri.queryParameters.get("routing") else { return nil }
        guard let mode = RoutingMode(rawValue: name) else {
            throw ServerError.badRequest(
                "unknown routing '\(name)'; use \(RoutingMode.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        return mode
    }

    private func json(_ text: String) -> Response { json(ByteBuffer(string: text)) }

    private func json(_ body: ByteBuffer) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
    }
}

/// Counts, times and logs every request under its request id, turns errors into their JSON responses here (so
/// they are counted and carry the id), and adds `x-request-id` to every response.
struct ObservingMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    static let requestIDHeader = HTTPField.Name("x-request-id")!
    static let routes: Set<String> = ["/v1/moe/forward", "/health", "/metrics", "/start_profile", "/stop_profile"]
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        metrics.requestStarted()
        let start = ContinuousClock.now
        // The application puts an id in the logger's metadata; contexts made elsewhere (router tests) get one here.
        var context = context
        let requestID: String
        if let id = context.logger[metadataKey: "hb.request.id"] {
            requestID = id.description
        } else {
            requestID = RequestID().description
            context.logger[metadataKey: "hb.request.id"] = .string(requestID)
        }
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
            let message = (error as? ServerError)?.message ?? "\(error)"
            context.logger.notice("request refused", metadata: ["status": "\(error.status.code)", "reason": "\(message)"])
        } catch MoEError.backendUnavailable(let backend, let reason) {
            // The engine can no longer serve (e.g. a rank of an expert-parallel job died): 503, not a server bug.
            context.logger.error("backend unavailable", metadata: ["backend": "\(backend)", "reason": "\(reason)"])
            response = try ServerError(.serviceUnavailable, "the backend '\(backend)' can no longer serve: \(reason)")
                .response(from: request, context: context)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            response = try ServerError(.internalServerError, "internal error: \(error)").response(from: request, context: context)
        }
        response.headers[Self.requestIDHeader] = requestID
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        // Label by route, never by raw path, so unknown paths cannot grow the metrics without bound.
        let route = context.endpointPath.flatMap { Self.routes.contains($0) ? $0 : nil } ?? "other"
        metrics.requestFinished(route: route, status: response.status.code, seconds: seconds)
        context.logger.info(
            "\(request.method) \(request.uri.path) \(response.status.code)",
            metadata: ["route": "\(route)", "seconds": "\(seconds)"])
        return response
    }
}
