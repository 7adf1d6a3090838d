import MoECore
import SafeTensors

/// `moe forward`: one MoE layer of a model directory on a file of hidden states, result to a file. Lives here
/// (not in the CLI) so tests can run it without spawning a process; the CLI supplies the backend.
public enum ForwardJob {
    public struct Request: Sendable {
        public var model: String
        public var layer: Int
        public var input: String
        public var output: String
        public var routing: RoutingMode
        /// Records per-stage times, flops and bytes of the forward when given (`moe forward --profile`).
        public var profiler: Profiler?

        public init(
            model: String, layer: Int, input: String, output: String, routing: RoutingMode, profiler: Profiler? = nil
        ) {
            self.profiler = profiler
            self.model = model
            self.layer = layer
            self.input = input
            self.output = output
            self.routing = routing
        }
    }

    public struct Summary: Sendable {
        public var tokens: Int
        public var config: MoEConfig
        public var backend: String
    }

    /// Loads the layer, validates the input against it, runs `makeBackend(weights)` and writes the output.
    /// Everything is validated before the backend is built, so a bad file fails fast.
    public static func run(
        _ request: Request, makeBackend: (MoELayerWeights) throws -> any MoEBackend
    ) throws -> Summary {
        // The directory (and its mappings) is released once the layer is copied out.
        let weights = try ModelDirectory(path: request.model).layer(request.layer)
        let config = weights.config
        let (input, tokens) = try HiddenStatesFile.readInput(request.input, hidden: config.hidden)
        let backend = try makeBackend(weights)
        let result = try backend.forward(input, tokens: tokens, routing: request.routing, profiler: request.profiler)
        try HiddenStatesFile.writeOutput(
            request.output, result: result, tokens: tokens, config: config,
            metadata: [
                "model": request.model, "layer": String(request.layer), "routing": request.routing.rawValue,
                "backend": backend.detail,
            ])
        return Summary(tokens: tokens, config: config, backend: backend.detail)
    }
}
