import MoECore
import NIOCore

/// A single-pass reader for the common request body, `{"hidden_states": [[numbers]], "routing": "…"}`, in place of
/// Foundation's JSONDecoder (docs/bench-serve.md, session 7). It accepts exactly what the JSONDecoder path accepts,
/// with the same values — a number's text goes through `Float(_:)`, which rounds the decimal text once, as JSONDecoder
/// does — and returns nil for anything else (an escape in a string, another key, a bad row, a value the decoder
/// refuses), so that the JSONDecoder path decides and words the error. Not SafeTensors' `JSONValue`: that builds a
/// boxed value per number, where this reads the numbers straight into the output.
enum ForwardJSONFastPath {
    static func decode(_ body: ByteBuffer, hidden: Int, maxTokens: Int, defaultRouting: RoutingMode) -> ForwardInput? {
        body.withUnsafeReadableBytes { raw in
            var reader = Reader(bytes: raw.bindMemory(to: UInt8.self))
            return reader.body(hidden: hidden, maxTokens: maxTokens, defaultRouting: defaultRouting)
        }
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var at = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func body(hidden: Int, maxTokens: Int, defaultRouting: RoutingMode) -> ForwardInput? {
            var values: [Float]?
            var tokens = 0
            var routing: RoutingMode?
            guard take(UInt8(ascii: "{")) else { return nil }
            repeat {
                guard let key = string() else { return nil }
                guard take(UInt8(ascii: ":")) else { return nil }
                switch key {
                case "hidden_states" where values == nil:
                    guard let (rows, count) = rows(hidden: hidden, maxTokens: maxTokens) else { return nil }
                    (values, tokens) = (rows, count)
                case "routing" where routing == nil:
                    guard let name = string(), let mode = RoutingMode(rawValue: name) else { return nil }
                    routing = mode
                default:
                    return nil
                }
            } while take(UInt8(ascii: ","))
            guard take(UInt8(ascii: "}")), let values else { return nil }
            skipSpace()
            guard at == bytes.count else { return nil }
            return ForwardInput(values: values, tokens: tokens, routing: routing ?? defaultRouting)
        }

        /// `[[n, …], …]`: 1…maxTokens rows of exactly `hidden` numbers.
        mutating func rows(hidden: Int, maxTokens: Int) -> ([Float], Int)? {
            guard take(UInt8(ascii: "[")) else { return nil }
            var values: [Float] = []
            values.reserveCapacity(hidden * min(maxTokens, 64))
            var tokens = 0
            repeat {
                guard tokens < maxTokens, take(UInt8(ascii: "[")) else { return nil }
                for h in 0..<hidden {
                    if h > 0 { guard take(UInt8(ascii: ",")) else { return nil } }
                    guard let value = number() else { return nil }
                    values.append(value)
                }
                guard take(UInt8(ascii: "]")) else { return nil }
                tokens += 1
            } while take(UInt8(ascii: ","))
            guard take(UInt8(ascii: "]")) else { return nil }
            return (values, tokens)
        }

        /// A JSON number whose float32 value is finite in bf16 and not an underflow to zero (the decoder refuses those).
        mutating func number() -> Float? {
            skipSpace()
            let start = at
            if peek() == UInt8(ascii: "-") { at += 1 }
            let integerStart = at
            let integer = digits()
            guard integer.count > 0, integer.count == 1 || bytes[integerStart] != UInt8(ascii: "0") else { return nil }
            var nonzeroMantissa = integer.nonzero
            if peek() == UInt8(ascii: ".") {
                at += 1
                let fraction = digits()
                guard fraction.count > 0 else { return nil }
                nonzeroMantissa = nonzeroMantissa || fraction.nonzero
            }
            if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
                at += 1
                if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { at += 1 }
                guard digits().count > 0 else { return nil }
            }
            guard at - start <= 64 else { return nil }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
            guard let value = Float(text), BF16.isFiniteAfterRounding(value), value != 0 || !nonzeroMantissa else { return nil }
            return value
        }

        /// Skips a run of decimal digits: how many, and whether any is not 0.
        mutating func digits() -> (count: Int, nonzero: Bool) {
            let start = at
            var nonzero = false
            while at < bytes.count, bytes[at] &- UInt8(ascii: "0") < 10 {
                nonzero = nonzero || bytes[at] != UInt8(ascii: "0")
                at += 1
            }
            return (at - start, nonzero)
        }

        /// A string with no escapes (the keys and routing names need none).
        mutating func string() -> String? {
            guard take(UInt8(ascii: "\"")) else { return nil }
            let start = at
            while at < bytes.count, bytes[at] != UInt8(ascii: "\"") {
                guard bytes[at] != UInt8(ascii: "\\"), bytes[at] >= 0x20 else { return nil }
                at += 1
            }
            guard at < bytes.count else { return nil }
            defer { at += 1 }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
        }

        func peek() -> UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func skipSpace() {
            while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x0A || bytes[at] == 0x0D || bytes[at] == 0x09 { at += 1 }
        }

        /// Skips white space, then takes `byte` if it is next.
        mutating func take(_ byte: UInt8) -> Bool {
            skipSpace()
            guard at < bytes.count, bytes[at] == byte else { return false }
            at += 1
            return true
        }
    }
}
