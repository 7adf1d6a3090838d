import ArgumentParser
import MoECheckpoint
import MoECore

/// `moe forward`: one MoE layer of a model directory over a file of hidden states. The work is `ForwardJob.run`
/// (MoECheckpoint); this file only parses arguments and picks the backend.
struct ForwardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Run one MoE layer of a model directory on hidden states from a file.",
        discussion: "Input: a .safetensors file with hidden_states [T, H], BF16 or F32 (F32 is rounded to bf16 on entry); every value must be finite. Output: hidden_states [T, H] F32, topk_ids [T, k] I32 (by descending weight), topk_weights [T, k] F32.")

    @Option(help: "A Hugging Face gpt-oss model directory (config.json + .safetensors).")
    var model: String

    @Option(help: "The layer to run (0-based).")
    var layer: Int

    @Option(help: "Input .safetensors holding hidden_states [T, H].")
    var input: String

    @Option(help: "Output .safetensors to write.")
    var output: String

    @Option(help: "Backend: auto, cpu or cuda.")
    var backend: BackendChoice = .auto

    @Option(help: "Routing mode: renormalize or softmax-first.")
    var routing: RoutingMode = .renormalize

    @OptionGroup(title: "Expert parallelism") var parallel: ExpertParallelFlags

    @Option(help: "Write a per-stage profile (table, JSON summary, Chrome trace) of the forward into this directory.")
    var profile: String?

    func validate() throws {
        if profile != nil && parallel.isRequested {
            throw ValidationError("--profile is not available with --ranks; profile a single-rank forward, or use moe bench --ranks for per-phase times")
        }
    }

    func run() throws {
        if parallel.isRequested {
            return try ExpertParallelForwardCommand.run(
                flags: parallel, model: model, layer: layer, input: input, output: output, backend: backend, routing: routing)
        }
        var why = ""
        let profiler = profile.map { _ in Profiler() }
        let request = ForwardJob.Request(
            model: model, layer: layer, input: input, output: output, routing: routing, profiler: profiler)
        let summary = try ForwardJob.run(request) { weights in
            let made = try BackendRegistry.make(backend, weights: weights)
            why = made.why
            return made.backend
        }
        if let profile, let profiler {
            let files = try ProfileReport.write(profilers: [profiler], ceilings: nil, name: "forward", to: profile)
            print("profile: \(files.table), \(files.summary)\(files.trace.map { ", " + $0 } ?? "")")
        }
        print("wrote \(output): \(summary.tokens) token\(summary.tokens == 1 ? "" : "s"), layer \(layer) of \(model) (\(summary.config)), \(routing.rawValue), \(summary.backend) [\(why)]")
    }
}
