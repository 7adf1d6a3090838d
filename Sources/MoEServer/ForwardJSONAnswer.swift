import MoECore

/// Writes the forward answer as UTF-8 bytes, byte-identical to `ForwardJSON.encode` (the reference, which the tests
/// compare it with). The layer's outputs are bfloat16 values, so each number's shortest round-trip text comes from a
/// table of all 65536 bf16 patterns, built once, instead of a `Float.description` per number (docs/bench-serve.md,
/// session 8); a value that is not exactly a bf16 (the router weights) still goes through `description`.
enum ForwardJSONAnswer {
    static func encode(_ result: MoEForwardResult, tokens T: Int, hidden H: Int, topK k: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(T * H * 10 + T * k * 16 + 64)
        BF16Text.table.withUnsafeBufferPointers { text, starts in
            func number(_ value: Float) {
                let bits = value.bitPattern
                if bits & 0xFFFF == 0 {
                    let pattern = Int(bits >> 16)
                    out.append(contentsOf: text[Int(starts[pattern])..<Int(starts[pattern + 1])])
                } else {
                    out.append(contentsOf: ForwardJSON.floatText(value).utf8)
                }
            }
            func rows(width: Int, _ write: (Int) -> Void) {
                out.append(UInt8(ascii: "["))
                for t in 0..<T {
                    if t > 0 { out.append(UInt8(ascii: ",")) }
                    out.append(UInt8(ascii: "["))
                    for i in 0..<width {
                        if i > 0 { out.append(UInt8(ascii: ",")) }
                        write(t * width + i)
                    }
                    out.append(UInt8(ascii: "]"))
                }
                out.append(UInt8(ascii: "]"))
            }
            out.append(contentsOf: #"{"hidden_states":"#.utf8)
            result.hidden.withUnsafeBufferPointer { hidden in rows(width: H) { number(hidden[$0]) } }
            out.append(contentsOf: #","topk_ids":"#.utf8)
            rows(width: k) { out.append(contentsOf: String(result.topkIds[$0]).utf8) }
            out.append(contentsOf: #","topk_weights":"#.utf8)
            result.topkWeights.withUnsafeBufferPointer { weights in rows(width: k) { number(weights[$0]) } }
            out.append(UInt8(ascii: "}"))
        }
        return out
    }
}

/// The JSON text of every bfloat16 bit pattern (`ForwardJSON.floatText` of the float it widens to), packed: pattern p
/// is bytes starts[p] ..< starts[p + 1] of `text`. About 600 KB, built on first use (~10 ms).
struct BF16Text: Sendable {
    let text: [UInt8]
    let starts: [UInt32]

    static let table = BF16Text()

    private init() {
        var text: [UInt8] = []
        var starts: [UInt32] = []
        text.reserveCapacity(65536 * 10)
        starts.reserveCapacity(65537)
        for pattern in 0..<65536 {
            starts.append(UInt32(text.count))
            text.append(contentsOf: ForwardJSON.floatText(BF16.float(UInt16(pattern))).utf8)
        }
        starts.append(UInt32(text.count))
        self.text = text
        self.starts = starts
    }

    func withUnsafeBufferPointers<R>(_ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt32>) -> R) -> R {
        text.withUnsafeBufferPointer { text in starts.withUnsafeBufferPointer { starts in body(text, starts) } }
    }
}
