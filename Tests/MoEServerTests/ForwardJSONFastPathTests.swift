import Foundation
import Hummingbird
import MoECore
import Testing

@testable import MoEServer

/// The single-pass JSON reader against its reference, the JSONDecoder path: on every body it either declines (nil)
/// or returns exactly what the reference returns, bit for bit.
@Suite struct ForwardJSONFastPathTests {
    /// The invariant, and whether the fast path took the body.
    @discardableResult
    static func check(_ text: String, hidden: Int, maxTokens: Int = 64, _ comment: String = "") -> Bool {
        let body = ByteBuffer(string: text)
        let fast = ForwardJSONFastPath.decode(body, hidden: hidden, maxTokens: maxTokens, defaultRouting: .renormalize)
        let reference = try? ForwardJSON.referenceDecode(body, hidden: hidden, maxTokens: maxTokens, defaultRouting: .renormalize)
        guard let fast else { return false }
        #expect(reference != nil, "the fast path took a body the reference refuses: \(comment) \(text.prefix(120))")
        if let reference {
            #expect(fast.tokens == reference.tokens && fast.routing == reference.routing, "\(comment)")
            #expect(fast.values.map(\.bitPattern) == reference.values.map(\.bitPattern), "values differ: \(comment)")
        }
        return true
    }

    /// Numbers in every JSON spelling the clients use, and the awkward ones.
    static func numberText(_ rng: inout SeededGenerator) -> String {
        let value = Float.random(in: -8...8, using: &rng)
        switch Int.random(in: 0..<9, using: &rng) {
        case 0: return value.description
        case 1: return String(format: "%.9e", Double(value))
        case 2: return String(format: "%.17g", Double.random(in: -3...3, using: &rng))  // more digits than a float holds
        case 3: return String(Int.random(in: -1000...1000, using: &rng))
        case 4: return ["-0", "0", "0.0", "-0.0e0", "1E0", "2.5E+3", "-7.5e-3"].randomElement(using: &rng)!
        case 5: return ["1e-45", "1.4E-45", "1.17549435e-38", "3.0e-40"].randomElement(using: &rng)!  // subnormals
        case 6: return String(format: "%.6f", Double(value) * 1000)
        case 7: return "\(value.description)0000000000000001"  // past the digits that matter
        default: return String(format: "%.3g", Double(value))
        }
    }

    @Test(arguments: [(1, 64), (3, 64), (7, 128), (2, 2880)])
    func randomBodiesDecodeBitForBitAsTheReference(tokens: Int, hidden: Int) {
        var rng = SeededGenerator(seed: UInt64(tokens * 1000 + hidden))
        for trial in 0..<6 {
            let space = [" ", "", "\n", "\t ", "\r\n  "]
            func ws(_ rng: inout SeededGenerator) -> String { space.randomElement(using: &rng)! }
            var rows: [String] = []
            for _ in 0..<tokens {
                let separator: String = ws(&rng) + "," + ws(&rng)
                let numbers: [String] = (0..<hidden).map { _ in Self.numberText(&rng) }
                let open: String = "[" + ws(&rng)
                rows.append(open + numbers.joined(separator: separator) + ws(&rng) + "]")
            }
            let rowSeparator: String = "," + ws(&rng)
            let key: String = "\"hidden_states\"" + ws(&rng) + ":" + ws(&rng)
            let states: String = key + "[" + rows.joined(separator: rowSeparator) + "]"
            let routing = ["", "\"routing\":\"renormalize\"", "\"routing\" : \"softmax-first\""][trial % 3]
            let members: [String] = routing.isEmpty ? [states] : (trial % 2 == 0 ? [states, routing] : [routing, states])
            let memberSeparator: String = "," + ws(&rng)
            let head: String = ws(&rng) + "{" + ws(&rng)
            let tail: String = ws(&rng) + "}" + ws(&rng)
            let text: String = head + members.joined(separator: memberSeparator) + tail
            #expect(Self.check(text, hidden: hidden, "T=\(tokens) H=\(hidden) trial \(trial)"), "the fast path declined a valid body")
        }
    }

    @Test func bodiesOutsideTheFastPathGoToTheReference() {
        let row = "[" + Array(repeating: "0.5", count: 4).joined(separator: ",") + "]"
        let declined: [(String, String)] = [
            (#"{"hidden_states": [\#(row)], "extra": 1}"#, "unknown key"),
            (#"{"hidden\u005fstates": [\#(row)]}"#, "escaped key"),
            (#"{"hidden_states": [\#(row)], "hidden_states": [\#(row)]}"#, "duplicate key"),
            (#"{"hidden_states": [\#(row)], "routing": "softmax"}"#, "unknown routing"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5]]}"#, "short row"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, 0.5, 0.5]]}"#, "long row"),
            (#"{"hidden_states": []}"#, "no rows"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, 7e-46]]}"#, "underflow to zero, which the decoder refuses"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, 1e39]]}"#, "beyond float32"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, 3.4e38]]}"#, "beyond bf16"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, "1"]]}"#, "a string"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, 01]]}"#, "leading zero"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, .5]]}"#, "no integer digit"),
            (#"{"hidden_states": [[0.5, 0.5, 0.5, NaN]]}"#, "NaN"),
            (#"{"hidden_states": [\#(row)]} x"#, "trailing bytes"),
            (#"{"hidden_states": [\#(row)]"#, "unterminated"),
            ("[" + row + "]", "not an object"),
        ]
        for (text, why) in declined {
            #expect(!Self.check(text, hidden: 4, maxTokens: 2, why), "the fast path took: \(why)")
        }
        #expect(!Self.check(#"{"hidden_states": [\#(row), \#(row), \#(row)]}"#, hidden: 4, maxTokens: 2), "more rows than allowed")
        // Zero in any spelling is a number the reference takes too.
        #expect(Self.check(#"{"hidden_states": [[0e-999, -0, 0.000, 1]]}"#, hidden: 4))
    }

    /// Through the public entry point: a refused body keeps the reference's error, word for word.
    @Test func errorsAreTheReferencesWords() {
        let text = #"{"hidden_states": [[0.5, 0.5, 0.5]]}"#
        let body = ByteBuffer(string: text)
        var viaEntry = "", viaReference = ""
        do { _ = try ForwardJSON.decode(body, hidden: 4, maxTokens: 8, defaultRouting: .renormalize) } catch { viaEntry = "\(error)" }
        do { _ = try ForwardJSON.referenceDecode(body, hidden: 4, maxTokens: 8, defaultRouting: .renormalize) } catch { viaReference = "\(error)" }
        #expect(!viaEntry.isEmpty && viaEntry == viaReference)
        #expect(viaEntry.contains("has 3 values"))
    }
}

/// The decimal fast path answers exactly what `Float(String)` answers, whenever it answers: seeded random numbers of
/// 1–24 digits with the point anywhere and exponents from −50 to 45, signs and leading zeros, plus float32 rounding
/// midpoints written in few digits (16777217 lies halfway between two floats) and the subnormal and overflow ends.
/// It must also answer for nearly all of what clients send (3 decimals, Python's 17-digit repr), or it saves nothing.
@Test func theDecimalFastPathAgreesWithFloatParsingBitForBit() {
    func check(_ text: String) -> Bool? {
        let bytes = Array(text.utf8)
        guard let fast = bytes.withUnsafeBufferPointer({ DecimalText.nearestFloat($0) }) else { return nil }
        let reference = Float(text)!
        #expect(fast.bitPattern == reference.bitPattern, "\(text): fast \(fast) (\(fast.bitPattern)), Float(String) \(reference)")
        return fast.bitPattern == reference.bitPattern
    }
    var rng = SeededGenerator(seed: 99)
    func digits(_ count: Int) -> String { String((0..<count).map { _ in Character(String(rng.next() % 10)) }) }
    var answered = 0
    for _ in 0..<200_000 {
        let whole = digits(1 + Int(rng.next() % 12)), fraction = rng.next() % 3 == 0 ? "" : "." + digits(1 + Int(rng.next() % 12))
        let exponent = rng.next() % 2 == 0 ? "" : "e\(Int(rng.next() % 96) - 50)"
        let text = (rng.next() % 2 == 0 ? "-" : "") + whole + fraction + exponent
        if check(text) != nil { answered += 1 }
    }
    #expect(answered > 100_000, "the fast path answered \(answered) of 200000")
    // Float32 midpoints in ≤ 19 digits: the double is the midpoint itself, so the fast path must stand aside.
    for text in ["16777217", "16777219", "33554434", "-16777217", "1.6777217e7", "0.16777217e8"] {
        #expect(Array(text.utf8).withUnsafeBufferPointer { DecimalText.nearestFloat($0) } == nil, "\(text) is a float32 midpoint")
    }
    for text in ["0", "-0", "-0.000", "0e5", "1e-45", "1.4e-45", "7e-46", "1e-38", "1.17549435e-38", "3.4028234e38", "3.5e38",
                 "1e22", "1e23", "123456789012345678", "1234567890123456789", "12345678901234567890", "0.000000000000000000001"] {
        _ = check(text)
    }
    // What clients send: 3-decimal text (serve_load.py) and Python's shortest repr of doubles.
    var clientAnswered = 0
    for _ in 0..<20_000 {
        let value = Double(Int64(rng.next() % 6_000_001) - 3_000_000) / 1_000_000
        if check(String(format: "%.3f", value)) != nil { clientAnswered += 1 }
        if check("\(value * 1.000000123456789)") != nil { clientAnswered += 1 }
    }
    #expect(clientAnswered > 39_000, "the fast path answered \(clientAnswered) of 40000 client-style numbers")
}
