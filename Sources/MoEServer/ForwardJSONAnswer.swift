import MoECore

/// Writes the forward answer as UTF-8 bytes, byte-identical to `ForwardJSON.encode` (the reference, which the tests
/// compare it with). The layer's outputs are bfloat16 values, so each number's shortest round-trip text comes from a
/// table of all 65536 bf16 patterns, built once, instead of a `Float.description` per number (docs/bench-serve.md,
/// session 8); a value that is not exactly a bf16 (the router weights) still goes through `description`.
enum ForwardJSONAnswer {
    static func encode(_ result: MoEForwardResult, tokens T: Int, hidden H: Int, topK k: Int) -> [UInt8] {
        BF16Text.table.withUnsafeBufferPointers { text, starts in
            var writer = Writer(text: text, starts: starts, capacity: T * H * 10 + T * k * 16 + 64)
            writer.append(#"{"hidden_states":"#)
            result.hidden.withUnsafeBufferPointer { hidden in writer.rows(tokens: T, width: H) { $0.number(hidden[$1]) } }
            writer.append(#","topk_ids":"#)
            writer.rows(tokens: T, width: k) { $0.append(String(result.topkIds[$1])) }
            writer.append(#","topk_weights":"#)
            result.topkWeights.withUnsafeBufferPointer { weights in writer.rows(tokens: T, width: k) { $0.number(weights[$1]) } }
            writer.byte(UInt8(ascii: "}"))
            return writer.out
        }
    }

    /// The output bytes and the table, in a struct with mutating methods: the writes are checked for exclusive
    /// access at compile time. (Closures capturing a local array made every append a runtime access check: ~2% of
    /// a served request's samples under perf, session 10.)
    private struct Writer {
        let text: UnsafeBufferPointer<UInt8>
        let starts: UnsafeBufferPointer<UInt32>
        var out: [UInt8] = []

        init(text: UnsafeBufferPointer<UInt8>, starts: UnsafeBufferPointer<UInt32>, capacity: Int) {
            self.text = text
            self.starts = starts
            out.reserveCapacity(capacity)
        }

        mutating func byte(_ value: UInt8) { out.append(value) }
        mutating func append(_ string: String) { out.append(contentsOf: string.utf8) }

        mutating func number(_ value: Float) {
            let bits = value.bitPattern
            if bits & 0xFFFF == 0 {
                let pattern = Int(bits >> 16)
                out.append(contentsOf: text[Int(starts[pattern])..<Int(starts[pattern + 1])])
            } else {
                out.append(contentsOf: ForwardJSON.floatText(value).utf8)
            }
        }

        /// [[v, …], …]: `tokens` rows of `width` values, value i written by `element(&self, i)` (the writer passed in,
        /// not captured, so its appends stay statically checked).
        mutating func rows(tokens: Int, width: Int, _ element: (inout Writer, Int) -> Void) {
            byte(UInt8(ascii: "["))
            for t in 0..<tokens {
                if t > 0 { byte(UInt8(ascii: ",")) }
                byte(UInt8(ascii: "["))
                for i in 0..<width {
                    if i > 0 { byte(UInt8(ascii: ",")) }
                    element(&self, t * width + i)
                }
                byte(UInt8(ascii: "]"))
            }
            byte(UInt8(ascii: "]"))
        }
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
