import MoECore

/// Fingerprints of what a rank loaded, compared at rendezvous so that ranks built from different models or
/// configs are refused (DESIGN §4 needs every rank to compute the same global plan).
public enum ModelDigest {
    /// Every field of the config that changes results, plus the layer count.
    public static func config(_ config: MoEConfig, layers: Int) -> UInt64 {
        var hash = Fingerprint()
        for value in [config.hidden, config.intermediate, config.experts, config.topK, layers] { hash.mix(UInt64(value)) }
        hash.mix(UInt64(config.swigluLimit.bitPattern))
        hash.mix(UInt64(config.swigluAlpha.bitPattern))
        return hash.value
    }

    /// The weights' identity: router and biases in full, the MXFP4 blocks and scales sampled (about 64 Ki
    /// 8-byte words per tensor, spread evenly, plus both ends), which tells different checkpoints or seeds
    /// apart without reading gigabytes.
    public static func weights(_ layers: [MoELayerWeights]) -> UInt64 {
        var hash = Fingerprint()
        for layer in layers {
            for tensor in [layer.routerWeight, layer.routerBias, layer.gateUpBias, layer.downBias] {
                hash.mix(UInt64(tensor.count))
                tensor.withUnsafeBytes { mixSampled(&hash, $0, sampleWords: Int.max) }
            }
            for stack in [layer.gateUp, layer.down] {
                for bytes in [stack.blocks, stack.scales] {
                    hash.mix(UInt64(bytes.count))
                    bytes.withUnsafeBytes { mixSampled(&hash, $0, sampleWords: 1 << 16) }
                }
            }
        }
        return hash.value
    }

    private static func mixSampled(_ hash: inout Fingerprint, _ bytes: UnsafeRawBufferPointer, sampleWords: Int) {
        let words = bytes.count / 8
        let stride = max(1, words / max(1, min(sampleWords, words)))
        var i = 0
        while i < words {
            hash.mix(bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
            i += stride
        }
        if words > 0 { hash.mix(bytes.loadUnaligned(fromByteOffset: (words - 1) * 8, as: UInt64.self)) }
        for j in (words * 8)..<bytes.count { hash.mix(UInt64(bytes[j])) }
    }
}
