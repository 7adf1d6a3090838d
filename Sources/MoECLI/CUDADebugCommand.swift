import ArgumentParser
import Foundation
import MoECUDA
import MoECore

/// `moe cuda-debug`: one forward per (GEMM variant, token count, routing mode), each stage checked against a
/// host computation fed with the device's own previous-stage outputs (CUDABackend.stageCheck).
struct CUDADebugCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cuda-debug",
        abstract: "Check every stage of the CUDA layer separately (router, top-k, plan, GEMM 1, GEMM 2, reduce).")

    @OptionGroup var model: ModelOptions

    @Option(help: "Comma-separated token counts.")
    var tokens: TokenList = TokenList([1, 7, 33, 100])

    @Option(help: "GEMM kernel: all, or one of \(GemmVariant.allCases.map(\.rawValue).joined(separator: ", ")).")
    var variant: String = "all"

    @Flag(help: "Instead of checking stages, print each kernel's median device time (graph replays with event nodes).")
    var timing = false

    @Flag(help: "Instead of checking stages, print where each kernel ran inside replays of the plain layer graph (programmatic overlap included), from a build of the kernels that marks their spans with %globaltimer.")
    var trace = false

    func validate() throws {
        if variant != "all" && GemmVariant(rawValue: variant) == nil { throw ValidationError("unknown --variant \(variant)") }
        if trace && timing { throw ValidationError("--trace and --timing are two ways to time the kernels: pass one") }
    }

    func run() throws {
        let (weights, source) = try model.loadWeights(defaultPreset: .tiny)
        let variants = variant == "all" ? GemmVariant.allCases : [GemmVariant(rawValue: variant)!]
        let hopper = (try? CUDARuntime.shared())?.device.architecture == "sm_90a"
        print("model: \(source): \(weights.config)")
        if trace || timing {
            let backend = try CUDABackend(weights: weights, options: .init(gemmVariant: variant == "all" ? nil : variants[0]))
            for T in tokens.values {
                let input = SyntheticModel.hiddenStates(tokens: T, hidden: weights.config.hidden, seed: model.seed &+ UInt64(T))
                let plan = backend.launchPlan(tokens: T).variantDescription
                if trace {
                    let spans = try backend.kernelTrace(input, tokens: T, routing: .renormalize)
                    print("T=\(T) \(plan): \(KernelTrace.describe(spans))")
                } else {
                    let times = try backend.kernelTimes(input, tokens: T, routing: .renormalize)
                    let total = times.reduce(0) { $0 + $1.microseconds }
                    let parts = times.map { "\($0.kernel) \(String(format: "%.1f", $0.microseconds))" }.joined(separator: " | ")
                    print("T=\(T) \(plan): total \(String(format: "%.1f", total)) µs: \(parts)")
                }
            }
            return
        }
        var failures = 0
        for v in variants where hopper || !v.needsHopper {
            let backend = try CUDABackend(weights: weights, options: .init(gemmVariant: v))
            for T in tokens.values {
                for mode in RoutingMode.allCases {
                    let input = SyntheticModel.hiddenStates(tokens: T, hidden: weights.config.hidden, seed: model.seed &+ UInt64(T))
                    let report = try backend.stageCheck(weights: weights, input: input, tokens: T, mode: mode)
                    if !report.passed { failures += 1 }
                    print("\(v.rawValue) T=\(T) \(mode.rawValue): \(report.passed ? "PASS" : "FAIL")")
                    for line in report.lines where !line.passed || !report.passed {
                        print("    \(line.stage.padding(7)) \(line.passed ? "ok  " : "FAIL") \(line.detail)")
                    }
                }
            }
        }
        print(failures == 0 ? "all stages agree" : "\(failures) forward(s) with a failing stage")
        if failures > 0 { throw ExitCode.failure }
    }
}
