// The rank program of the expert-parallel process tests: the same library entry points `moe launch`,
// `moe forward --ranks` and `moe bench --ranks` use, driven by a few flags, on synthetic models.
//
//   MoEParallelRankTool launch --ranks R [--comm C] [--timeout S] [--kill-grace S] [--job-id ID]
//       [--nodes N --node-rank i --master host:port] -- <command>
//   MoEParallelRankTool forward [--ranks R] (--preset P | --shape H,I,E,k) --tokens T [--seed S] [--layers L]
//       [--mode M] [--comm C] [--map M] [--max-tokens-per-rank N] [--workers W] [--timeout S] [--verify]
//       [--fault rank=R,phase=P,layer=L,action=kill|stall|exit|other-seed]
//   MoEParallelRankTool bench [--ranks R] (--preset P | --shape …) --tokens 1,8,64 [--iterations N]
//       [--warmup N] [--workers W] [--single-rank] [--json FILE]
import Foundation
import MoECPU
import MoECore
import MoEParallel

struct ToolError: Error, CustomStringConvertible {
    var description: String
}

struct Flags {
    var values: [String: String] = [:]
    var switches: Set<String> = []
    var rest: [String] = []

    init(_ arguments: ArraySlice<String>, switches names: Set<String>) throws {
        var i = arguments.startIndex
        while i < arguments.endIndex {
            let argument = arguments[i]
            if argument == "--" {
                rest = Array(arguments[(i + 1)...])
                return
            }
            guard argument.hasPrefix("--") else { throw ToolError(description: "unexpected argument \(argument)") }
            let name = String(argument.dropFirst(2))
            if names.contains(name) {
                switches.insert(name)
                i += 1
                continue
            }
            guard i + 1 < arguments.endIndex else { throw ToolError(description: "\(argument) needs a value") }
            values[name] = arguments[i + 1]
            i += 2
        }
    }

    func int(_ name: String, _ fallback: Int? = nil) throws -> Int {
        guard let text = values[name] else {
            if let fallback { return fallback }
            throw ToolError(description: "--\(name) is required")
        }
        guard let value = Int(text) else { throw ToolError(description: "--\(name) \(text) is not an integer") }
        return value
    }
}

func config(_ flags: Flags) throws -> (MoEConfig, String) {
    if let preset = flags.values["preset"] {
        guard let p = MoEPreset(rawValue: preset) else { throw ToolError(description: "unknown preset \(preset)") }
        return (p.config, preset)
    }
    guard let shape = flags.values["shape"] else { throw ToolError(description: "give --preset or --shape H,I,E,k") }
    let parts = shape.split(separator: ",").compactMap { Int($0) }
    guard parts.count == 4 else { throw ToolError(description: "--shape needs H,I,E,k") }
    return (MoEConfig(hidden: parts[0], intermediate: parts[1], experts: parts[2], topK: parts[3]), shape)
}

/// `rank=1,phase=dispatch,layer=0,action=kill`
struct Fault {
    var rank: Int
    var phase: ExpertParallelPhase?
    var layer: Int
    var action: String

    init(_ text: String) throws {
        var fields: [String: String] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { throw ToolError(description: "bad --fault \(text)") }
            fields[String(pair[0])] = String(pair[1])
        }
        guard let rank = fields["rank"].flatMap(Int.init), let action = fields["action"] else {
            throw ToolError(description: "--fault needs rank= and action=")
        }
        self.rank = rank
        self.action = action
        self.layer = fields["layer"].flatMap(Int.init) ?? 0
        if let name = fields["phase"] {
            guard let phase = ExpertParallelPhase.allCases.first(where: { "\($0)".replacingOccurrences(of: " ", with: "-") == name }) else {
                throw ToolError(description: "unknown phase \(name)")
            }
            self.phase = phase
        }
    }

    func hook() -> @Sendable (ExpertParallelPhase, Int) -> Void {
        let (phase, layer, action) = (self.phase, self.layer, self.action)
        return { current, currentLayer in
            guard current == phase, currentLayer == layer else { return }
            switch action {
            case "kill": kill(getpid(), SIGKILL)
            case "stall": while true { sleep(1000) }
            case "exit":
                FileHandle.standardError.write("injected failure: exiting at \(current) of layer \(currentLayer)\n".data(using: .utf8)!)
                exit(3)
            default: break
            }
        }
    }
}

func runForward(_ flags: Flags) throws -> Int32 {
    if let ranks = flags.values["ranks"].flatMap(Int.init),
        let code = try RankLauncher.launchSelfUnlessRank(
            ranks: ranks, comm: flags.values["comm"].flatMap(CommMode.init), timeoutSeconds: flags.values["timeout"].flatMap(Double.init))
    {
        return code
    }
    guard let environment = try RankEnvironment.current() else {
        throw ToolError(description: "not a rank: run through launch or give --ranks")
    }
    let (config, name) = try config(flags)
    let tokens = try flags.int("tokens")
    var seed = UInt64(try flags.int("seed", 1))
    var options = ExpertParallelOptions()
    options.expertMap = flags.values["map"] ?? "contiguous"
    options.maxTokensPerRank = try flags.int("max-tokens-per-rank", 4096)
    options.workers = try flags.int("workers", 1)
    if let fault = try flags.values["fault"].map(Fault.init), fault.rank == environment.rank {
        if fault.action == "other-seed" { seed += 1 } else { options.barrierHook = fault.hook() }
    }
    let mode = RoutingMode(rawValue: flags.values["mode"] ?? "renormalize") ?? .renormalize
    let comm = flags.values["comm"].flatMap(CommMode.init) ?? environment.comm ?? .symmetric
    let layers = try (0..<(try flags.int("layers", 1))).map { try SyntheticModel.layer(config: config, seed: seed, layer: $0) }
    let input = SyntheticModel.hiddenStates(tokens: tokens, hidden: config.hidden, seed: UInt64(try flags.int("seed", 1)))
    let runner = try ExpertParallelRunner(environment: environment, layers: layers, maxBatchTokens: tokens, options: options)
    let range = runner.tokenRange(tokens: tokens)
    print("rank \(environment.rank)/\(environment.world): \(name), tokens \(range), experts \(runner.assignment.expertsOfRank[environment.rank]), \(comm)")
    let output = try runner.forward(input, tokens: tokens, mode: mode, comm: comm)
    runner.close()
    guard let output else { return 0 }
    var digest: UInt64 = 0xCBF2_9CE4_8422_2325
    for value in output { digest = (digest ^ UInt64(value.bitPattern)) &* 0x100_0000_01B3 }
    print("output digest \(String(digest, radix: 16)) over \(tokens)×\(config.hidden) values")
    if flags.switches.contains("verify") {
        var expected = input
        for weights in layers {
            expected = try CPUBackend(weights: weights, workers: 1).forward(expected, tokens: tokens, routing: mode, profiler: nil).hidden
        }
        let differing = zip(output, expected).filter { $0.bitPattern != $1.bitPattern }.count
        if differing > 0 {
            print("NOT bit-identical to the single-rank forward: \(differing) of \(expected.count) values differ")
            return 1
        }
        print("bit-identical to the single-rank forward")
    }
    return 0
}

func runBench(_ flags: Flags) throws -> Int32 {
    if let ranks = flags.values["ranks"].flatMap(Int.init),
        let code = try RankLauncher.launchSelfUnlessRank(
            ranks: ranks, comm: nil, timeoutSeconds: flags.values["timeout"].flatMap(Double.init))
    {
        return code
    }
    guard let environment = try RankEnvironment.current() else {
        throw ToolError(description: "not a rank: run through launch or give --ranks")
    }
    let (config, name) = try config(flags)
    guard let tokenList = flags.values["tokens"]?.split(separator: ",").compactMap({ Int($0) }), !tokenList.isEmpty else {
        throw ToolError(description: "--tokens 1,8,64 is required")
    }
    var options = ExpertParallelOptions()
    options.workers = try flags.int("workers", 1)
    options.maxTokensPerRank = try flags.int("max-tokens-per-rank", 4096)
    options.expertMap = flags.values["map"] ?? "contiguous"
    let layer = try SyntheticModel.layer(config: config, seed: UInt64(try flags.int("seed", 1)))
    let runner = try ExpertParallelRunner(
        environment: environment, layers: [layer], maxBatchTokens: tokenList.max()!, options: options)
    var bench = ExpertParallelBenchOptions(tokenCounts: tokenList)
    bench.iterations = try flags.int("iterations", 20)
    bench.warmup = try flags.int("warmup", 3)
    bench.includeSingleRank = flags.switches.contains("single-rank")
    if let comm = flags.values["comm"].flatMap(CommMode.init) ?? environment.comm, flags.switches.contains("only") { bench.comms = [comm] }
    let report = try runner.benchmark(bench, modelName: "\(name) (\(config))")
    runner.close()
    guard let report else { return 0 }
    print(report.table())
    if let path = flags.values["json"] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: path))
    }
    return 0
}

func runLaunch(_ flags: Flags) throws -> Int32 {
    var options = LaunchOptions(ranks: try flags.int("ranks"), arguments: flags.rest)
    options.comm = flags.values["comm"].flatMap(CommMode.init)
    if let timeout = flags.values["timeout"].flatMap(Double.init) { options.timeoutSeconds = timeout }
    if let grace = flags.values["kill-grace"].flatMap(Double.init) { options.killGraceSeconds = grace }
    if let grace = flags.values["signal-grace"].flatMap(Double.init) { options.signalGraceSeconds = grace }
    options.jobID = flags.values["job-id"]
    options.nodes = try flags.int("nodes", 1)
    options.nodeRank = try flags.int("node-rank", 0)
    options.master = flags.values["master"]
    let outcome = try RankLauncher.run(options)
    return outcome.exitCode
}

let arguments = CommandLine.arguments
do {
    guard arguments.count >= 2 else { throw ToolError(description: "usage: MoEParallelRankTool launch|forward|bench …") }
    let flags = try Flags(arguments.dropFirst(2), switches: ["verify", "single-rank", "only"])
    let code: Int32
    switch arguments[1] {
    case "launch": code = try runLaunch(flags)
    case "forward": code = try runForward(flags)
    case "bench": code = try runBench(flags)
    case "linger":
        // A rank that finishes its work after SIGTERM (as a draining server does): ignores it, works on, exits 0.
        signal(SIGTERM, SIG_IGN)
        FileHandle.standardError.write("lingering\n".data(using: .utf8)!)
        usleep(UInt32((try flags.int("milliseconds", 1000)) * 1000))
        code = 0
    default: throw ToolError(description: "unknown command \(arguments[1])")
    }
    exit(code)
} catch {
    FileHandle.standardError.write("error: \(error)\n".data(using: .utf8)!)
    exit(2)
}
