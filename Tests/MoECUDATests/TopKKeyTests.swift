import MoECore
import Testing

// Host model of the device top-k (moe_routing.cu, topk_token for E ≤ 256): each lane holds the order-preserving
// keys of experts lane, lane + 32, …; a round takes the warp's largest key and, among the lanes holding it, the
// smallest expert id, then clears that key. These tests check that this selection is exactly TopK's order (larger
// logit first, ties to the lower expert id), including −0 against +0, infinities and repeated values.

/// Mirrors topk_key in moe_routing.cu.
private func topkKey(_ v: Float) -> UInt32 {
    if v.isNaN { return 1 }
    let bits = (v == 0 ? Float(0) : v).bitPattern
    return bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
}

/// The device algorithm, lane by lane.
private func deviceTopK(_ logits: [Float], k: Int) -> [Int] {
    let experts = logits.count
    var keys = (0..<32).map { lane in (0..<8).map { i in lane + 32 * i < experts ? topkKey(logits[lane + 32 * i]) : 0 } }
    var ids: [Int] = []
    for _ in 0..<k {
        var laneBest = [UInt32](repeating: 0, count: 32), laneSlot = [Int](repeating: 0, count: 32)
        for lane in 0..<32 {
            for i in 0..<8 where keys[lane][i] > laneBest[lane] {
                laneBest[lane] = keys[lane][i]
                laneSlot[lane] = i
            }
        }
        let bestKey = laneBest.max()!
        let winner = (0..<32).map { laneBest[$0] == bestKey ? UInt32($0 + 32 * laneSlot[$0]) : UInt32.max }.min()!
        keys[Int(winner) % 32][Int(winner) / 32] = 0
        ids.append(Int(winner))
    }
    return ids
}

private func referenceTopK(_ logits: [Float], k: Int) -> [Int] {
    var ids = [Int32](repeating: 0, count: k), weights = [Float](repeating: 0, count: k)
    logits.withUnsafeBufferPointer { TopK.route(logits: $0.baseAddress!, experts: logits.count, k: k, mode: .renormalize, ids: &ids, weights: &weights) }
    return ids.map(Int.init)
}

@Test func theKeyOrderIsTheFloatOrder() {
    let values: [Float] = [-.infinity, -1e30, -2, -1, -1e-30, -0.0, 0, 1e-30, 1, 2, 1e30, .infinity]
    for (i, a) in values.enumerated() {
        for b in values[i...] {
            if a < b { #expect(topkKey(a) < topkKey(b), "\(a) < \(b)") }
            if a == b { #expect(topkKey(a) == topkKey(b), "\(a) == \(b)") }  // −0 and +0 included
        }
    }
}

@Test func theDeviceSelectionMatchesTopKOnRandomAndTiedLogits() {
    var generator = SeededGenerator(seed: 0x7017)
    for trial in 0..<400 {
        let experts = [1, 5, 32, 33, 100, 128, 200, 256][trial % 8]
        let k = min(experts, [1, 2, 4, 8][trial % 4])
        // Every third trial draws from 3 values (many ties, both zeros); others from a wide range.
        let logits: [Float] = (0..<experts).map { _ in
            trial % 3 == 0 ? [Float(-0.0), 0, 1.5][Int(generator.next() % 3)] : Float(Int64(generator.next() % 2001) - 1000) / 64
        }
        #expect(deviceTopK(logits, k: k) == referenceTopK(logits, k: k), "trial \(trial): E=\(experts) k=\(k)")
    }
}
