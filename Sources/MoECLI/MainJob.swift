import ArgumentParser
import MoECore

/// `moe` with no arguments: a one-layer gpt-oss-20b-shaped model with synthetic weights on the best available
/// backend, verified against the reference, then benchmarked.
struct MainJob: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "The main job (the default): verify and benchmark a gpt-oss-20b-shaped layer on the best backend.")

    @Option(help: "Backend: auto, cpu or cuda.")
    var backend: BackendChoice = .auto

    @Option(help: "Built-in shape with synthetic weights.")
    var preset: MoEPreset = .gptOss20b

    func run() throws {
        let weights = try SyntheticModel.layer(config: preset.config, seed: 1)
        let (engine, why) = try BackendRegistry.make(backend, weights: weights)
        print("MoEKit main job: one \(preset.rawValue) MoE layer (\(weights.config)), synthetic weights")
        print("backend: \(engine.detail) [\(why)]")
        _ = try Bench.run(
            engine: engine, weights: weights,
            settings: BenchSettings(tokens: nil, routing: .renormalize, iterations: nil, seconds: 1.0, warmup: 1, seed: 1),
            preset: preset.rawValue, modelPath: nil)
    }
}
