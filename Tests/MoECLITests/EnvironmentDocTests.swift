import Foundation
import Testing

/// Every `MOE_*` variable the sources read is named in the README (its "Environment" section or the launcher's list),
/// so a new switch cannot go undocumented.
@Test func theReadmeNamesEveryEnvironmentVariableTheSourcesRead() throws {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/MoECLITests/EnvironmentDocTests.swift
    let root = parts.joined(separator: "/")
    let readme = try String(contentsOfFile: root + "/README.md", encoding: .utf8)
    let pattern = try NSRegularExpression(pattern: #"(?:currentEnvironment|environment|lookup)\("(MOE_[A-Z0-9_]+)"\)"#)
    var read = Set<String>()
    let sources = FileManager.default.enumerator(atPath: root + "/Sources")
    while let path = sources?.nextObject() as? String {
        guard path.hasSuffix(".swift") else { continue }
        let text = try String(contentsOfFile: root + "/Sources/" + path, encoding: .utf8)
        for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            if let range = Range(match.range(at: 1), in: text) { read.insert(String(text[range])) }
        }
    }
    #expect(read.contains("MOE_CUDA_GEMM") && read.contains("MOE_KERNEL_CACHE"), "the scan found \(read.sorted())")
    let missing = read.filter { !readme.contains("`\($0)") }.sorted()
    #expect(missing.isEmpty, "README.md does not name \(missing)")
}
