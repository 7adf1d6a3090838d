import Hummingbird
import MoECore
import SafeTensors

/// Safetensors request bodies of POST /v1/moe/forward (`Content-Type: application/octet-stream`): the same
/// layout `moe forward` reads, i.e. one tensor `hidden_states` [T, H], F32 or BF16, little-endian. The routing
/// mode comes from `?routing=` or the `__metadata__` entry `"routing"` (other metadata is ignored).
///
/// Failures: bytes that are not a valid safetensors file, a missing `hidden_states`, other tensors, an unknown
/// routing → 400; a wrong dtype, wrong shape, no rows, too many rows or a non-finite value → 422 (naming the
/// first bad row).
public enum ForwardSafeTensors {
    public static let tensorName = "hidden_states"
    static let source = "the request body"

    public static func decode(
        _ body: ByteBuffer, hidden H: Int, maxTokens: Int, routing queryRouting: RoutingMode?, defaultRouting: RoutingMode
    ) throws(ServerError) -> ForwardInput {
        let result: Result<ForwardInput, ServerError> = body.withUnsafeReadableBytes { raw in
            Result { () throws(ServerError) -> ForwardInput in
                try decode(raw, hidden: H, maxTokens: maxTokens, routing: queryRouting, defaultRouting: defaultRouting)
            }
        }
        return try result.get()
    }

    static func decode(
        _ raw: UnsafeRawBufferPointer, hidden H: Int, maxTokens: Int, routing queryRouting: RoutingMode?,
        defaultRouting: RoutingMode
    ) throws(ServerError) -> ForwardInput {
        let hint = "send a safetensors file holding \(tensorName) [T, \(H)] (F32 or BF16), as `moe forward` reads"
        guard raw.count >= 8 else {
            throw .badRequest("\(source) is \(raw.count) bytes, too small for a safetensors file; \(hint)")
        }
        let declared = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(raw.count - 8), declared <= UInt64(SafeTensorsHeader.maximumLength) else {
            throw .badRequest(
                "\(source) declares a \(declared)-byte safetensors header but holds \(raw.count) bytes; \(hint)")
        }
        let headerLength = Int(declared)
        let header: SafeTensorsHeader
        do {
            header = try SafeTensorsHeader(
                json: UnsafeRawBufferPointer(rebasing: raw[8..<(8 + headerLength)]),
                dataSize: raw.count - 8 - headerLength, file: source)
        } catch {
            throw .badRequest("\(error.description)")
        }
        if let other = header.tensors.first(where: { $0.name != tensorName }) {
            throw .badRequest("\(source) holds tensor '\(other.name)'; it must hold only \(tensorName) [T, \(H)]")
        }
        guard let tensor = header.tensors.first else { throw .badRequest("\(source) holds no \(tensorName) tensor; \(hint)") }

        var routing = queryRouting ?? defaultRouting
        if let name = header.metadata["routing"] {
            guard let mode = RoutingMode(rawValue: name) else {
                throw .badRequest(
                    "unknown routing '\(name)' in __metadata__; use \(RoutingMode.allCases.map(\.rawValue).joined(separator: " or "))")
            }
            if let queryRouting, queryRouting != mode {
                throw .badRequest("?routing=\(queryRouting.rawValue) contradicts __metadata__ routing '\(name)'; give one")
            }
            routing = mode
        }

        guard tensor.dtype == .f32 || tensor.dtype == .bf16 else {
            throw .unprocessable("\(tensorName) is \(tensor.dtype); send F32 or BF16")
        }
        guard tensor.shape.count == 2, tensor.shape[1] == H else {
            throw .unprocessable("\(tensorName) has shape \(tensor.shape); it must be [T, \(H)] (H is the model's hidden size)")
        }
        let T = tensor.shape[0]
        guard T >= 1 else { throw .unprocessable("\(tensorName) holds no rows; send at least one row of \(H) values") }
        guard T <= maxTokens else {
            throw .unprocessable(
                "\(tensorName) holds \(T) rows (tokens); this server accepts at most \(maxTokens) per request — split the request")
        }
        let data = raw.baseAddress! + 8 + headerLength + tensor.dataRange.lowerBound
        var values = [Float](repeating: 0, count: T * H)
        switch tensor.dtype {
        case .f32:
            for i in 0..<(T * H) {
                values[i] = Float(bitPattern: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
        default:
            for i in 0..<(T * H) {
                values[i] = BF16.float(UInt16(littleEndian: data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        }
        if let bad = values.firstIndex(where: { !BF16.isFiniteAfterRounding($0) }) {
            throw .unprocessable(
                "row \(bad / H) holds a non-finite value (\(BF16.nonFiniteReason(values[bad])) at column \(bad % H)); every hidden state must be finite")
        }
        return ForwardInput(values: values, tokens: T, routing: routing)
    }
}
