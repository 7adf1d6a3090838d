import ArgumentParser
import MoECore

extension RoutingMode: ExpressibleByArgument {}
extension MoEPreset: ExpressibleByArgument {}

/// Which backend to run on; `auto` picks the best available one and says why.
enum BackendChoice: String, CaseIterable, ExpressibleByArgument, Sendable {
    case auto, cpu, cuda
}

/// Where a layer's weights come from: a built-in preset with synthetic weights, or a model directory.
struct ModelOptions: ParsableArguments {
    @Option(help: "Built-in shape with synthetic weights: \(MoEPreset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: MoEPreset?

    @Option(help: "A Hugging Face gpt-oss model directory (config.json + .safetensors).")
    var model: String?

    @Option(help: "Layer of the model directory.")
    var layer: Int = 0

    @Option(help: "Seed of the synthetic weights and inputs.")
    var seed: UInt64 = 1

    func validate() throws {
        if preset != nil && model != nil { throw ValidationError("give either --preset or --model, not both") }
        if layer < 0 { throw ValidationError("--layer must be ≥ 0") }
    }

    /// Loads (or synthesises) the layer; `defaultPreset` when neither option is given.
    func loadWeights(defaultPreset: MoEPreset) throws -> (weights: MoELayerWeights, source: String) {
        if let model {
            return (try ModelLoading.loadLayer(directory: model, layer: layer), "\(model) layer \(layer)")
        }
        let preset = preset ?? defaultPreset
        return (try SyntheticModel.layer(config: preset.config, seed: seed), "\(preset.rawValue) (synthetic, seed \(seed))")
    }
}

/// A comma-separated list of token counts.
struct TokenList: ExpressibleByArgument, Sendable {
    var values: [Int]
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 1 }) else { return nil }
        values = parts.map { $0! }
    }
    init(_ values: [Int]) { self.values = values }
}
