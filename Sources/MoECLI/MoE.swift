import ArgumentParser
import MoECore

/// `moe`: the MoEKit command-line tool. With no subcommand it runs the main job (`moe run`).
@main
struct MoE: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe",
        abstract: "MoEKit: expert-parallel MXFP4 Mixture-of-Experts inference.",
        discussion: "With no subcommand, runs the main job: a one-layer gpt-oss-20b-shaped layer with synthetic weights on the best available backend, verified against the float64 reference, then benchmarked.",
        subcommands: [
            MainJob.self,
            InfoCommand.self,
            CheckCommand.self,
            BenchCommand.self,
            InitCommand.self,
            ForwardCommand.self,
            CUDADebugCommand.self,
            LaunchCommand.self,
            ServeCommand.self,
        ],
        defaultSubcommand: MainJob.self)
}
