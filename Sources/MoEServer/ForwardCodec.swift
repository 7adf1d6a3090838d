import Foundation
import Hummingbird
import MoECore

/// One caller's input after decoding and checking: x [T, H] float32, row-major.
public struct ForwardInput: Sendable, Equatable {
    public var values: [Float]
    public var tokens: Int
    public var routing: RoutingMode

    public init(values: [Float], tokens: Int, routing: RoutingMode) {
        self.values = values
        self.tokens = tokens
        self.routing = routing
    }
}

/// The JSON request and response of POST /v1/moe/forward.
///
/// Request: `{"hidden_states": [[x00, x01, ...], ...], "routing": "renormalize" | "softmax-first"}` with T rows of
/// H numbers (`routing` optional). Response: `{"hidden_states": [[...]] (T×H), "topk_ids": [[...]] (T×k),
/// "topk_weights": [[...]] (T×k)}`, every float written with its shortest round-trip text.
///
/// Failures: a body that is not JSON, not an object, has an unknown key or a key of the wrong type → 400;
/// a well-formed body whose rows are wrong (none, too many, ragged, not H wide, not numbers, not finite) → 422
/// naming the first bad row.
public enum ForwardJSON {
    public static let acceptedKeys = ["hidden_states", "routing"]

    /// What the decoder checks against while it reads.
    struct Limits {
        var hidden: Int
        var maxTokens: Int
        var defaultRouting: RoutingMode
    }

    public static func decode(
        _ body: ByteBuffer, hidden: Int, maxTokens: Int, defaultRouting: RoutingMode
    ) throws(ServerError) -> ForwardInput {
        if let input = ForwardJSONFastPath.decode(body, hidden: hidden, maxTokens: maxTokens, defaultRouting: defaultRouting) {
            return input
        }
        return try referenceDecode(body, hidden: hidden, maxTokens: maxTokens, defaultRouting: defaultRouting)
    }

    /// The JSONDecoder path: the reference of the fast path, and the one that words every error.
    static func referenceDecode(
        _ body: ByteBuffer, hidden: Int, maxTokens: Int, defaultRouting: RoutingMode
    ) throws(ServerError) -> ForwardInput {
        let decoder = JSONDecoder()
        decoder.userInfo[limitsKey] = Limits(hidden: hidden, maxTokens: maxTokens, defaultRouting: defaultRouting)
        do {
            return try decoder.decode(Body.self, from: Data(buffer: body)).input
        } catch let error as ServerError {
            throw error
        } catch {
            throw .badRequest("the body is not valid JSON (\(JSONErrors.reason(error))); send \(example)")
        }
    }

    static let example = #"{"hidden_states": [[...H numbers...], ...], "routing": "renormalize"}"#
    static let limitsKey = CodingUserInfoKey(rawValue: "moe.forward.limits")!

    private struct Body: Decodable {
        var input: ForwardInput

        init(from decoder: any Decoder) throws {
            let limits = decoder.userInfo[ForwardJSON.limitsKey] as! Limits
            let object: KeyedDecodingContainer<AnyKey>
            do {
                object = try decoder.container(keyedBy: AnyKey.self)
            } catch {
                throw ServerError.badRequest(
                    "the body must be a JSON object with keys \(ForwardJSON.acceptedKeys.joined(separator: ", ")); send \(ForwardJSON.example)")
            }
            for key in object.allKeys where !ForwardJSON.acceptedKeys.contains(key.stringValue) {
                throw ServerError.badRequest(
                    "unknown key '\(key.stringValue)'; accepted keys: \(ForwardJSON.acceptedKeys.joined(separator: ", "))")
            }
            var routing = limits.defaultRouting
            if object.contains(AnyKey("routing")) {
                let name: String
                do {
                    name = try object.decode(String.self, forKey: AnyKey("routing"))
                } catch {
                    throw ServerError.badRequest(
                        "'routing' must be a string: \(RoutingMode.allCases.map(\.rawValue).joined(separator: " or "))")
                }
                guard let mode = RoutingMode(rawValue: name) else {
                    throw ServerError.badRequest(
                        "unknown routing '\(name)'; use \(RoutingMode.allCases.map(\.rawValue).joined(separator: " or "))")
                }
                routing = mode
            }
            guard object.contains(AnyKey("hidden_states")) else {
                throw ServerError.badRequest("missing 'hidden_states'; send \(ForwardJSON.example)")
            }
            var rows: UnkeyedDecodingContainer
            do {
                rows = try object.nestedUnkeyedContainer(forKey: AnyKey("hidden_states"))
            } catch {
                throw ServerError.badRequest("'hidden_states' must be an array of rows (arrays of numbers)")
            }
            let H = limits.hidden
            let T = rows.count ?? 0
            guard T >= 1 else { throw ServerError.unprocessable("'hidden_states' holds no rows; send at least one row of \(H) numbers") }
            guard T <= limits.maxTokens else {
                throw ServerError.unprocessable(
                    "'hidden_states' holds \(T) rows (tokens); this server accepts at most \(limits.maxTokens) per request — split the request")
            }
            var values = [Float]()
            values.reserveCapacity(T * H)
            for t in 0..<T {
                var row: UnkeyedDecodingContainer
                do {
                    row = try rows.nestedUnkeyedContainer()
                } catch {
                    throw ServerError.unprocessable("row \(t) of 'hidden_states' is not an array of numbers")
                }
                guard row.count == H else {
                    throw ServerError.unprocessable(
                        "row \(t) of 'hidden_states' has \(row.count ?? 0) values; every row must have H = \(H) (the model's hidden size)")
                }
                for h in 0..<H {
                    let value: Float
                    do {
                        value = try row.decode(Float.self)
                    } catch DecodingError.typeMismatch, DecodingError.valueNotFound {
                        throw ServerError.unprocessable("row \(t), column \(h) of 'hidden_states' is not a number")
                    } catch {
                        // The decoder refuses numbers outside the float32 range (e.g. 1e39, -1e400) with its own error.
                        throw ServerError.unprocessable(
                            "row \(t) holds a non-finite value at column \(h) (outside the float32 range); every hidden state must be finite")
                    }
                    guard BF16.isFiniteAfterRounding(value) else {
                        throw ServerError.unprocessable(
                            "row \(t) holds a non-finite value (\(BF16.nonFiniteReason(value)) at column \(h)); every hidden state must be finite")
                    }
                    values.append(value)
                }
            }
            input = ForwardInput(values: values, tokens: T, routing: routing)
        }
    }

    /// `{"hidden_states": [[...]], "topk_ids": [[...]], "topk_weights": [[...]]}` for T tokens.
    public static func encode(_ result: MoEForwardResult, tokens T: Int, hidden H: Int, topK k: Int) -> String {
        var out = ""
        out.reserveCapacity(T * H * 12 + T * k * 16 + 64)
        func rows<Value>(_ values: [Value], width: Int, _ text: (Value) -> String) {
            out += "["
            for t in 0..<T {
                out += t == 0 ? "[" : ",["
                for i in 0..<width {
                    if i > 0 { out += "," }
                    out += text(values[t * width + i])
                }
                out += "]"
            }
            out += "]"
        }
        out += #"{"hidden_states":"#
        rows(result.hidden, width: H, floatText)
        out += #","topk_ids":"#
        rows(result.topkIds, width: k) { String($0) }
        out += #","topk_weights":"#
        rows(result.topkWeights, width: k, floatText)
        out += "}"
        return out
    }

    /// Shortest text that reads back as the same float32 (JSON has no NaN or infinity: those become null,
    /// which the server never sends because it checks outputs first).
    static func floatText(_ value: Float) -> String { value.isFinite ? value.description : "null" }
}

/// Any string key, for reading objects whose keys are checked by hand.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

enum JSONErrors {
    /// A short reason for a JSON syntax error.
    static func reason(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            let underlying = (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return underlying ?? context.debugDescription
        }
        return "\(error)"
    }
}
