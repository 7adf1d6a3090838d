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
    /// The GEMM's wgmma widths the tiles are fitted to (ascending, the last `tileRows`); empty: plain tiles.
    public let tileWidths: [Int]
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

    /// Builds the plan from top-k ids [T, k] (row-major; −1 = no expert); tiles as `tileSizes`.
    public init(topkIds ids: [Int32], tokens: Int, topK: Int, experts: Int, tileRows: Int = 64, tileWidths: [Int] = []) {
        precondition(ids.count == tokens * topK, "topk ids must hold tokens·k entries")
        precondition(tileRows > 0)
        precondition(RoutingPlan.validWidths(tileWidths, tileRows: tileRows), "tile widths \(tileWidths) for \(tileRows)-row tiles")
        self.tokens = tokens
        self.topK = topK
        self.experts = experts
        self.tileRows = tileRows
        self.tileWidths = tileWidths
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
            for count in RoutingPlan.tileSizes(rows: Int(counts[e]), tileRows: tileRows, widths: tileWidths) {
                tiles.append(Tile(expert: Int32(e), rowStart: start, rowCount: Int32(count)))
                start += Int32(count)
            }
        }
        self.expertCounts = counts
        self.expertOffsets = offsets
        self.sortedToSlot = sortedToSlot
        self.slotToSorted = slotToSorted
        self.tiles = tiles
    }

    /// The row counts of an expert's tiles, in order: ceil(rows / tileRows) of them. Plain (no widths): tileRows each,
    /// the last short. Fitted to a GEMM's wgmma widths (ascending, the last tileRows; each tile runs at the narrowest that
    /// holds it): the tiles whose widths sum least while still holding the rows (260 rows in 192-row tiles with n128 /
    /// n160 / n192: 128 + 132 rows at n128 + n160 = 288 columns, against 192 + 68 at n192 + n128 = 320). With n tiles the
    /// slack n · tileRows − rows is under tileRows, so few tiles can be narrower: `fittedNarrowTiles` takes the counts of
    /// each narrower width whose shortfalls below tileRows sum most within the slack (ties: fewer narrow tiles), and the
    /// tiles run narrowest first, then full, the last short. The routing kernels' fitted_narrow_tiles is the device's
    /// copy, loop for loop.
    public static func tileSizes(rows: Int, tileRows: Int, widths: [Int] = []) -> [Int] {
        let tiles = (rows + tileRows - 1) / tileRows
        var planned: [Int] = []
        for (width, count) in zip(widths, fittedNarrowTiles(rows: rows, tileRows: tileRows, widths: widths)) {
            planned += Array(repeating: width, count: count)
        }
        planned += Array(repeating: tileRows, count: tiles - planned.count)
        var remaining = rows
        return planned.map { width in
            let count = min(width, remaining)
            remaining -= count
            return count
        }
    }

    /// How many tiles of each width narrower than tileRows (widths' order) a fitted schedule of `rows` runs.
    static func fittedNarrowTiles(rows: Int, tileRows: Int, widths: [Int]) -> [Int] {
        let tiles = (rows + tileRows - 1) / tileRows, slack = tiles * tileRows - rows
        let short = widths.dropLast().map { tileRows - $0 } + [Int](repeating: 0, count: max(0, 4 - widths.count))
        let narrow = max(0, widths.count - 1)
        var best = (shortfall: 0, tiles: 0, counts: [0, 0, 0])
        for a in 0...(narrow > 0 ? min(tiles, slack / short[0]) : 0) {
            for b in 0...(narrow > 1 ? min(tiles - a, (slack - a * short[0]) / short[1]) : 0) {
                for c in 0...(narrow > 2 ? min(tiles - a - b, (slack - a * short[0] - b * short[1]) / short[2]) : 0) {
                    let shortfall = a * short[0] + b * short[1] + c * short[2], count = a + b + c
                    if shortfall > best.shortfall || (shortfall == best.shortfall && count < best.tiles) {
                        best = (shortfall, count, [a, b, c])
                    }
                }
            }
        }
        return Array(best.counts.prefix(narrow))
    }

    /// Widths a fitted schedule takes: none, or ascending positive ones ending at tileRows.
    public static func validWidths(_ widths: [Int], tileRows: Int) -> Bool {
        widths.isEmpty || (widths.last == tileRows && widths.first! > 0 && zip(widths, widths.dropFirst()).allSatisfy { $0 < $1 })
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
