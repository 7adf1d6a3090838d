import MoECore
import MoECPU
@testable import MoEParallel

#if canImport(Glibc)
import Glibc
#endif

/// Runs R ranks as threads of this process (each its own pthread, so barriers never starve on a small
/// thread pool), over the same shared-memory code the rank processes use.
enum RankThreads {
    final class Box: @unchecked Sendable {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Calls `body(rank)` on R threads and returns each rank's result (or error), in rank order.
    static func run<T: Sendable>(ranks: Int, _ body: @escaping @Sendable (Int) throws -> T) -> [Result<T, any Error>] {
        let results = ResultSlots<T>(count: ranks)
        var threads: [pthread_t] = []
        for rank in 0..<ranks {
            let box = Box { results.set(rank, Result { try body(rank) }) }
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            }, Unmanaged.passRetained(box).toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(thread)
        }
        for thread in threads { pthread_join(thread, nil) }
        return results.values
    }

    final class ResultSlots<T>: @unchecked Sendable {
        private var slots: [Result<T, any Error>?]
        private var lock = pthread_mutex_t()
        init(count: Int) {
            slots = Array(repeating: nil, count: count)
            pthread_mutex_init(&lock, nil)
        }
        func set(_ index: Int, _ value: Result<T, any Error>) {
            pthread_mutex_lock(&lock)
            slots[index] = value
            pthread_mutex_unlock(&lock)
        }
        var values: [Result<T, any Error>] { slots.map { $0! } }
    }
}

/// Segment names of a job still present in /dev/shm.
func leftoverSegments(jobID: String) -> [String] {
    guard let directory = opendir("/dev/shm") else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name.hasPrefix("moe-\(jobID)-") { names.append(name) }
    }
    return names
}

/// A seed printed in failure messages, so a failing case can be replayed.
struct Seeded: CustomStringConvertible {
    var seed: UInt64
    var description: String { "seed \(seed)" }
}
