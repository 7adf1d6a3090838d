import CMoECPUKernels
import Dispatch
import MoECore

#if canImport(Glibc)
import Glibc
#endif

/// A 64-byte-aligned buffer of `count` values that lives as long as this object.
final class AlignedBuffer<Element>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Element>
    let count: Int

    /// hugePages: back the buffer with 2 MiB pages where the OS allows it (Linux transparent huge pages in
    /// "madvise" or "always" mode), for buffers streamed end to end: with 4 KiB pages the weight stream of a
    /// decode step ran at 28–36 GB/s on the dev machine, with 2 MiB pages at 42–43 GB/s (docs/bench-cpu.md).
    /// Must be asked before the memory is first touched.
    init(count: Int, hugePages: Bool = false) {
        self.count = count
        var bytes = max(1, count) * MemoryLayout<Element>.stride
        let hugePage = 2 << 20
        let huge = hugePages && bytes >= hugePage
        if huge { bytes = (bytes + hugePage - 1) / hugePage * hugePage }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: huge ? hugePage : 64)
        #if os(Linux)
        // Advice only: where THP is off this fails harmlessly and the buffer keeps 4 KiB pages.
        if huge { _ = madvise(raw, bytes, MADV_HUGEPAGE) }
        #endif
        pointer = raw.bindMemory(to: Element.self, capacity: max(1, count))
    }

    convenience init(copying values: [Element]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { pointer.initialize(from: base, count: values.count) }
        }
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// One MXFP4 expert stack repacked at load into the row-group layout the kernels stream (moekit_cpu.h):
/// per expert, `rowGroups` groups of 16 output rows, each `rowGroupBytes` long, the codes of 16 rows × 8
/// inputs in every 64-byte chunk and the E8M0 scales beside them. The checkpoint layout stays the source of
/// truth: the repacking is a permutation of its nibbles and scale bytes (`unpacked()` inverts it, and a test
/// checks that).
///
/// storage: [resident experts, rowGroups, rowGroupBytes] u8. An expert-parallel rank packs only the experts it owns
/// (`resident`); the others have no row groups here.
final class PackedExpertStack: @unchecked Sendable {
    let experts: Int
    /// The experts packed here, ascending (every expert unless a subset was asked for).
    let resident: [Int]
    /// Storage position of each of the E experts; −1 for one not resident.
    private let positions: AlignedBuffer<Int32>
    /// Output rows per expert (a multiple of 16).
    let rows: Int
    /// K: inputs per row (a multiple of 32).
    let columns: Int
    let rowGroups: Int
    let blocks: Int
    let rowGroupBytes: Int
    /// Checkpoint row held by lane j of row group g: `sourceRow(g, j)` (the same for every expert).
    let sourceRow: @Sendable (_ group: Int, _ lane: Int) -> Int
    private let storage: AlignedBuffer<UInt8>

    /// Repacks `stack` ([E, rows, K/32, 16] codes, [E, rows, K/32] scales), or only the experts `subset` lists
    /// (ascending, distinct, in range). `sourceRow(g, j)` picks which checkpoint row goes to lane j of row group
    /// g; it must be a bijection onto 0..<rows.
    init(
        _ stack: MXFP4ExpertStack, subset: [Int]? = nil,
        sourceRow: @escaping @Sendable (_ group: Int, _ lane: Int) -> Int
    ) {
        precondition(stack.rows % Int(MOEKIT_ROW_GROUP) == 0, "rows must be a multiple of 16")
        experts = stack.experts
        let resident = subset ?? Array(0..<stack.experts)
        precondition(
            zip(resident, resident.dropFirst()).allSatisfy { $0 < $1 } && resident.allSatisfy { (0..<stack.experts).contains($0) },
            "resident experts must be ascending, distinct ids below \(stack.experts)")
        self.resident = resident
        positions = AlignedBuffer(copying: [Int32](repeating: -1, count: stack.experts))
        for (position, e) in resident.enumerated() { positions.pointer[e] = Int32(position) }
        rows = stack.rows
        columns = stack.columns
        rowGroups = stack.rows / Int(MOEKIT_ROW_GROUP)
        blocks = stack.blocksPerRow
        rowGroupBytes = moekit_row_group_bytes(Int32(stack.blocksPerRow))
        self.sourceRow = sourceRow
        storage = AlignedBuffer(count: resident.count * rowGroups * rowGroupBytes, hugePages: true)
        let (rowGroups, blocks, rowGroupBytes, rows) = (rowGroups, blocks, rowGroupBytes, rows)
        nonisolated(unsafe) let destination = storage.pointer
        stack.blocks.withUnsafeBufferPointer { codeBuffer in
            stack.scales.withUnsafeBufferPointer { scaleBuffer in
                nonisolated(unsafe) let codes = codeBuffer.baseAddress!
                nonisolated(unsafe) let scales = scaleBuffer.baseAddress!
                DispatchQueue.concurrentPerform(iterations: resident.count * rowGroups) { item in
                    let e = resident[item / rowGroups], g = item % rowGroups
                    let groupBase = destination + item * rowGroupBytes
                    // Unused scale bytes of a short last superblock stay defined.
                    groupBase.initialize(repeating: 0, count: rowGroupBytes)
                    for lane in 0..<16 {
                        let row = e * rows + sourceRow(g, lane)
                        for b in 0..<blocks {
                            let source = codes + (row * blocks + b) * 16
                            let (superblock, local) = (b / 4, b % 4)
                            let inSuperblock = min(4, blocks - 4 * superblock)
                            let superblockBase = groupBase + superblock * (4 * 256 + 64)
                            for c in 0..<4 {
                                let s = source + 4 * c
                                let chunk = superblockBase + local * 256 + c * 64 + 4 * lane
                                // Inputs k0..k0+7 are the nibbles lo(s0) hi(s0) lo(s1) hi(s1) lo(s2) hi(s2) ...;
                                // the chunk wants (e0|e2<<4) (e4|e6<<4) (e1|e3<<4) (e5|e7<<4).
                                chunk[0] = (s[0] & 0x0F) | (s[1] & 0x0F) << 4
                                chunk[1] = (s[2] & 0x0F) | (s[3] & 0x0F) << 4
                                chunk[2] = (s[0] >> 4) | (s[1] & 0xF0)
                                chunk[3] = (s[2] >> 4) | (s[3] & 0xF0)
                            }
                            let scaleBytes = superblockBase + inSuperblock * 256
                            scaleBytes[local * 16 + lane] = scales[row * blocks + b]
                        }
                    }
                }
            }
        }
    }

    /// Whether expert e's row groups are here.
    func isResident(_ e: Int) -> Bool { positions.pointer[e] >= 0 }

    /// Bytes of packed weights held.
    var byteCount: Int { resident.count * rowGroups * rowGroupBytes }

    /// The packed row group g of expert e (a resident one).
    @inline(__always)
    func rowGroup(expert e: Int, group g: Int) -> UnsafePointer<UInt8> {
        let position = Int(positions.pointer[e])
        assert(position >= 0, "expert \(e) is not packed here")
        return UnsafePointer(storage.pointer + (position * rowGroups + g) * rowGroupBytes)
    }

    /// The checkpoint layout back: blocks [E, rows, K/32, 16], scales [E, rows, K/32], zeros for experts not
    /// resident (for tests).
    func unpacked() -> (blocks: [UInt8], scales: [UInt8]) {
        var codes = [UInt8](repeating: 0, count: experts * rows * blocks * 16)
        var scales = [UInt8](repeating: 0, count: experts * rows * blocks)
        for e in resident {
            for g in 0..<rowGroups {
                let groupBase = rowGroup(expert: e, group: g)
                for lane in 0..<16 {
                    let row = e * rows + sourceRow(g, lane)
                    for b in 0..<blocks {
                        let (superblock, local) = (b / 4, b % 4)
                        let inSuperblock = min(4, blocks - 4 * superblock)
                        let superblockBase = groupBase + superblock * (4 * 256 + 64)
                        for c in 0..<4 {
                            let chunk = superblockBase + local * 256 + c * 64 + 4 * lane
                            let target = (row * blocks + b) * 16 + 4 * c
                            codes[target + 0] = (chunk[0] & 0x0F) | (chunk[2] & 0x0F) << 4
                            codes[target + 1] = (chunk[0] >> 4) | (chunk[2] & 0xF0)
                            codes[target + 2] = (chunk[1] & 0x0F) | (chunk[3] & 0x0F) << 4
                            codes[target + 3] = (chunk[1] >> 4) | (chunk[3] & 0xF0)
                        }
                        scales[row * blocks + b] = (superblockBase + inSuperblock * 256)[local * 16 + lane]
                    }
                }
            }
        }
        return (codes, scales)
    }
}

extension PackedExpertStack {
    /// W1 [E, 2I, H] with its interleaved gate/up rows split: row group 2q holds gate rows i = 16q..16q+15
    /// (checkpoint rows 2i), row group 2q+1 the matching up rows (2i+1), so one tile sees a gate/up pair.
    static func gateUp(_ stack: MXFP4ExpertStack, subset: [Int]? = nil) -> PackedExpertStack {
        PackedExpertStack(stack, subset: subset) { group, lane in 2 * (16 * (group / 2) + lane) + group % 2 }
    }

    /// W2 [E, H, I]: row group g holds output columns 16g..16g+15.
    static func down(_ stack: MXFP4ExpertStack, subset: [Int]? = nil) -> PackedExpertStack {
        PackedExpertStack(stack, subset: subset) { group, lane in 16 * group + lane }
    }
}
