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
