import CMoECPUKernels

/// One parallel step of a pass: `run(worker:)` does worker `worker`'s share.
protocol WorkerPhase: AnyObject {
    func run(worker: Int)
}

/// A persistent pool of `workers` threads (the caller is worker 0) over `moekit_pool` (thread_pool.c).
/// `run` hands one phase to every worker and returns when all are done; nothing is allocated per run.
final class WorkerPool: @unchecked Sendable {
    let workers: Int
    /// Workers taking part in the phase being run (1 when it runs on the caller alone); what `share` divides by.
    private(set) var activeWorkers: Int
    private let pool: OpaquePointer

    /// Starts workers − 1 threads; nil when the OS refuses one (or memory runs out).
    init?(workers: Int) {
        precondition(workers >= 1)
        guard let pool = moekit_pool_create(Int32(workers)) else { return nil }
        self.pool = pool
        self.workers = workers
        self.activeWorkers = workers
    }

    deinit { moekit_pool_destroy(pool) }

    /// Calls `phase.run(worker:)` once on each worker, worker 0 on this thread; returns when every call has
    /// returned. A phase is an object the caller keeps and reuses (a closure would cost a heap-allocated context
    /// per call); its calls write disjoint memory by construction (each phase partitions its outputs by worker).
    ///
    ///
    /// work: the phase's size in multiply-adds (or bytes moved); below `serialWork` the phase runs on the caller
    /// alone, where a hand-over (~1–2 µs) would cost more than a second core saves.
    func run(_ phase: any WorkerPhase, work: Int = .max) {
        if work < serialWork || workers == 1 {
            activeWorkers = 1
            phase.run(worker: 0)
            activeWorkers = workers
            return
        }
        var phase = phase
        withUnsafeMutablePointer(to: &phase) { pointer in
            moekit_pool_run(pool, { context, worker in
                context!.assumingMemoryBound(to: (any WorkerPhase).self).pointee.run(worker: Int(worker))
            }, pointer)
        }
    }

    /// Phases smaller than this (multiply-adds or bytes) run on the calling thread only (tests set 0 to split
    /// every phase).
    var serialWork = 1 << 14

    /// `run` for code off the hot path (measurements, tests): wraps `body` in a phase object, which allocates.
    func run(_ body: @escaping (Int) -> Void) {
        run(ClosurePhase(body))
    }

    private final class ClosurePhase: WorkerPhase {
        let body: (Int) -> Void
        init(_ body: @escaping (Int) -> Void) { self.body = body }
        func run(worker: Int) { body(worker) }
    }

    /// The contiguous share [start, end) of `count` items that `worker` takes.
    @inline(__always)
    func share(of count: Int, worker: Int) -> Range<Int> {
        (count * worker / activeWorkers)..<(count * (worker + 1) / activeWorkers)
    }
}
