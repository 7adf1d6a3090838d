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

    @Flag(help: "Instead of checking stages, time reads of the decode GEMMs' weight bytes (GEMM 1's and GEMM 2's at 1 token) with no math, under each in-flight layout the decode kernels choose between (default shape: gpt-oss-120b).")
    var stream = false

    func validate() throws {
        if variant != "all" && GemmVariant(rawValue: variant) == nil { throw ValidationError("unknown --variant \(variant)") }
        if [trace, timing, stream].filter({ $0 }).count > 1 {
            throw ValidationError("--trace, --timing and --stream are different measurements: pass one")
        }
    }

    func run() throws {
        if stream {  // only the shape matters: a preset's synthetic weights are not made
            let preset = model.preset ?? .gptOss120b
            let config = try model.model.map { _ in try model.loadWeights(defaultPreset: preset).weights.config } ?? preset.config
            print("model: \(model.model ?? preset.rawValue): \(config)")
            return try streamProbe(config)
        }
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
                    let (spans, ends) = try backend.kernelTraceBySM(input, tokens: T, routing: .renormalize)
                    print("T=\(T) \(plan): \(KernelTrace.describe(spans))")
                    print("T=\(T) \(KernelTrace.describeEnds(ends))")
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

    /// The stream probe at the sizes of the model's decode GEMMs: k experts' gate-up weights (GEMM 1) and down weights
    /// (GEMM 2), codes and scales, with the copy ceiling beside them.
    private func streamProbe(_ c: MoEConfig) throws {
        let runtime = try CUDARuntime.shared()
        let device = runtime.device
        let gemm1 = c.topK * (2 * c.intermediate * c.hidden / 2 + 2 * c.intermediate * c.hidden / 32)
        let gemm2 = c.topK * (c.hidden * c.intermediate / 2 + c.hidden * c.intermediate / 32)
        print("machine: \(device.summary)")
        let copy = try StreamProbe.copyCeiling(runtime: runtime)
        print("ceiling: \(String(format: "%.1f", copy.value)) GB/s (\(copy.method))")
        // A third size, 8× GEMM 1's, with a few layouts: the rate a long stream settles at, so that the two decode
        // sizes split into a per-launch fixed cost and bytes over that rate.
        // The resident layout is the 1-token kernel's own grid (k experts × its row blocks).
        let (first, second) = GemmVariant.choose(tokens: 1, hopper: device.architecture == "sm_90a")
        func blocks(_ variant: GemmVariant, rows: Int) -> Int {
            c.topK * ((rows + 16 * variant.rowGroupsPerBlock - 1) / (16 * variant.rowGroupsPerBlock))
        }
        let sizes = [("GEMM 1 at 1 token", gemm1, blocks(first, rows: 2 * c.intermediate)),
                     ("GEMM 2 at 1 token", gemm2, blocks(second, rows: c.hidden)),
                     ("8 × GEMM 1 (steady rate)", 8 * gemm1, blocks(first, rows: 2 * c.intermediate))]
        for (index, (name, bytes, residentBlocks)) in sizes.enumerated() {
            var layouts = StreamProbe.layouts(
                bytes: bytes, multiprocessors: device.multiprocessors, maxSharedPerBlock: device.maxSharedPerBlock,
                residentBlocks: residentBlocks)
            if index == 2 {
                layouts = layouts.filter { $0.copy == .registers || ($0.blocks == 2 * device.multiprocessors && $0.stepBytes == 4096) }
            }
            print("\(name): \(bytes) bytes; median of 30 back-to-back launches, each on bytes not in L2")
            print("layout".padding(44) + "      µs     GB/s  % of copy  in flight/SM")
            for r in try StreamProbe.measure(layouts, runtime: runtime) {
                let l = r.layout
                let perSM = l.inFlightPerWarp * l.warps / device.multiprocessors / 1024
                print(l.description.padding(44) + String(format: "%8.1f %8.1f %9.1f%% %9d KB", r.microseconds, r.gigabytesPerSecond, 100 * r.gigabytesPerSecond / copy.value, perSM))
            }
        }
    }
}
