import Dispatch
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import MoECPU

/// The pool runs each phase once on every worker, shows the caller every write, and serialises callers.
@Suite struct WorkerPoolTests {
    @Test(arguments: [1, 2, 3, 5])
    func everyWorkerRunsEachPhaseOnce(workers: Int) throws {
        let pool = try #require(WorkerPool(workers: workers))
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: workers)
        counts.initialize(repeating: 0, count: workers)
        defer { counts.deallocate() }
        for phase in 1...300 {
            pool.run { worker in counts[worker] += 1 }
            // Every worker's write is visible here, at once.
            for w in 0..<workers where counts[w] != phase {
                Issue.record("worker \(w) ran \(counts[w]) phases after \(phase)")
                return
            }
        }
    }

    @Test func smallPhasesRunOnTheCallerAlone() throws {
        let pool = try #require(WorkerPool(workers: 2))
        let seen = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        seen.initialize(repeating: 0, count: 2)
        defer { seen.deallocate() }
        final class Counting: WorkerPhase {
            let seen: UnsafeMutablePointer<Int>
            let pool: WorkerPool
            var shares: [Range<Int>] = [0..<0, 0..<0]
            init(_ seen: UnsafeMutablePointer<Int>, _ pool: WorkerPool) { self.seen = seen; self.pool = pool }
            func run(worker: Int) { seen[worker] += 1; shares[worker] = pool.share(of: 10, worker: worker) }
        }
        let phase = Counting(seen, pool)
        pool.run(phase, work: pool.serialWork - 1)
        #expect(seen[0] == 1 && seen[1] == 0 && phase.shares[0] == 0..<10, "a small phase is all the caller's")
        pool.run(phase, work: pool.serialWork)
        #expect(seen[0] == 2 && seen[1] == 1 && phase.shares[0] == 0..<5 && phase.shares[1] == 5..<10)
        #expect(pool.activeWorkers == 2)
    }

    @Test func sharesCoverEveryItemOnce() throws {
        let pool = try #require(WorkerPool(workers: 3))
        for count in [0, 1, 2, 3, 10, 101] {
            let shares = (0..<3).map { pool.share(of: count, worker: $0) }
            #expect(shares.map(\.count).reduce(0, +) == count)
            #expect(shares[0].lowerBound == 0 && shares[2].upperBound == count)
            #expect(shares[0].upperBound == shares[1].lowerBound && shares[1].upperBound == shares[2].lowerBound)
        }
    }

    @Test func callersFromSeveralThreadsAreSerialised() throws {
        let pool = try #require(WorkerPool(workers: 2))
        let slots = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        slots.initialize(repeating: 0, count: 2)
        defer { slots.deallocate() }
        nonisolated(unsafe) let shared = slots
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<200 {
                // Not atomic: correct only if no two phases overlap.
                pool.run { worker in shared[worker] += 1 }
            }
        }
        #expect(slots[0] == 800 && slots[1] == 800)
    }

    @Test func idleWorkersSleepAndWakeUp() throws {
        let pool = try #require(WorkerPool(workers: 2))
        let seen = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        seen.initialize(repeating: 0, count: 2)
        defer { seen.deallocate() }
        for _ in 0..<3 {
            pool.run { worker in seen[worker] += 1 }
            usleep(10_000)  // past the 2 ms spin: the worker is asleep on the condition variable
        }
        #expect(seen[0] == 3 && seen[1] == 3)
    }
}
