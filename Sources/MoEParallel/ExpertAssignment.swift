#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which rank owns each expert (DESIGN §4): every expert exactly one rank, every rank at least one expert.
/// A rank's *local* ids number its experts in ascending global order, so local weights are the global
/// stack's owned experts in order.
///
/// Shapes: `owners` [E], `localIds` [E], `expertsOfRank` R lists, `bitmask` [R, ⌈E/32⌉] u32.
public struct ExpertAssignment: Sendable, Hashable, CustomStringConvertible {
    /// E.
    public let experts: Int
    /// R.
    public let ranks: Int
    /// [E] the rank that owns each expert.
    public let owners: [Int32]
    /// R lists: the experts each rank owns, ascending.
    public let expertsOfRank: [[Int]]
    /// [E] each expert's index among its owner's experts.
    public let localIds: [Int32]

    /// Validates an owner list: one entry per expert, each a rank in 0..<ranks, no rank without experts.
    public init(owners: [Int], ranks: Int) throws {
        guard ranks >= 1 else { throw ExpertParallelError.invalidAssignment("need at least 1 rank, got \(ranks)") }
        guard !owners.isEmpty else { throw ExpertParallelError.invalidAssignment("the map lists no experts") }
        guard owners.count >= ranks else {
            throw ExpertParallelError.invalidAssignment(
                "\(owners.count) experts cannot be split over \(ranks) ranks (every rank needs one); use at most \(owners.count) ranks")
        }
        var lists = [[Int]](repeating: [], count: ranks)
        var localIds = [Int32](repeating: 0, count: owners.count)
        for (expert, owner) in owners.enumerated() {
            guard owner >= 0 && owner < ranks else {
                throw ExpertParallelError.invalidAssignment(
                    "expert \(expert) is mapped to rank \(owner), but ranks are 0...\(ranks - 1)")
            }
            localIds[expert] = Int32(lists[owner].count)
            lists[owner].append(expert)
        }
        let empty = lists.indices.filter { lists[$0].isEmpty }
        guard empty.isEmpty else {
            throw ExpertParallelError.invalidAssignment(
                "rank\(empty.count > 1 ? "s" : "") \(empty.map(String.init).joined(separator: ", ")) own\(empty.count > 1 ? "" : "s") no expert; "
                    + "give every rank at least one expert or run with fewer ranks")
        }
        self.experts = owners.count
        self.ranks = ranks
        self.owners = owners.map { Int32($0) }
        self.expertsOfRank = lists
        self.localIds = localIds
    }

    /// Validates per-rank expert lists: R lists covering 0..<experts, each expert exactly once.
    public init(expertsOfRank lists: [[Int]], experts: Int) throws {
        var owners = [Int](repeating: -1, count: experts)
        for (rank, list) in lists.enumerated() {
            for expert in list {
                guard expert >= 0 && expert < experts else {
                    throw ExpertParallelError.invalidAssignment(
                        "rank \(rank) lists expert \(expert), but experts are 0...\(experts - 1)")
                }
                guard owners[expert] < 0 else {
                    throw ExpertParallelError.invalidAssignment(
                        "expert \(expert) is listed by rank \(owners[expert]) and by rank \(rank); every expert needs exactly one owner")
                }
                owners[expert] = rank
            }
        }
        let missing = owners.indices.filter { owners[$0] < 0 }
        guard missing.isEmpty else {
            throw ExpertParallelError.invalidAssignment(
                "expert\(missing.count > 1 ? "s" : "") \(Self.abbreviate(missing)) \(missing.count > 1 ? "are" : "is") owned by no rank")
        }
        try self.init(owners: owners, ranks: lists.count)
    }

    /// Contiguous blocks (the default): rank r owns a run of experts; when R does not divide E the first
    /// E mod R ranks own one more.
    public static func contiguous(experts: Int, ranks: Int) throws -> ExpertAssignment {
        guard ranks >= 1, experts >= ranks else {
            throw ExpertParallelError.invalidAssignment(
                "\(experts) experts cannot be split over \(ranks) ranks (every rank needs at least one expert)")
        }
        var owners: [Int] = []
        owners.reserveCapacity(experts)
        for rank in 0..<ranks {
            let count = experts / ranks + (rank < experts % ranks ? 1 : 0)
            owners.append(contentsOf: repeatElement(rank, count: count))
        }
        return try ExpertAssignment(owners: owners, ranks: ranks)
    }

    /// Expert e on rank e mod R.
    public static func roundRobin(experts: Int, ranks: Int) throws -> ExpertAssignment {
        guard ranks >= 1, experts >= ranks else {
            throw ExpertParallelError.invalidAssignment(
                "\(experts) experts cannot be split over \(ranks) ranks (every rank needs at least one expert)")
        }
        return try ExpertAssignment(owners: (0..<experts).map { $0 % ranks }, ranks: ranks)
    }

    /// Parses `--expert-map`: `contiguous` (default), `round-robin`, an inline list (`0,0,1,1` or `[0,0,1,1]`:
    /// the owner of each expert, or `[[0,1],[2,3]]`: the experts of each rank), or the path of a JSON file
    /// holding either list form.
    public static func parse(_ spec: String, experts: Int, ranks: Int) throws -> ExpertAssignment {
        let trimmed = spec.trimmingWhitespace()
        switch trimmed {
        case "", "contiguous": return try contiguous(experts: experts, ranks: ranks)
        case "round-robin": return try roundRobin(experts: experts, ranks: ranks)
        default: break
        }
        let isInline = trimmed.first == "[" || trimmed.allSatisfy { $0.isNumber || $0 == "," || $0 == " " }
        let text: String
        if isInline {
            text = trimmed.first == "[" ? trimmed : "[\(trimmed)]"
        } else {
            do { text = try TextFile.read(trimmed) } catch let error as ExpertParallelError {
                throw ExpertParallelError.invalidAssignment(
                    "'\(trimmed)' is neither contiguous, round-robin, a list like 0,0,1,1 nor a readable JSON file (\(error))")
            }
        }
        let value: IntegerListJSON
        do { value = try IntegerListJSON.parse(text) } catch let error as ExpertParallelError {
            throw ExpertParallelError.invalidAssignment("\(isInline ? "inline map" : "map file \(trimmed)"): \(error)")
        }
        let assignment: ExpertAssignment
        switch value {
        case .flat(let owners):
            guard owners.count == experts else {
                throw ExpertParallelError.invalidAssignment(
                    "the map gives owners for \(owners.count) experts; the model has \(experts)")
            }
            assignment = try ExpertAssignment(owners: owners, ranks: ranks)
        case .nested(let lists):
            guard lists.count == ranks else {
                throw ExpertParallelError.invalidAssignment("the map lists experts for \(lists.count) ranks; running \(ranks) ranks")
            }
            assignment = try ExpertAssignment(expertsOfRank: lists, experts: experts)
        }
        return assignment
    }

    @inlinable public func owner(of expert: Int) -> Int { Int(owners[expert]) }

    /// [R, ⌈E/32⌉]: bit e mod 32 of word e/32 of row r is set iff rank r owns expert e (the device-side form).
    public var bitmask: [UInt32] {
        let words = (experts + 31) / 32
        var mask = [UInt32](repeating: 0, count: ranks * words)
        for e in 0..<experts { mask[owner(of: e) * words + e / 32] |= 1 << UInt32(e % 32) }
        return mask
    }

    /// A stable 64-bit fingerprint (FNV-1a of R and the owners), compared between ranks at rendezvous.
    public var digest: UInt64 {
        var hash = Fingerprint()
        hash.mix(UInt64(ranks))
        for owner in owners { hash.mix(UInt64(UInt32(bitPattern: owner))) }
        return hash.value
    }

    public var description: String {
        expertsOfRank.enumerated().map { "rank \($0.offset): experts \(Self.abbreviate($0.element))" }
            .joined(separator: "; ")
    }

    /// "0-3, 7, 9-10".
    static func abbreviate(_ values: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < values.count {
            var j = i
            while j + 1 < values.count && values[j + 1] == values[j] + 1 { j += 1 }
            parts.append(j > i ? "\(values[i])-\(values[j])" : "\(values[i])")
            i = j + 1
        }
        return parts.joined(separator: ", ")
    }
}

/// FNV-1a over 64-bit words: a stable fingerprint for comparing what ranks loaded.
struct Fingerprint {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func mix(_ word: UInt64) {
        var w = word
        for _ in 0..<8 {
            value ^= w & 0xFF
            value &*= 0x100_0000_01B3
            w >>= 8
        }
    }

    mutating func mix(bytes: UnsafeRawBufferPointer) {
        for byte in bytes {
            value ^= UInt64(byte)
            value &*= 0x100_0000_01B3
        }
    }
}

/// The two JSON shapes an expert map file may hold. A deliberately small parser: arrays of non-negative
/// integers, one or two levels deep, whitespace anywhere.
enum IntegerListJSON: Equatable {
    case flat([Int])
    case nested([[Int]])

    static func parse(_ text: String) throws -> IntegerListJSON {
        var parser = Parser(bytes: Array(text.utf8))
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.index == parser.bytes.count else { throw parser.error("unexpected text after the list") }
        switch value {
        case .number: throw parser.error("expected a list, found a single number")
        case .list(let items):
            if items.allSatisfy({ if case .number = $0 { true } else { false } }) {
                return .flat(items.map { if case .number(let n) = $0 { n } else { 0 } })
            }
            var lists: [[Int]] = []
            for item in items {
                guard case .list(let inner) = item else { throw parser.error("mixes numbers and lists") }
                var numbers: [Int] = []
                for element in inner {
                    guard case .number(let n) = element else { throw parser.error("lists nest deeper than two levels") }
                    numbers.append(n)
                }
                lists.append(numbers)
            }
            return .nested(lists)
        }
    }

    private indirect enum Value {
        case number(Int)
        case list([Value])
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        func error(_ why: String) -> ExpertParallelError {
            .invalidArgument("\(why) (at character \(index + 1))")
        }

        mutating func skipWhitespace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }

        mutating func value(depth: Int) throws -> Value {
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of text") }
            if bytes[index] == UInt8(ascii: "[") {
                guard depth < 2 else { throw error("lists nest deeper than two levels") }
                index += 1
                var items: [Value] = []
                skipWhitespace()
                if index < bytes.count && bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .list(items)
                }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipWhitespace()
                    guard index < bytes.count else { throw error("unterminated list") }
                    if bytes[index] == UInt8(ascii: ",") {
                        index += 1
                        continue
                    }
                    guard bytes[index] == UInt8(ascii: "]") else { throw error("expected ',' or ']'") }
                    index += 1
                    return .list(items)
                }
            }
            var number = 0
            var digits = 0
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                number = number * 10 + Int(bytes[index] - 0x30)
                guard number < 1 << 31 else { throw error("number too large") }
                index += 1
                digits += 1
            }
            guard digits > 0 else { throw error("expected a non-negative integer or a list") }
            return .number(number)
        }
    }
}

/// Whole-file reads without Foundation.
enum TextFile {
    static func read(_ path: String) throws -> String {
        guard let file = fopen(path, "rb") else {
            throw ExpertParallelError.system(call: "fopen", object: path, errno: errno)
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count {
                if ferror(file) != 0 { throw ExpertParallelError.system(call: "fread", object: path, errno: errno) }
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
