import CMoECPUKernels
import MoECore
import Testing

@testable import MoECPU

/// The repacked layout is a permutation of the checkpoint's bytes: unpacking gives them back exactly, for block
/// counts that fill, half-fill and overfill the 4-block superblocks.
@Suite struct PackedExpertStackTests {
    static func randomStack(experts: Int, rows: Int, columns: Int, seed: UInt64) -> MXFP4ExpertStack {
        var rng = SeededGenerator(seed: seed)
        var blocks = [UInt8](repeating: 0, count: experts * rows * columns / 2)
        var scales = [UInt8](repeating: 0, count: experts * rows * columns / 32)
        rng.fill(&blocks)
        rng.fill(&scales)
        return MXFP4ExpertStack(experts: experts, rows: rows, columns: columns, blocks: blocks, scales: scales)
    }

    @Test(arguments: [32, 96, 128, 160, 256, 288])
    func unpackingRestoresTheCheckpointBytes(columns: Int) {
        for (name, make) in [("gate/up", { PackedExpertStack.gateUp($0) }), ("down", { PackedExpertStack.down($0) })] as [(String, (MXFP4ExpertStack) -> PackedExpertStack)] {
            let stack = Self.randomStack(experts: 3, rows: 64, columns: columns, seed: UInt64(columns))
            let packed = make(stack)
            let (blocks, scales) = packed.unpacked()
            #expect(blocks == stack.blocks, "\(name) K=\(columns): codes differ after a round trip")
            #expect(scales == stack.scales, "\(name) K=\(columns): scales differ after a round trip")
            #expect(packed.rowGroupBytes == moekit_row_group_bytes(Int32(columns / 32)))
            #expect(packed.rowGroupBytes % 64 == 0)
        }
    }

    /// Spot-checks the documented byte positions (moekit_cpu.h) against MXFP4's own decoding of the checkpoint.
    @Test func bytesSitWhereTheHeaderSays() {
        let stack = Self.randomStack(experts: 2, rows: 32, columns: 160, seed: 9)
        let packed = PackedExpertStack.gateUp(stack)
        for e in 0..<2 {
            for group in 0..<packed.rowGroups {
                let base = packed.rowGroup(expert: e, group: group)
                for lane in 0..<16 {
                    let row = 2 * (16 * (group / 2) + lane) + group % 2  // gate rows in even groups, up rows in odd
                    for k in 0..<160 {
                        let (b, c, i) = (k / 32, (k % 32) / 8, k % 8)
                        let superblock = base + (b / 4) * 1088
                        let inSuperblock = min(4, 5 - 4 * (b / 4))
                        // Word 2j + (i & 1) of the chunk, nibble i >> 1.
                        let chunk = superblock + (b % 4) * 256 + c * 64
                        let word = UInt16(chunk[4 * lane + 2 * (i & 1)]) | UInt16(chunk[4 * lane + 2 * (i & 1) + 1]) << 8
                        let code = UInt8((word >> (4 * UInt16(i >> 1))) & 0xF)
                        let source = ((e * 32 + row) * 5 + b) * 16 + (k % 32) / 2
                        let expected = k % 2 == 0 ? stack.blocks[source] & 0xF : stack.blocks[source] >> 4
                        #expect(code == expected, "e=\(e) row=\(row) k=\(k)")
                        let scale = (superblock + inSuperblock * 256)[(b % 4) * 16 + lane]
                        #expect(scale == stack.scales[(e * 32 + row) * 5 + b], "scale e=\(e) row=\(row) block=\(b)")
                    }
                }
            }
        }
    }

    /// A rank's subset: each resident expert's row groups are byte for byte the full stack's, the others are absent
    /// (zeros when unpacked), and the storage holds only the subset.
    @Test func aSubsetPacksExactlyItsExperts() {
        let stack = Self.randomStack(experts: 5, rows: 32, columns: 96, seed: 21)
        let full = PackedExpertStack.down(stack)
        let subset = PackedExpertStack.down(stack, subset: [1, 4])
        #expect(subset.resident == [1, 4] && full.resident == [0, 1, 2, 3, 4])
        #expect(subset.byteCount * 5 == full.byteCount * 2)
        for e in [1, 4] {
            for g in 0..<subset.rowGroups {
                let a = UnsafeRawBufferPointer(start: subset.rowGroup(expert: e, group: g), count: subset.rowGroupBytes)
                let b = UnsafeRawBufferPointer(start: full.rowGroup(expert: e, group: g), count: full.rowGroupBytes)
                #expect(Array(a) == Array(b), "expert \(e) row group \(g)")
            }
        }
        #expect(!subset.isResident(0) && subset.isResident(4))
        let (blocks, _) = subset.unpacked()
        let perExpert = 32 * 96 / 2
        #expect(Array(blocks[perExpert..<(2 * perExpert)]) == Array(stack.blocks[perExpert..<(2 * perExpert)]))
        #expect(blocks[0..<perExpert].allSatisfy { $0 == 0 })
    }
}
