import Testing

@testable import MoECore

@Suite struct SemanticsTests {
    @Test func swigluClampsGateAboveAndUpBothSides() {
        let alpha: Double = 1.702, limit: Double = 7
        func expected(_ gate: Double, _ up: Double) -> Double {
            let g = min(gate, limit), u = max(-limit, min(limit, up))
            return g * (1 / (1 + Double.expOf(-alpha * g))) * (u + 1)
        }
        for (gate, up) in [(0.5, 0.3), (9.0, 1.0), (-9.0, 1.0), (2.0, 12.0), (2.0, -12.0), (-30.0, -30.0)] {
            let value = SwiGLU.apply(gate: gate, up: up, alpha: alpha, limit: limit)
            #expect(abs(value - expected(gate, up)) <= 1e-12 * max(1, abs(value)), "gate \(gate) up \(up)")
            let single = SwiGLU.apply(gate: Float(gate), up: Float(up), alpha: Float(alpha), limit: Float(limit))
            #expect(abs(Double(single) - expected(gate, up)) <= 1e-5 * max(1, abs(value)))
        }
        // Gate is clamped only from above: a very negative gate is not lifted to −limit.
        #expect(SwiGLU.apply(gate: -8.0, up: 0.0, alpha: alpha, limit: limit) != SwiGLU.apply(gate: -7.0, up: 0.0, alpha: alpha, limit: limit))
    }

    /// The reference written out by hand for one token on a 1-expert, k = 1 layer.
    @Test func referenceMatchesAHandComputation() throws {
        let config = MoEConfig(hidden: 32, intermediate: 32, experts: 2, topK: 1, swigluLimit: 7)
        let w = try SyntheticModel.layer(config: config, seed: 42)
        let x = SyntheticModel.hiddenStates(tokens: 1, hidden: 32, seed: 1)
        let out = try ReferenceMoE.forward(weights: w, input: x, tokens: 1, mode: .renormalize)
        let xd = x.map(Double.init)
        let logits = (0..<2).map { e in (0..<32).reduce(Double(w.routerBias[e])) { $0 + xd[$1] * Double(w.routerWeight[e * 32 + $1]) } }
        let e = logits[1] > logits[0] ? 1 : 0
        #expect(out.topkIds == [Int32(e)])
        #expect(out.topkWeights == [1])
        let w1 = w.gateUp.matrix(expert: e).decoded(), w2 = w.down.matrix(expert: e).decoded()
        var a = [Double](repeating: 0, count: 32)
        for i in 0..<32 {
            let gate = (0..<32).reduce(Double(w.gateUpBias[e * 64 + 2 * i])) { $0 + Double(w1[(2 * i) * 32 + $1]) * xd[$1] }
            let up = (0..<32).reduce(Double(w.gateUpBias[e * 64 + 2 * i + 1])) { $0 + Double(w1[(2 * i + 1) * 32 + $1]) * xd[$1] }
            a[i] = SwiGLU.apply(gate: gate, up: up, alpha: 1.702, limit: 7)
        }
        for h in 0..<32 {
            let y = (0..<32).reduce(Double(w.downBias[e * 32 + h])) { $0 + Double(w2[h * 32 + $1]) * a[$1] }
            #expect(abs(out.hidden[h] - y) <= 1e-9 * max(1, abs(y)))
        }
    }

    @Test func configValidationNamesTheField() {
        #expect(throws: MoEError.self) { try MoEConfig(hidden: 100, intermediate: 32, experts: 4, topK: 2).validate() }
        #expect(throws: MoEError.self) { try MoEConfig(hidden: 64, intermediate: 32, experts: 4, topK: 5).validate() }
        do {
            try MoEConfig(hidden: 64, intermediate: 33, experts: 4, topK: 2).validate()
        } catch {
            #expect("\(error)".contains("intermediate_size 33"))
        }
    }

    @Test func nonFiniteInputNamesTheFirstBadRow() {
        var x = [Float](repeating: 0.5, count: 4 * 32)
        x[2 * 32 + 5] = .nan
        x[3 * 32] = .infinity
        do {
            try InputCheck.validate(x, tokens: 4, hidden: 32)
            Issue.record("NaN input accepted")
        } catch let MoEError.nonFiniteInput(row, column, _) {
            #expect(row == 2 && column == 5)
        } catch {
            Issue.record("wrong error \(error)")
        }
        #expect(throws: MoEError.self) { try InputCheck.validate(x, tokens: 3, hidden: 32) }
    }

    /// Inputs are rounded to bf16 on entry: a finite float32 beyond bf16's range becomes ±Inf there, so it is refused
    /// as non-finite, naming why. The boundary is round-to-nearest-even at bf16's largest value 0x7F7F.
    @Test func valuesThatRoundToInfinityInBF16AreNonFinite() {
        #expect(BF16.isFiniteAfterRounding(BF16.float(0x7F7F)))
        #expect(BF16.isFiniteAfterRounding(Float(bitPattern: 0x7F7F_7FFF)))  // below the midpoint: rounds down
        #expect(!BF16.isFiniteAfterRounding(Float(bitPattern: 0x7F7F_8000)))  // the tie: 0x7F7F is odd, rounds up to Inf
        #expect(!BF16.isFiniteAfterRounding(-Float.greatestFiniteMagnitude))
        #expect(!BF16.isFiniteAfterRounding(.infinity) && !BF16.isFiniteAfterRounding(.nan))
        #expect(BF16.isFiniteAfterRounding(0) && BF16.isFiniteAfterRounding(-1e-45) && BF16.isFiniteAfterRounding(3.3e38))
        var x = [Float](repeating: 0.5, count: 2 * 32)
        x[32 + 7] = 3.4e38
        do {
            try InputCheck.validate(x, tokens: 2, hidden: 32)
            Issue.record("3.4e38 accepted: it is +Inf in bf16")
        } catch {
            #expect("\(error)".contains("row 1") && "\(error)".contains("column 7") && "\(error)".contains("rounds to infinity"), "\(error)")
        }
    }

    @Test func syntheticModelsAreDeterministicPerSeed() throws {
        let c = MoEPreset.tiny.config
        #expect(try SyntheticModel.layer(config: c, seed: 3) == SyntheticModel.layer(config: c, seed: 3))
        #expect(try SyntheticModel.layer(config: c, seed: 3) != SyntheticModel.layer(config: c, seed: 4))
        #expect(try SyntheticModel.layer(config: c, seed: 3, layer: 0) != SyntheticModel.layer(config: c, seed: 3, layer: 1))
    }

    @Test func weightShapesAreChecked() throws {
        let w = try SyntheticModel.layer(config: MoEPreset.tiny.config, seed: 1)
        #expect(throws: MoEError.self) {
            _ = try MoELayerWeights(
                config: w.config, routerWeight: Array(w.routerWeight.dropLast()), routerBias: w.routerBias,
                gateUp: w.gateUp, gateUpBias: w.gateUpBias, down: w.down, downBias: w.downBias)
        }
    }
}
