// Float(String) per number on client-style text (3 decimals, and Swift's shortest Double text as Python's repr gives).
//   swiftc -O scripts/float_parse_bench.swift -o /tmp/float_parse_bench && /tmp/float_parse_bench
import Foundation
var rng = SystemRandomNumberGenerator()
var texts: [[UInt8]] = []
for _ in 0..<100_000 {
    let v = Double.random(in: -3...3, using: &rng)
    texts.append(Array(String(format: "%.3f", v).utf8))
}
var texts17: [[UInt8]] = []
for _ in 0..<100_000 { texts17.append(Array("\(Double.random(in: -3...3, using: &rng))".utf8)) }
func viaString(_ t: [UInt8]) -> Float { t.withUnsafeBufferPointer { Float(String(decoding: $0, as: UTF8.self))! } }
for (name, set) in [("3 decimals", texts), ("repr 17 digits", texts17)] {
    var sum: Float = 0
    let start = Date()
    for _ in 0..<5 { for t in set { sum += viaString(t) } }
    let ns = Date().timeIntervalSince(start) / Double(5 * set.count) * 1e9
    print(name, "Float(String):", String(format: "%.1f ns/number", ns), sum)
}
