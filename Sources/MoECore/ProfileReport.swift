#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What a `Profiler` recorded, summarised per stage against the machine's measured ceilings, with the three
/// outputs engineers use: a text table, a Chrome trace (Perfetto / chrome://tracing) and a JSON summary.
///
/// Stages are aggregated over every record and rank: `seconds` is the sum of the stage's scope durations, and
/// `share` is that sum over the sum for all stages (so shares add up to 1 even when ranks overlap in time).
public struct ProfileReport: Sendable {
    /// One stage over all its calls (all ranks).
    public struct StageSummary: Sendable, Equatable {
        public var stage: String
        public var calls: Int
        /// Sum of the scope durations.
        public var seconds: Double
        /// seconds / (sum of seconds over all stages).
        public var share: Double
        public var flops: Double
        public var bytes: Double

        public var meanSeconds: Double { calls > 0 ? seconds / Double(calls) : 0 }
        /// Achieved rate; 0 when no time was recorded.
        public var tflops: Double { seconds > 0 ? flops / seconds / 1e12 : 0 }
        public var gbps: Double { seconds > 0 ? bytes / seconds / 1e9 : 0 }
        /// Percentage of the measured arithmetic peak (nil without ceilings).
        public func percentOfPeak(_ ceilings: HardwareCeilings?) -> Double? {
            guard let ceilings, ceilings.peakTFLOPs > 0 else { return nil }
            return 100 * tflops / ceilings.peakTFLOPs
        }
        /// Percentage of the measured memory bandwidth (nil without ceilings).
        public func percentOfBandwidth(_ ceilings: HardwareCeilings?) -> Double? {
            guard let ceilings, ceilings.bandwidthGBps > 0 else { return nil }
            return 100 * gbps / ceilings.bandwidthGBps
        }
        /// The physical floor for this stage's work: the larger of bytes/bandwidth and flops/peak (nil without ceilings).
        public func floorSeconds(_ ceilings: HardwareCeilings?) -> Double? {
            guard let ceilings, ceilings.peakTFLOPs > 0, ceilings.bandwidthGBps > 0 else { return nil }
            return max(flops / (ceilings.peakTFLOPs * 1e12), bytes / (ceilings.bandwidthGBps * 1e9))
        }
    }

    /// Paths written by `write(to:)`.
    public struct Files: Sendable, Equatable {
        public var directory: String
        public var table: String
        public var summary: String
        /// nil when the trace was not asked for.
        public var trace: String?
    }

    public var name: String
    public var records: [Profiler.Record]
    public var ceilings: HardwareCeilings?
    /// When false, flops, bytes and rates are left out of every output (timing only).
    public var includeCosts: Bool
    /// Stages in pipeline order (`Stage.allCases`), then any other recorded names in order of first appearance.
    public private(set) var stages: [StageSummary]
    /// Sum of every record's duration, in seconds.
    public private(set) var totalSeconds: Double
    /// Ranks that recorded something, ascending.
    public private(set) var ranks: [Int]

    public init(name: String = "profile", records: [Profiler.Record], ceilings: HardwareCeilings? = nil, includeCosts: Bool = true) {
        self.name = name
        self.records = records
        self.ceilings = ceilings
        self.includeCosts = includeCosts
        var order = Stage.allCases.map(\.rawValue)
        var totals: [String: StageSummary] = [:]
        for r in records {
            if !order.contains(r.stage) { order.append(r.stage) }
            var s = totals[r.stage] ?? StageSummary(stage: r.stage, calls: 0, seconds: 0, share: 0, flops: 0, bytes: 0)
            s.calls += 1
            s.seconds += Double(r.durationNanoseconds) * 1e-9
            s.flops += r.flops
            s.bytes += r.bytes
            totals[r.stage] = s
        }
        let total = totals.values.reduce(0) { $0 + $1.seconds }
        self.totalSeconds = total
        self.stages = order.compactMap { name in
            guard var s = totals[name] else { return nil }
            s.share = total > 0 ? s.seconds / total : 0
            return s
        }
        self.ranks = Array(Set(records.map(\.rank))).sorted()
    }

    /// The report of one or more profilers (one per rank).
    public init(name: String = "profile", profilers: [Profiler], ceilings: HardwareCeilings? = nil, includeCosts: Bool = true) {
        self.init(name: name, records: profilers.flatMap(\.records), ceilings: ceilings, includeCosts: includeCosts)
    }

    public func stage(_ stage: Stage) -> StageSummary? { stages.first { $0.stage == stage.rawValue } }

    // MARK: table

    /// A fixed-width text table: one row per stage and a total row.
    public func table() -> String {
        var header = ["stage", "calls", "total ms", "mean us", "share"]
        if includeCosts {
            header += ["GFLOP", "MB", "TFLOP/s", "GB/s"]
            if ceilings != nil { header += ["% peak", "% bw", "% floor"] }
        }
        var rows: [[String]] = [header]
        func row(_ s: StageSummary) -> [String] {
            var cells = [
                s.stage, String(s.calls), Fixed.format(s.seconds * 1e3, digits: 3),
                Fixed.format(s.meanSeconds * 1e6, digits: 1), Fixed.format(100 * s.share, digits: 1) + "%",
            ]
            if includeCosts {
                cells += [
                    Fixed.significant(s.flops / 1e9), Fixed.significant(s.bytes / 1e6),
                    Fixed.significant(s.tflops), Fixed.significant(s.gbps),
                ]
                if ceilings != nil {
                    let floorShare = s.floorSeconds(ceilings).map { s.seconds > 0 ? 100 * $0 / s.seconds : 0 }
                    cells += [s.percentOfPeak(ceilings), s.percentOfBandwidth(ceilings), floorShare].map {
                        $0.map { Fixed.format($0, digits: 1) } ?? "-"
                    }
                }
            }
            return cells
        }
        rows += stages.map(row)
        let calls = stages.reduce(0) { $0 + $1.calls }
        rows.append(row(StageSummary(
            stage: "total", calls: calls, seconds: totalSeconds, share: totalSeconds > 0 ? 1 : 0,
            flops: stages.reduce(0) { $0 + $1.flops }, bytes: stages.reduce(0) { $0 + $1.bytes })))
        let widths = header.indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        var text = "profile \(name): \(records.count) scopes, ranks \(ranks.map(String.init).joined(separator: ","))\n"
        if let ceilings {
            text += "ceilings: \(Fixed.significant(ceilings.bandwidthGBps)) GB/s (\(ceilings.bandwidthMethod)), "
            text += "\(Fixed.significant(ceilings.peakTFLOPs)) TFLOP/s (\(ceilings.peakMethod))\n"
        }
        for (i, cells) in rows.enumerated() {
            let padded = cells.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return c == 0 ? cell + pad : pad + cell
            }
            text += padded.joined(separator: "  ") + "\n"
            if i == 0 { text += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n" }
        }
        return text
    }

    // MARK: Chrome trace

    /// Chrome trace event JSON (the "JSON Object Format"): one process and thread per rank (pid = tid = rank),
    /// one complete ("X") event per scope with `ts`/`dur` in microseconds and, with costs, `flops`/`bytes` args.
    public func chromeTraceJSON() -> String {
        var events: [JSONText] = []
        for rank in ranks {
            events.append(.object([
                ("name", .string("process_name")), ("ph", .string("M")), ("pid", .int(rank)), ("tid", .int(rank)),
                ("args", .object([("name", .string("rank \(rank)"))])),
            ]))
            events.append(.object([
                ("name", .string("thread_name")), ("ph", .string("M")), ("pid", .int(rank)), ("tid", .int(rank)),
                ("args", .object([("name", .string("rank \(rank) host"))])),
            ]))
        }
        for r in records {
            var args: [(String, JSONText)] = []
            if includeCosts { args = [("flops", .number(r.flops)), ("bytes", .number(r.bytes))] }
            events.append(.object([
                ("name", .string(r.stage)), ("cat", .string("moe")), ("ph", .string("X")),
                ("ts", .number(Double(r.startNanoseconds) / 1e3)), ("dur", .number(Double(r.durationNanoseconds) / 1e3)),
                ("pid", .int(r.rank)), ("tid", .int(r.rank)), ("args", .object(args)),
            ]))
        }
        return JSONText.object([
            ("traceEvents", .array(events)), ("displayTimeUnit", .string("ns")),
            ("otherData", .object([("name", .string(name))])),
        ]).rendered
    }

    // MARK: JSON summary

    /// The summary as JSON text (stable keys for tools): name, ranks, scopes, total_us, with_flops, ceilings,
    /// stages [{stage, calls, total_us, mean_us, share, and with costs: flops, bytes, TFLOPs, GBps,
    /// pct_of_peak_TFLOPs, pct_of_bandwidth, floor_us}], and files when given.
    public func summaryJSON(files: Files? = nil) -> String { summaryValue(files: files).rendered }

    /// The per-stage entries alone, for embedding in other JSON (e.g. a benchmark row's `stages`).
    public func stagesJSON() -> String { stagesValue().rendered }

    package func summaryValue(files: Files? = nil) -> JSONText {
        var fields: [(String, JSONText)] = [
            ("name", .string(name)), ("ranks", .array(ranks.map { .int($0) })), ("scopes", .int(records.count)),
            ("total_us", .number(totalSeconds * 1e6)), ("with_flops", .bool(includeCosts)),
        ]
        if let c = ceilings {
            fields.append(("ceilings", .object([
                ("bandwidth_GBps", .number(c.bandwidthGBps)), ("bandwidth_method", .string(c.bandwidthMethod)),
                ("peak_TFLOPs", .number(c.peakTFLOPs)), ("peak_method", .string(c.peakMethod)),
            ])))
        } else {
            fields.append(("ceilings", .null))
        }
        fields.append(("stages", stagesValue()))
        if let files {
            fields.append(("files", .object([
                ("directory", .string(files.directory)), ("table", .string(files.table)),
                ("summary", .string(files.summary)), ("trace", files.trace.map { .string($0) } ?? .null),
            ])))
        }
        return .object(fields)
    }

    package func stagesValue() -> JSONText {
        .array(stages.map { s in
            var f: [(String, JSONText)] = [
                ("stage", .string(s.stage)), ("calls", .int(s.calls)), ("total_us", .number(s.seconds * 1e6)),
                ("mean_us", .number(s.meanSeconds * 1e6)), ("share", .number(s.share)),
            ]
            if includeCosts {
                f += [
                    ("flops", .number(s.flops)), ("bytes", .number(s.bytes)), ("TFLOPs", .number(s.tflops)),
                    ("GBps", .number(s.gbps)),
                    ("pct_of_peak_TFLOPs", s.percentOfPeak(ceilings).map { .number($0) } ?? .null),
                    ("pct_of_bandwidth", s.percentOfBandwidth(ceilings).map { .number($0) } ?? .null),
                    ("floor_us", s.floorSeconds(ceilings).map { .number($0 * 1e6) } ?? .null),
                ]
            }
            return .object(f)
        })
    }

    // MARK: files

    /// Writes `<name>.txt` (table), `<name>.summary.json` and, when `trace`, `<name>.trace.json` into `directory`
    /// (created with its parents if missing). Returns the paths; the summary on disk lists them too.
    @discardableResult
    public func write(to directory: String, trace: Bool = true) throws -> Files {
        try FileOutput.makeDirectories(directory)
        let stem = (directory.hasSuffix("/") ? directory : directory + "/") + FileOutput.safeFileName(name)
        let files = Files(
            directory: directory, table: stem + ".txt", summary: stem + ".summary.json",
            trace: trace ? stem + ".trace.json" : nil)
        try FileOutput.write(table(), to: files.table)
        if let tracePath = files.trace { try FileOutput.write(chromeTraceJSON(), to: tracePath) }
        try FileOutput.write(summaryJSON(files: files) + "\n", to: files.summary)
        return files
    }

    /// What `moe bench --profile DIR` and `moe forward --profile DIR` call: the report of `profilers` (one per
    /// rank) written into `directory` with the trace.
    @discardableResult
    public static func write(
        profilers: [Profiler], ceilings: HardwareCeilings?, name: String = "profile", to directory: String
    ) throws -> Files {
        try ProfileReport(name: name, profilers: profilers, ceilings: ceilings).write(to: directory)
    }
}

// MARK: - helpers (Foundation-free)

/// A JSON value rendered by hand, so the core stays free of Foundation. Object keys keep their given order.
package indirect enum JSONText: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    /// Non-finite numbers render as null (JSON has no NaN or infinity).
    case number(Double)
    case string(String)
    case array([JSONText])
    case object([(String, JSONText)])

    package var rendered: String {
        var out = ""
        render(into: &out)
        return out
    }

    package func render(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .number(let d): out += d.isFinite ? JSONText.number(d) : "null"
        case .string(let s): JSONText.quote(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.render(into: &out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += "," }
                JSONText.quote(key, into: &out)
                out += ":"
                value.render(into: &out)
            }
            out += "}"
        }
    }

    /// Shortest round-trip text of a finite double; integral values without a fraction.
    package static func number(_ d: Double) -> String {
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) }
        return d.description
    }

    package static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// Fixed-point formatting without Foundation's `String(format:)`.
package enum Fixed {
    /// At least `figures` significant digits, at most 9 decimals: 1234.5 → "1235", 2.54841 → "2.55", 0.000123 → "0.000123".
    package static func significant(_ value: Double, figures: Int = 3) -> String {
        guard value.isFinite, value != 0 else { return format(value, digits: value == 0 ? 0 : 1) }
        let magnitude = Int((log10(abs(value))).rounded(.down))
        return format(value, digits: min(9, max(0, figures - 1 - magnitude)))
    }

    package static func format(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        guard scaled < 9e18 else { return value.description }
        let units = UInt64(scaled)
        let integer = units / UInt64(scale), fraction = units % UInt64(scale)
        var text = (value < 0 && units != 0 ? "-" : "") + String(integer)
        if digits > 0 {
            let f = String(fraction)
            text += "." + String(repeating: "0", count: digits - f.count) + f
        }
        return text
    }
}

package enum FileOutput {
    /// `mkdir -p`.
    package static func makeDirectories(_ path: String) throws {
        guard !path.isEmpty else { throw MoEError.io("profile output directory is empty; pass a directory path") }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component + "/"
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw MoEError.io("cannot create directory '\(prefix)': \(String(cString: strerror(errno)))")
            }
        }
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw MoEError.io("'\(path)' exists and is not a directory; choose another profile output directory")
        }
    }

    /// Writes `text` to `path` (created or truncated), all or nothing reported.
    package static func write(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw MoEError.io("cannot open '\(path)' for writing: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var text = text
        try text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = systemWrite(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw MoEError.io("cannot write '\(path)': \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
    }

    /// Keeps a report name usable as a file name: letters, digits, '-', '_', '.'; anything else becomes '_'.
    package static func safeFileName(_ name: String) -> String {
        let mapped = String(name.unicodeScalars.map { s -> Character in
            let ok = (s >= "a" && s <= "z") || (s >= "A" && s <= "Z") || (s >= "0" && s <= "9") || s == "-" || s == "_" || s == "."
            return ok ? Character(s) : "_"
        })
        return mapped.isEmpty || mapped.allSatisfy({ $0 == "." }) ? "profile" : mapped
    }
}

/// write(2), named apart from `FileOutput.write`.
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    Glibc.write(fd, buffer, count)
    #elseif canImport(Musl)
    Musl.write(fd, buffer, count)
    #else
    Darwin.write(fd, buffer, count)
    #endif
}
