import Testing
@testable import SafeTensors

@Suite struct JSONTests {
    @Test func parsesEveryKindAndKeepsKeyOrder() throws {
        let value = try JSONValue.parse(#" {"z": [1, -2.5e3, true, false, null], "a": {"s": "x\u00e9\n\ud83d\ude00"}, "i": 9007199254740993} "#)
        let object = try #require(value.objectValue)
        #expect(object.keys == ["z", "a", "i"])
        #expect(object["z"] == .array([.number(.init(text: "1")), .number(.init(text: "-2.5e3")), .bool(true), .bool(false), .null]))
        #expect(object["a"]?.objectValue?["s"]?.stringValue == "xé\n😀")
        // Integers are not rounded through Double.
        #expect(object["i"]?.intValue == 9_007_199_254_740_993)
        #expect(object["z"]?.arrayValue?[1].doubleValue == -2500)
        #expect(object["z"]?.arrayValue?[1].intValue == nil)
    }

    @Test func rejectsWhatStrictJSONRejects() {
        let bad = [
            "", "{", "{\"a\"}", "{\"a\":1,}", "[1,]", "01", "1.", ".5", "+1", "1e", "\"\\x\"", "\"\\ud800\"", "\"a\u{01}\"",
            "tru", "nul", "{\"a\":1 \"b\":2}", "{\"a\":1,\"a\":2}", "[1] 2", "{'a':1}",
            String(repeating: "[", count: JSONValue.maximumDepth + 1) + String(repeating: "]", count: JSONValue.maximumDepth + 1),
        ]
        for text in bad {
            #expect(throws: JSONParseError.self, "\(text)") { try JSONValue.parse(text) }
        }
    }

    @Test func serializesAndParsesBack() throws {
        let object = JSONValue.object(JSONObject([
            ("name", .string("tab\t\"quote\" \\ \u{01} é")),
            ("n", .number(JSONNumber(-42))),
            ("x", .number(JSONNumber(7.0))),
            ("list", .array([.null, .bool(true), .array([]), .object(JSONObject())])),
        ]))
        for indent in [0, 2] {
            let text = object.serialized(indent: indent)
            #expect(try JSONValue.parse(text) == object, "\(text)")
        }
        #expect(JSONValue.number(JSONNumber(7.0)).serialized() == "7.0")
        #expect(object.serialized().hasPrefix(#"{"name":"tab\t\"quote\" \\ \u0001 é","n":-42"#))
    }
}
