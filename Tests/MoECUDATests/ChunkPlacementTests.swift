import MoECore
import Testing

// Host model of moe_route_finish's stable placement (moe_routing.cu): warp c takes slots 32c…32c+31; a slot's rank is
// the number of earlier lanes of its chunk with the same expert (__match_any_sync), a thread per expert turns the
// chunks' counts into chunk offsets, and slot s of expert e in chunk c lands at offsets[e] + chunkOffset[c][e] + rank.
// These tests check that this is exactly the stable expert-major order of RoutingPlan.

private func chunkPlacement(ids: [Int32], experts: Int) -> (sortedToSlot: [Int32], slotToSorted: [Int32]) {
    let slots = ids.count, chunks = (slots + 31) / 32
    var rank = [Int](repeating: 0, count: slots)
    var chunkRows = [[Int]](repeating: [Int](repeating: 0, count: experts), count: chunks)
    for c in 0..<chunks {
        for lane in 0..<32 where 32 * c + lane < slots {
            let s = 32 * c + lane, e = ids[s]
            guard e >= 0 else { continue }
            let same = (0..<32).filter { 32 * c + $0 < slots && ids[32 * c + $0] == e }  // the match_any mask
            rank[s] = same.filter { $0 < lane }.count
            if rank[s] == 0 { chunkRows[c][Int(e)] = same.count }
        }
    }
    var counts = [Int](repeating: 0, count: experts)
    for e in 0..<experts {
        var running = 0
        for c in 0..<chunks {
            let n = chunkRows[c][e]
            chunkRows[c][e] = running
            running += n
        }
        counts[e] = running
    }
    var offsets = [Int](repeating: 0, count: experts)
    for e in 1..<max(1, experts) { offsets[e] = offsets[e - 1] + counts[e - 1] }
    var sortedToSlot = [Int32](repeating: -1, count: counts.reduce(0, +)), slotToSorted = [Int32](repeating: -1, count: slots)
    for s in 0..<slots where ids[s] >= 0 {
        let e = Int(ids[s]), row = offsets[e] + chunkRows[s / 32][e] + rank[s]
        sortedToSlot[row] = Int32(s)
        slotToSorted[s] = Int32(row)
    }
    return (sortedToSlot, slotToSorted)
}

@Test func chunkPlacementIsTheStableExpertMajorOrder() {
    var rng = SeededGenerator(seed: 0xC4A2)
    for trial in 0..<300 {
        let experts = [1, 4, 8, 32, 128][trial % 5]
        let topK = min(experts, [1, 2, 4][trial % 3])
        let tokens = [1, 7, 8, 9, 31, 33, 64, 100, 128][trial % 9]
        // Every fourth trial is skewed: most slots on expert 0 (long runs within and across chunks).
        var ids: [Int32] = []
        for _ in 0..<tokens {
            var chosen: [Int32] = []  // distinct, in draw order (as unsorted as top-k's weight order)
            while chosen.count < topK {
                let skewed = trial % 4 == 0 && rng.next() % 4 != 0
                let e = skewed && !chosen.contains(0) ? 0 : Int32(rng.next() % UInt64(experts))
                if !chosen.contains(e) { chosen.append(e) }
            }
            ids += chosen
        }
        let reference = RoutingPlan(topkIds: ids, tokens: tokens, topK: topK, experts: experts)
        let model = chunkPlacement(ids: ids, experts: experts)
        #expect(model.sortedToSlot == reference.sortedToSlot, "trial \(trial): E=\(experts) k=\(topK) T=\(tokens)")
        #expect(model.slotToSorted == reference.slotToSorted, "trial \(trial)")
    }
}
