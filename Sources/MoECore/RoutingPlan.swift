/// Where every (token, slot) pair goes: the expert-major order the grouped GEMMs run in (DESIGN §3).
///
/// A *slot* is `t·k + j` (token t, its j-th choice). Slots whose expert id is negative route nowhere
/// (padding rows in expert parallelism) and appear in no list.
///
/// Invariants (checked by `validate()` and in tests):
/// - `expertCounts` sums to `routedSlots`, the number of slots with an expert (T·k without padding);
/// - `expertOffsets` has E+1 entries, starts at 0, is monotone, and `offsets[e+1] − offsets[e] = counts[e]`;
/// - `sortedToSlot` lists the routed slots grouped by expert, ascending expert, ties by token then slot
///   (a stable counting sort of the slots);
/// - `slotToSorted[sortedToSlot[r]] == r` for every sorted row r, and −1 for unrouted slots;
/// - tiles cover every sorted row exactly once, never straddle experts, and hold at most `tileRows` rows.
public struct RoutingPlan: Sendable, Equatable {
    /// One unit of GEMM work: `rowCount` consecutive sorted rows of one expert.
    public struct Tile: Sendable, Equatable {
        public var expert: Int32
        public var rowStart: Int32
        public var rowCount: Int32
    }

    public let tokens: Int
    public let topK: Int
    public let experts: Int
    public let tileRows: Int
    /// [E] rows per expert.
    public internal(set) var expertCounts: [Int32]
    /// [E+1] first sorted row of each expert; the last entry is `routedSlots`.
    public internal(set) var expertOffsets: [Int32]
    /// [routedSlots] sorted row → slot.
    public internal(set) var sortedToSlot: [Int32]
    /// [T·k] slot → sorted row, −1 when the slot routes nowhere.
    public internal(set) var slotToSorted: [Int32]
    /// The GEMM tile schedule, expert-major.
    public internal(set) var tiles: [Tile]

    public var routedSlots: Int { sortedToSlot.count }

    /// Builds the plan from top-k ids [T, k] (row-major; −1 = no expert).
    public init(topkIds ids: [Int32], tokens: Int, topK: Int, experts: Int, tileRows: Int = 64) {
        precondition(ids.count == tokens * topK, "topk ids must hold tokens·k entries")
        precondition(tileRows > 0)
        self.tokens = tokens
        self.topK = topK
        self.experts = experts
        self.tileRows = tileRows
        var counts = [Int32](repeating: 0, count: experts)
        for id in ids where id >= 0 {
            precondition(Int(id) < experts, "expert id \(id) out of range 0..<\(experts)")
            counts[Int(id)] += 1
        }
        var offsets = [Int32](repeating: 0, count: experts + 1)
        for e in 0..<experts { offsets[e + 1] = offsets[e] + counts[e] }
        var cursor = Array(offsets[0..<experts])
        var sortedToSlot = [Int32](repeating: 0, count: Int(offsets[experts]))
        var slotToSorted = [Int32](repeating: -1, count: ids.count)
        for slot in 0..<ids.count where ids[slot] >= 0 {
            let e = Int(ids[slot])
            let row = cursor[e]
            cursor[e] += 1
            sortedToSlot[Int(row)] = Int32(slot)
            slotToSorted[slot] = row
        }
        var tiles: [Tile] = []
        for e in 0..<experts {
            var start = offsets[e]
            while start < offsets[e + 1] {
                let count = min(Int32(tileRows), offsets[e + 1] - start)
                tiles.append(Tile(expert: Int32(e), rowStart: start, rowCount: count))
                start += count
            }
        }
        self.expertCounts = counts
        self.expertOffsets = offsets
        self.sortedToSlot = sortedToSlot
        self.slotToSorted = slotToSorted
        self.tiles = tiles
    }

    /// The token a sorted row belongs to.
    @inlinable public func token(ofSortedRow row: Int) -> Int { Int(sortedToSlot[row]) / topK }

    /// Checks every documented invariant; returns the first violation, or nil.
    public func validate() -> String? {
        if expertCounts.count != experts || expertOffsets.count != experts + 1 { return "counts/offsets length" }
        if expertOffsets[0] != 0 { return "offsets[0] != 0" }
        for e in 0..<experts {
            if expertOffsets[e + 1] - expertOffsets[e] != expertCounts[e] { return "offsets of expert \(e)" }
        }
        if Int(expertOffsets[experts]) != routedSlots { return "counts do not sum to the routed slots" }
        for (row, slot) in sortedToSlot.enumerated() {
            if slot < 0 || Int(slot) >= slotToSorted.count || slotToSorted[Int(slot)] != Int32(row) {
                return "slotToSorted ∘ sortedToSlot is not the identity at row \(row)"
            }
            if row > 0 {
                let previous = sortedToSlot[row - 1]
                let sameExpert = expertOf(row: row) == expertOf(row: row - 1)
                if sameExpert && previous >= slot { return "rows of one expert not in slot order at \(row)" }
            }
        }
        var covered = 0
        for tile in tiles {
            if Int(tile.rowStart) != covered { return "tiles leave a gap or overlap at row \(covered)" }
            if tile.rowCount <= 0 || Int(tile.rowCount) > tileRows { return "tile size \(tile.rowCount)" }
            let e = Int(tile.expert)
            if tile.rowStart < expertOffsets[e] || tile.rowStart + tile.rowCount > expertOffsets[e + 1] {
                return "tile straddles expert \(e)"
            }
            covered += Int(tile.rowCount)
        }
        if covered != routedSlots { return "tiles cover \(covered) of \(routedSlots) rows" }
        return nil
    }

    private func expertOf(row: Int) -> Int {
        var e = 0
        while expertOffsets[e + 1] <= Int32(row) { e += 1 }
        return e
    }
}
