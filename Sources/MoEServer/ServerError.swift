import Hummingbird
import MoECore

/// A request the server refuses, with its HTTP status and a message that names what was wrong and what to do.
/// The body is JSON: `{"error": {"status": 422, "message": "..."}}`.
public struct ServerError: Error, HTTPResponseError, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String

    public init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status.code) \(status.reasonPhrase): \(message)" }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = JSONText.object([
            ("error", .object([("status", .int(status.code)), ("message", .string(message))]))
        ]).rendered
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    static func badRequest(_ message: String) -> ServerError { ServerError(.badRequest, message) }
    static func unprocessable(_ message: String) -> ServerError { ServerError(.unprocessableContent, message) }
}
