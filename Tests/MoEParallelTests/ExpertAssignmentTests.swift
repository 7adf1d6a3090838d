import Testing

@testable import MoEParallel

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ExpertAssignmentTests {
    @Test func contiguousBlocksGiveTheFirstRanksTheRemainder() throws {
        let a = try ExpertAssignment.contiguous(experts: 10, ranks: 4)
        #expect(a.expertsOfRank == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]])
        #expect(a.owners == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
        #expect(a.localIds == [0, 1, 2, 0, 1, 2, 0, 1, 0, 1])
        let even = try ExpertAssignment.contiguous(experts: 32, ranks: 4)
        #expect(even.expertsOfRank.allSatisfy { $0.count == 8 })
        #expect(try ExpertAssignment.contiguous(experts: 5, ranks: 1).expertsOfRank == [[0, 1, 2, 3, 4]])
    }

    @Test func explicitMapsKeepLocalIdsInAscendingGlobalOrder() throws {
        let a = try ExpertAssignment(owners: [1, 0, 1, 0, 2, 1], ranks: 3)
        #expect(a.expertsOfRank == [[1, 3], [0, 2, 5], [4]])
        #expect(a.localIds == [0, 0, 1, 1, 0, 2])
        let nested = try ExpertAssignment(expertsOfRank: [[3, 1], [5, 0, 2], [4]], experts: 6)
        #expect(nested == a)
        #expect(try ExpertAssignment.roundRobin(experts: 5, ranks: 2).expertsOfRank == [[0, 2, 4], [1, 3]])
    }

    @Test func bitmaskHasOneBitPerExpert() throws {
        let a = try ExpertAssignment(owners: (0..<40).map { $0 % 3 == 0 ? 1 : 0 }, ranks: 2)
        let mask = a.bitmask
        #expect(mask.count == 2 * 2)
        for e in 0..<40 {
            let bits = (0..<2).map { r in (mask[r * 2 + e / 32] >> UInt32(e % 32)) & 1 }
            #expect(bits.reduce(0, +) == 1)
            #expect(bits[a.owner(of: e)] == 1)
        }
    }

    @Test func parsesInlineListsAndFiles() throws {
        #expect(try ExpertAssignment.parse("0,0,1,1", experts: 4, ranks: 2).owners == [0, 0, 1, 1])
        #expect(try ExpertAssignment.parse(" [1, 0, 1, 0] ", experts: 4, ranks: 2).owners == [1, 0, 1, 0])
        #expect(try ExpertAssignment.parse("[[2,3],[0,1]]", experts: 4, ranks: 2).owners == [1, 1, 0, 0])
        #expect(try ExpertAssignment.parse("contiguous", experts: 4, ranks: 2).owners == [0, 0, 1, 1])
        #expect(try ExpertAssignment.parse("round-robin", experts: 4, ranks: 2).owners == [0, 1, 0, 1])
        let path = "/tmp/moe-ep-map-\(getpid()).json"
        defer { unlink(path) }
        let file = fopen(path, "w")!
        fputs("[\n  [0, 3],\n  [1, 2]\n]\n", file)
        fclose(file)
        #expect(try ExpertAssignment.parse(path, experts: 4, ranks: 2).owners == [0, 1, 1, 0])
    }

    @Test(arguments: [
        ("0,0,2,1", 4, 2, "expert 2 is mapped to rank 2, but ranks are 0...1"),
        ("0,0,0,0", 4, 2, "rank 1 owns no expert"),
        ("0,0,1", 4, 2, "owners for 3 experts; the model has 4"),
        ("[[0,1],[1,2,3]]", 4, 2, "expert 1 is listed by rank 0 and by rank 1"),
        ("[[0],[1,2]]", 4, 2, "expert 3 is owned by no rank"),
        ("[[0,1,2,3]]", 4, 2, "lists experts for 1 ranks; running 2 ranks"),
        ("[[0,9],[1,2,3]]", 4, 2, "rank 0 lists expert 9, but experts are 0...3"),
        ("[0,0,1,1", 4, 2, "unterminated list"),
        ("[0,-1]", 2, 2, "expected a non-negative integer"),
        ("/nonexistent/map.json", 4, 2, "neither contiguous, round-robin"),
        ("contiguous", 3, 4, "3 experts cannot be split over 4 ranks"),
    ])
    func rejectsBadMapsWithAClearReason(spec: String, experts: Int, ranks: Int, reason: String) {
        do {
            let a = try ExpertAssignment.parse(spec, experts: experts, ranks: ranks)
            Issue.record("accepted \(spec): \(a)")
        } catch let error as ExpertParallelError {
            guard case .invalidAssignment(let why) = error else {
                Issue.record("wrong error kind for \(spec): \(error)")
                return
            }
            #expect(why.contains(reason), "\(spec): \(why)")
        } catch {
            Issue.record("untyped error for \(spec): \(error)")
        }
    }

    @Test func digestsTellMapsApart() throws {
        let a = try ExpertAssignment.contiguous(experts: 8, ranks: 2)
        let b = try ExpertAssignment.roundRobin(experts: 8, ranks: 2)
        #expect(a.digest != b.digest)
        #expect(a.digest == (try ExpertAssignment.contiguous(experts: 8, ranks: 2)).digest)
        #expect(ExpertAssignment.abbreviate([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8")
    }
}
