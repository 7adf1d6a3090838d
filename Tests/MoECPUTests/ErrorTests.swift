import MoECore
import Testing

@testable import MoECPU

/// Bad input gets a typed error that names what was wrong; a bad kernel-path name is refused or reported.
@Suite struct ErrorTests {
    static let config = MoEConfig(hidden: 64, intermediate: 64, experts: 4, topK: 2)

    @Test func unknownKernelPathNamesTheValidOnes() {
        #expect(throws: MoEError.self) { try CPUKernelPath.named("avx9000", source: "--kernels") }
        do {
            _ = try CPUKernelPath.named("avx9000", source: "--kernels")
        } catch {
            let text = "\(error)"
            #expect(text.contains("avx9000") && text.contains("avx512-bf16") && text.contains("portable"), "\(text)")
        }
    }

    @Test func environmentVariableSelection() throws {
        #expect(CPUKernelPath.selection(environmentValue: nil) == (CPUKernelPath.best, nil))
        #expect(CPUKernelPath.selection(environmentValue: "") == (CPUKernelPath.best, nil))
        #expect(CPUKernelPath.selection(environmentValue: "portable") == (.portable, nil))
        let (path, note) = CPUKernelPath.selection(environmentValue: "fastest-please")
        #expect(path == CPUKernelPath.best)
        #expect(note?.contains("MOEKIT_CPU_KERNELS=fastest-please") == true, "\(note ?? "nil")")
        #expect(throws: MoEError.self) { try CPUKernelPath.fromEnvironmentValue("fastest-please") }
    }

    @Test func unsupportedPathsAreRefused() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 1)
        for path in CPUKernelPath.allCases where !path.isSupported {
            do {
                _ = try CPUBackend(weights: weights, kernels: path)
                Issue.record("\(path) is not supported here but was accepted")
            } catch let MoEError.backendUnavailable(backend, reason) {
                #expect(backend.contains(path.rawValue) && reason.contains(path.requirement), "\(backend): \(reason)")
            }
        }
        #if arch(x86_64)
        #expect(!CPUKernelPath.neon.isSupported)
        #elseif arch(arm64)
        #expect(CPUKernelPath.neon.isSupported && !CPUKernelPath.avx2.isSupported)
        #endif
        #expect(CPUKernelPath.portable.isSupported)
        #expect(CPUKernelPath.supported.last == .portable)
    }

    @Test func badInputThrowsTypedErrors() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 2)
        let backend = CPUBackend(weights: weights, workers: 2)
        let H = Self.config.hidden
        #expect(throws: MoEError.shapeMismatch("need at least 1 token, got 0")) {
            try backend.forward([], tokens: 0, routing: .renormalize, profiler: nil)
        }
        #expect(throws: MoEError.self) {
            try backend.forward([Float](repeating: 0, count: H + 1), tokens: 1, routing: .renormalize, profiler: nil)
        }
        var x = SyntheticModel.hiddenStates(tokens: 3, hidden: H, seed: 1)
        x[2 * H + 5] = .nan
        do {
            _ = try backend.forward(x, tokens: 3, routing: .renormalize, profiler: nil)
            Issue.record("a NaN input was accepted")
        } catch let MoEError.nonFiniteInput(row, column, value) {
            #expect(row == 2 && column == 5 && value.isNaN)
        }
        x[2 * H + 5] = 0
        x[H + 1] = -.infinity
        var hidden = [Float](repeating: 0, count: 3 * H)
        var ids = [Int32](repeating: 0, count: 3 * 2)
        var topWeights = [Float](repeating: 0, count: 3 * 2)
        #expect(throws: MoEError.nonFiniteInput(row: 1, column: 1, value: -.infinity)) {
            try x.withUnsafeBufferPointer {
                try backend.forward(
                    input: $0.baseAddress!, tokens: 3, routing: .renormalize, hidden: &hidden, topkIds: &ids,
                    topkWeights: &topWeights, profiler: nil)
            }
        }
        #expect(throws: MoEError.shapeMismatch("need at least 1 token, got -1")) {
            try x.withUnsafeBufferPointer {
                try backend.forward(
                    input: $0.baseAddress!, tokens: -1, routing: .renormalize, hidden: &hidden, topkIds: &ids,
                    topkWeights: &topWeights, profiler: nil)
            }
        }
    }

    /// A NaN block scale (E8M0 255) in the checkpoint makes the outputs of the tokens routed there NaN, as in the
    /// reference, on every path: never a finite, silently wrong number.
    @Test(arguments: CPUKernelPath.supported)
    func nanScalesPropagate(path: CPUKernelPath) throws {
        var weights = try SyntheticModel.layer(config: Self.config, seed: 3)
        for e in 0..<Self.config.experts {
            // One block of W2's row 10 in every expert.
            weights.down.scales[(e * Self.config.hidden + 10) * (Self.config.intermediate / 32) + 1] = 255
        }
        let backend = try CPUBackend(weights: weights, workers: 2, kernels: path)
        let x = SyntheticModel.hiddenStates(tokens: 4, hidden: Self.config.hidden, seed: 3)
        let out = try backend.forward(x, tokens: 4, routing: .renormalize, profiler: nil)
        let reference = try ReferenceMoE.forward(weights: weights, input: x, tokens: 4, mode: .renormalize)
        for t in 0..<4 {
            for h in 0..<Self.config.hidden {
                let i = t * Self.config.hidden + h
                #expect(out.hidden[i].isNaN == reference.hidden[i].isNaN, "\(path) t=\(t) h=\(h): \(out.hidden[i]) vs \(reference.hidden[i])")
            }
        }
        #expect(out.hidden[10].isNaN)
    }

    /// An expert-parallel rank's backend (a subset of the experts) refuses a single-rank forward, and a bad subset
    /// is refused when the backend is made, each with a message that says what to do.
    @Test func aSubsetBackendRefusesSingleRankWorkAndBadSubsets() throws {
        let weights = try SyntheticModel.layer(config: Self.config, seed: 4)
        let share = try CPUBackend(weights: weights, workers: 1, experts: [1, 3])
        #expect(share.residentExperts == [1, 3])
        #expect(share.packedExpertBytes * 2 == CPUBackend(weights: weights, workers: 1).packedExpertBytes)
        let x = SyntheticModel.hiddenStates(tokens: 3, hidden: 64, seed: 5)
        do {
            _ = try share.forward(x, tokens: 3, routing: .renormalize, profiler: nil)
            Issue.record("a subset backend ran a single-rank forward")
        } catch {
            #expect("\(error)".contains("packs 2 of 4 experts") && "\(error)".contains("without `experts:`"), "\(error)")
        }
        for bad in [[], [2, 1], [1, 1], [0, 4], [-1]] {
            #expect(throws: MoEError.self, "\(bad)") { try CPUBackend(weights: weights, workers: 1, experts: bad) }
        }
    }
}
