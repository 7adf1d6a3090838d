/// The conformance suite every backend runs against the float64 reference (`moe check`, and tests):
/// many shapes, seeds and routing situations, each judged by relative L2 ≤ 1e-2, the same experts wherever the
/// reference's k-th and (k+1)-th logits differ by more than 1e-3, and identical bits on a second run.
public enum Conformance {
    /// How a case bends the router to create a routing situation.
    public enum Skew: String, Sendable {
        case none
        /// Expert 0 gets every token (a huge router bias).
        case allOnOneExpert = "all tokens on expert 0"
        /// The last expert gets no token (a hugely negative bias).
        case starvedExpert = "last expert gets nothing"
        /// Every seventh MXFP4 block of both expert stacks gets a scale byte of 129–132 (2^2–2^5): the GPU decode's
        /// slow path, which the synthetic scales (around unit variance) never reach.
        case largeScales = "large block scales"
    }

    public struct Case: Sendable, CustomStringConvertible {
        public var name: String
        public var config: MoEConfig
        public var tokens: Int
        public var mode: RoutingMode
        public var seed: UInt64
        public var skew: Skew

        public var description: String { "\(name) T=\(tokens) \(mode.rawValue) seed=\(seed)" }
    }

    public struct Outcome: Sendable {
        public var testCase: Case
        public var passed: Bool
        public var relativeL2: Double
        public var routingMismatches: Int
        public var detail: String
    }

    /// The cases: awkward small shapes always; gpt-oss shapes unless `quick`.
    public static func cases(quick: Bool) -> [Case] {
        var out: [Case] = []
        let small: [(String, MoEConfig, [Int])] = [
            ("tiny E=8 k=4 H=128 I=96", MoEPreset.tiny.config, [1, 7, 64, 200]),
            ("odd H=96 I=160 E=5 k=3", MoEConfig(hidden: 96, intermediate: 160, experts: 5, topK: 3), [1, 2, 13, 130]),
            ("k=E E=4 H=64 I=64", MoEConfig(hidden: 64, intermediate: 64, experts: 4, topK: 4), [1, 9]),
            ("k=1 E=6 H=32 I=32", MoEConfig(hidden: 32, intermediate: 32, experts: 6, topK: 1), [1, 17]),
            ("limit 2 H=160 I=224 E=16 k=4", MoEConfig(hidden: 160, intermediate: 224, experts: 16, topK: 4, swigluLimit: 2), [7, 33]),
        ]
        var seed: UInt64 = 100
        for (name, config, tokenCounts) in small {
            for T in tokenCounts {
                for mode in RoutingMode.allCases {
                    seed += 1
                    out.append(Case(name: name, config: config, tokens: T, mode: mode, seed: seed, skew: .none))
                }
            }
        }
        let tiny = MoEPreset.tiny.config
        // 300 tokens: past the one-block plan, so the multi-block placement sees one expert take most slots of a block.
        for skew in [Skew.allOnOneExpert, .starvedExpert, .largeScales] {
            for T in [1, 7, 65, 300] {
                seed += 1
                out.append(Case(name: "tiny, \(skew.rawValue)", config: tiny, tokens: T, mode: .renormalize, seed: seed, skew: skew))
            }
        }
        if !quick {
            for (preset, tokenCounts) in [(MoEPreset.gptOss20b, [1, 3, 7, 32]), (.gptOss120b, [1, 16])] {
                for T in tokenCounts {
                    seed += 1
                    out.append(Case(name: preset.rawValue, config: preset.config, tokens: T, mode: .renormalize, seed: seed, skew: .none))
                }
            }
            seed += 1
            out.append(Case(name: "gpt-oss-20b", config: MoEPreset.gptOss20b.config, tokens: 5, mode: .softmaxFirst, seed: seed, skew: .none))
        }
        return out
    }

    /// The weights of a case (synthetic, with the case's skew applied).
    public static func weights(for c: Case) throws -> MoELayerWeights {
        var w = try SyntheticModel.layer(config: c.config, seed: c.seed)
        switch c.skew {
        case .none: break
        case .allOnOneExpert: w.routerBias[0] = 64
        case .starvedExpert: w.routerBias[c.config.experts - 1] = -64
        case .largeScales:
            // Every seventh block from `first`, its scale byte 129 + (index / 7) % 4.
            func enlarge(_ scales: inout [UInt8], first: Int) {
                for i in stride(from: first, to: scales.count, by: 7) { scales[i] = UInt8(129 + i / 7 % 4) }
            }
            enlarge(&w.gateUp.scales, first: 0)
            enlarge(&w.down.scales, first: 3)
        }
        return w
    }

    /// Why the case's skew did not take, or nil: its weights (`weights(for:)`) and the experts a backend chose.
    public static func skewNotApplied(_ c: Case, weights w: MoELayerWeights, topkIds: [Int32]) -> String? {
        switch c.skew {
        case .none:
            return nil
        case .allOnOneExpert:
            let first = (0..<c.tokens).allSatisfy { topkIds[$0 * c.config.topK] == 0 }
            return first ? nil : "expert 0 is not every token's first choice"
        case .starvedExpert:
            return topkIds.contains(Int32(c.config.experts - 1)) ? "the starved expert was chosen" : nil
        case .largeScales:
            let large = w.gateUp.scales.contains { $0 > 128 } && w.down.scales.contains { $0 > 128 }
            return large ? nil : "no block scale above 128"
        }
    }

    /// Runs one case on a backend built by `make`.
    public static func run(_ c: Case, make: (MoELayerWeights) throws -> any MoEBackend) -> Outcome {
        do {
            let w = try weights(for: c)
            let backend = try make(w)
            let x = SyntheticModel.hiddenStates(tokens: c.tokens, hidden: c.config.hidden, seed: c.seed)
            let reference = try ReferenceMoE.forward(weights: w, input: x, tokens: c.tokens, mode: c.mode)
            let first = try backend.forward(x, tokens: c.tokens, routing: c.mode, profiler: nil)
            let second = try backend.forward(x, tokens: c.tokens, routing: c.mode, profiler: nil)
            let error = Accuracy.relativeL2(first.hidden, reference.hidden)
            let mismatches = Accuracy.routingMismatches(
                ids: first.topkIds, reference: reference, tokens: c.tokens, experts: c.config.experts, k: c.config.topK)
            var problems: [String] = []
            if !(error <= 1e-2) { problems.append("rel L2 \(error) > 1e-2") }
            if !mismatches.isEmpty { problems.append("tokens \(mismatches.prefix(5)) chose other experts") }
            if first.hidden.map(\.bitPattern) != second.hidden.map(\.bitPattern) || first.topkIds != second.topkIds {
                problems.append("a second run gave different bits (a race?)")
            }
            if let skew = skewNotApplied(c, weights: w, topkIds: first.topkIds) { problems.append("skew not applied: \(skew)") }
            return Outcome(
                testCase: c, passed: problems.isEmpty, relativeL2: error, routingMismatches: mismatches.count,
                detail: problems.isEmpty ? "" : problems.joined(separator: "; "))
        } catch {
            return Outcome(testCase: c, passed: false, relativeL2: .nan, routingMismatches: 0, detail: "\(error)")
        }
    }
}
