import CMoECPUKernels

/// A persistent pool of `workers` threads (the caller is worker 0) over `moekit_pool` (thread_pool.c).
/// `run` hands one phase to every worker and returns when all are done; nothing is allocated per run.
final class WorkerPool: @unchecked Sendable {
    let workers: Int
    private let pool: OpaquePointer

    /// Starts workers − 1 threads; nil when the OS refuses one (or memory runs out).
    init?(workers: Int) {
        precondition(workers >= 1)
        guard let pool = moekit_pool_create(Int32(workers)) else { return nil }
        self.pool = pool
        self.workers = workers
    }

    deinit { moekit_pool_destroy(pool) }

    /// Calls `body(worker)` once on each worker, worker 0 on this thread; returns when every call has returned.
    /// Calls write disjoint memory by construction (each phase partitions its outputs by worker).
    func run(_ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            var task = Task(body: body)
            withUnsafeMutablePointer(to: &task) { pointer in
                moekit_pool_run(pool, { context, worker in
                    context!.assumingMemoryBound(to: Task.self).pointee.body(Int(worker))
                }, pointer)
            }
        }
    }

    private struct Task {
        let body: (Int) -> Void
    }

    /// The contiguous share [start, end) of `count` items that `worker` takes.
    @inline(__always)
    func share(of count: Int, worker: Int) -> Range<Int> {
        (count * worker / workers)..<(count * (worker + 1) / workers)
    }
}
