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
            let number = UnsafeBufferPointer(rebasing: bytes[start..<at])
            guard let value = DecimalText.nearestFloat(number) ?? Float(String(decoding: number, as: UTF8.self)),
                BF16.isFiniteAfterRounding(value), value != 0 || !nonzeroMantissa
            else { return nil }
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

/// Decimal text to the nearest float32 without a String (`Float(String)` costs 90–140 ns a number, most of a request's
/// non-engine time: docs/bench-serve.md, session 9).
enum DecimalText {
    /// 10^n, exact in Double for n in 0…22 (a switch, not a global array: no lazy-initialisation check per number).
    @inline(__always)
    private static func powerOfTen(_ n: Int) -> Double {
        switch n {
        case 0: 1e0
        case 1: 1e1
        case 2: 1e2
        case 3: 1e3
        case 4: 1e4
        case 5: 1e5
        case 6: 1e6
        case 7: 1e7
        case 8: 1e8
        case 9: 1e9
        case 10: 1e10
        case 11: 1e11
        case 12: 1e12
        case 13: 1e13
        case 14: 1e14
        case 15: 1e15
        case 16: 1e16
        case 17: 1e17
        case 18: 1e18
        case 19: 1e19
        case 20: 1e20
        case 21: 1e21
        default: 1e22
        }
    }

    /// The float32 nearest to `text` (a JSON number: `-?digits(.digits)?([eE][+-]?digits)?`, already checked), or nil
    /// when this fast path cannot be sure of it and `Float(String)` must decide. Clinger's method in Double: the
    /// significant digits (at most 19) as a UInt64 times or over an exact power of ten (|exponent| ≤ 22), so the double
    /// is within about one of its ulps of the exact value; rounding it to float32 then gives the nearest float32
    /// unless the double lies within 4 ulps of a float32 rounding midpoint (where its own error could decide): nil
    /// there, and for anything outside those ranges. When it answers, it equals `Float(String)` (tested).
    static func nearestFloat(_ text: UnsafeBufferPointer<UInt8>) -> Float? {
        var at = 0
        let negative = text.first == UInt8(ascii: "-")
        if negative { at = 1 }
        var mantissa: UInt64 = 0
        var significant = 0, exponent = 0
        var seenPoint = false
        while at < text.count {
            let byte = text[at]
            if byte == UInt8(ascii: ".") {
                seenPoint = true
            } else if byte &- UInt8(ascii: "0") < 10 {
                if mantissa != 0 || byte != UInt8(ascii: "0") {
                    guard significant < 19 else { return nil }
                    mantissa = mantissa * 10 + UInt64(byte &- UInt8(ascii: "0"))
                    significant += 1
                }
                if seenPoint { exponent -= 1 }
            } else {
                break  // e or E
            }
            at += 1
        }
        if at < text.count {
            at += 1
            var sign = 1
            if text[at] == UInt8(ascii: "-") { sign = -1; at += 1 } else if text[at] == UInt8(ascii: "+") { at += 1 }
            var explicit = 0
            while at < text.count {
                explicit = explicit * 10 + Int(text[at] &- UInt8(ascii: "0"))
                guard explicit < 10_000 else { return nil }
                at += 1
            }
            exponent += sign * explicit
        }
        if mantissa == 0 { return negative ? -0.0 : 0.0 }
        guard exponent >= -22, exponent <= 22 else { return nil }
        let scaled = exponent < 0 ? Double(mantissa) / powerOfTen(-exponent) : Double(mantissa) * powerOfTen(exponent)
        let nearest = Float(scaled)
        guard nearest.isFinite, nearest != .greatestFiniteMagnitude else { return nil }  // the overflow threshold
        let here = Double(nearest), margin = 4 * scaled.ulp
        let midpointAbove = (here + Double(nearest.nextUp)) / 2, midpointBelow = (here + Double(nearest.nextDown)) / 2
        guard abs(scaled - midpointAbove) > margin, abs(scaled - midpointBelow) > margin else { return nil }
        return negative ? -nearest : nearest
    }
}

