import Hummingbird
import MoECore

/// Safetensors request bodies of POST /v1/moe/forward (Content-Type: application/octet-stream).
public enum ForwardSafeTensors {
    public static func decode(_ body: ByteBuffer, hidden: Int, maxTokens: Int, routing: RoutingMode) throws(ServerError) -> ForwardInput {
        throw ServerError(.unsupportedMediaType, "safetensors bodies are not supported yet; send application/json")
    }
}
