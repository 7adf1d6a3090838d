import Testing

@testable import MoECore

@Suite struct RoutingTests {
    func route(_ logits: [Float], k: Int, mode: RoutingMode) -> ([Int32], [Float]) {
        var ids = [Int32](repeating: -1, count: k), weights = [Float](repeating: .nan, count: k)
        logits.withUnsafeBufferPointer { l in
            TopK.route(logits: l.baseAddress!, experts: logits.count, k: k, mode: mode, ids: &ids, weights: &weights)
        }
        return (ids, weights)
    }

    @Test func tiesGoToTheLowerExpertAndSlotsAreByDescendingWeight() {
        let (ids, weights) = route([1, 3, 3, 0, 3, 2], k: 3, mode: .renormalize)
        #expect(ids == [1, 2, 4])
        #expect(weights[0] == weights[1] && weights[1] == weights[2])
        let (ids2, _) = route([5, 1, 5, 7, 1, 1], k: 4, mode: .renormalize)
        #expect(ids2 == [3, 0, 2, 1])
    }

    @Test func renormalizeIsSoftmaxOverTheTopK() {
        let logits: [Float] = [0.5, -1, 2, 1.5, 0]
        let (ids, weights) = route(logits, k: 2, mode: .renormalize)
        #expect(ids == [2, 3])
        let e0 = Double.expOf(2), e1 = Double.expOf(1.5)
        #expect(abs(Double(weights[0]) - e0 / (e0 + e1)) < 1e-6)
        #expect(abs(Double(weights.reduce(0, +)) - 1) < 1e-6)
    }

    @Test func softmaxFirstIsNotRenormalised() {
        let logits: [Float] = [0.5, -1, 2, 1.5, 0]
        let (ids, weights) = route(logits, k: 2, mode: .softmaxFirst)
        #expect(ids == [2, 3])
        let total = logits.map { Double.expOf(Double($0)) }.reduce(0, +)
        #expect(abs(Double(weights[0]) - Double.expOf(2) / total) < 1e-6)
        #expect(abs(Double(weights[1]) - Double.expOf(1.5) / total) < 1e-6)
        #expect(weights.reduce(0, +) < 1)
    }

    @Test func randomLogitsMatchASortOracle() {
        var rng = SeededGenerator(seed: 5)
        for trial in 0..<2000 {
            let E = 1 + Int(rng.next() % 40), k = 1 + Int(rng.next() % UInt64(E))
            // Few distinct values so ties are common.
            let logits = (0..<E).map { _ in Float(Int(rng.next() % 7)) - 3 }
            let (ids, weights) = route(logits, k: k, mode: trial % 2 == 0 ? .renormalize : .softmaxFirst)
            let oracle = (0..<E).sorted { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }.prefix(k)
            #expect(ids.map(Int.init) == Array(oracle), "E=\(E) k=\(k) logits=\(logits)")
            for j in 1..<k { #expect(weights[j - 1] >= weights[j]) }
            if trial % 2 == 0 { #expect(abs(weights.reduce(0, +) - 1) < 1e-5) }
        }
    }
}

@Suite struct RoutingPlanTests {
    @Test func invariantsHoldOnRandomRouting() {
        var rng = SeededGenerator(seed: 9)
        for _ in 0..<300 {
            let E = 1 + Int(rng.next() % 20), k = 1 + Int(rng.next() % UInt64(E)), T = 1 + Int(rng.next() % 70)
            let tile = 1 + Int(rng.next() % 9)
            var ids = [Int32]()
            for _ in 0..<T {
                // k distinct experts per token, some slots padded (−1).
                var pool = Array(0..<E)
                for _ in 0..<k {
                    let pick = pool.remove(at: Int(rng.next() % UInt64(pool.count)))
                    ids.append(rng.next() % 10 == 0 ? -1 : Int32(pick))
                }
            }
            let plan = RoutingPlan(topkIds: ids, tokens: T, topK: k, experts: E, tileRows: tile)
            #expect(plan.validate() == nil, "\(plan.validate() ?? "")")
            #expect(Int(plan.expertCounts.reduce(0, +)) == ids.filter { $0 >= 0 }.count)
            // Expert-major, ties by slot, matches a stable sort.
            let oracle = (0..<ids.count).filter { ids[$0] >= 0 }.sorted { (ids[$0], $0) < (ids[$1], $1) }
            #expect(plan.sortedToSlot.map(Int.init) == oracle)
            for slot in 0..<ids.count where ids[slot] < 0 { #expect(plan.slotToSorted[slot] == -1) }
        }
    }

    @Test func unpaddedCountsSumToTokensTimesK() {
        let plan = RoutingPlan(topkIds: [0, 1, 1, 0, 2, 0], tokens: 3, topK: 2, experts: 4, tileRows: 2)
        #expect(plan.expertCounts == [3, 2, 1, 0])
        #expect(plan.expertOffsets == [0, 3, 5, 6, 6])
        #expect(plan.sortedToSlot == [0, 3, 5, 1, 2, 4])
        #expect(plan.tiles.map(\.rowCount) == [2, 1, 2, 1])
        #expect(plan.validate() == nil)
    }

    /// Fitted tiles (RoutingPlan.tileSizes) for every width list a registered kernel has, every row count to 8 tiles:
    /// ceil(rows / tileRows) tiles covering the rows, each ≤ tileRows and every one but the last a whole width; the
    /// columns multiplied (each tile at the narrowest width that holds it) never more than plain tiles', and equal to the
    /// fewest any split into that many tiles reaches (brute force over the widths' multisets).
    @Test func fittedTilesCoverTheRowsInTheFewestColumns() {
        let lists: [[Int]] = [[16, 24, 32], [32, 48], [32, 48, 64], [32, 40, 48, 64], [48, 64, 80, 96], [96, 128],
                              [128, 160, 192], [64, 128, 192]]
        func columns(_ sizes: [Int], _ widths: [Int]) -> Int {
            sizes.reduce(0) { sum, size in sum + widths.first { $0 >= size }! }
        }
        for widths in lists {
            let n = widths.last!
            for rows in 1...(8 * n) {
                let fitted = RoutingPlan.tileSizes(rows: rows, tileRows: n, widths: widths)
                let plain = RoutingPlan.tileSizes(rows: rows, tileRows: n)
                let count = (rows + n - 1) / n
                #expect(fitted.count == count && plain.count == count, "\(widths) \(rows)")
                #expect(fitted.reduce(0, +) == rows && fitted.allSatisfy { $0 > 0 && $0 <= n }, "\(widths) \(rows)")
                #expect(fitted.dropLast().allSatisfy { widths.contains($0) }, "\(widths) \(rows): \(fitted)")
                #expect(plain.dropLast().allSatisfy { $0 == n } && plain.last! == rows - n * (count - 1))
                // The fewest columns `count` tiles can reach: the least sum of `count` widths that is ≥ rows.
                var sums: Set<Int> = [0]
                for _ in 0..<count { sums = Set(sums.flatMap { s in widths.map { s + $0 } }) }
                let fewest = sums.filter { $0 >= rows }.min()!
                #expect(columns(fitted, widths) == fewest, "\(widths) \(rows): \(fitted)")
                #expect(columns(fitted, widths) <= columns(plain, widths))
            }
        }
        // The example in tileSizes' comment.
        #expect(RoutingPlan.tileSizes(rows: 260, tileRows: 192, widths: [128, 160, 192]) == [128, 132])
        #expect(RoutingPlan.tileSizes(rows: 260, tileRows: 192) == [192, 68])
    }

    @Test func aFittedPlanValidates() {
        var rng = SeededGenerator(seed: 11)
        let E = 8, k = 2, T = 700
        var ids = [Int32]()
        for _ in 0..<T {
            let first = Int32(rng.next() % UInt64(E))
            ids += [first, (first + 1 + Int32(rng.next() % UInt64(E - 1))) % Int32(E)]
        }
        let plan = RoutingPlan(topkIds: ids, tokens: T, topK: k, experts: E, tileRows: 96, tileWidths: [48, 64, 80, 96])
        #expect(plan.validate() == nil, "\(plan.validate() ?? "")")
        let plain = RoutingPlan(topkIds: ids, tokens: T, topK: k, experts: E, tileRows: 96)
        #expect(plan.tiles.count == plain.tiles.count && plan.tiles != plain.tiles)
        #expect(plan.sortedToSlot == plain.sortedToSlot)
        #expect(!RoutingPlan.validWidths([64, 48, 96], tileRows: 96) && !RoutingPlan.validWidths([48, 64], tileRows: 96))
        #expect(RoutingPlan.validWidths([], tileRows: 96) && RoutingPlan.validWidths([48, 64, 80, 96], tileRows: 96))
    }

    @Test func validateCatchesABrokenPlan() {
        var plan = RoutingPlan(topkIds: [0, 1, 1, 0], tokens: 2, topK: 2, experts: 2, tileRows: 4)
        #expect(plan.validate() == nil)
        var swapped = plan
        swapped.sortedToSlot.swapAt(0, 1)
        #expect(swapped.validate() != nil)
        var shifted = plan
        shifted.expertOffsets[1] += 1
        #expect(shifted.validate() != nil)
        var badTiles = plan
        badTiles.tiles[0].rowCount = 3
        #expect(badTiles.validate() != nil)
    }
}
