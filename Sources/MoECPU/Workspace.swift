import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A reusable buffer that only grows: `reserve` reallocates (without copying) when asked for more than it holds,
/// so once a backend has seen its largest batch a forward pass allocates nothing.
final class GrowableBuffer<Element> {
    private(set) var pointer: UnsafeMutablePointer<Element>
    private(set) var capacity: Int

    init(capacity: Int = 0) {
        self.capacity = max(1, capacity)
        pointer = GrowableBuffer.allocate(self.capacity)
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }

    /// Makes room for `count` elements; the contents are undefined afterwards when it had to grow.
    @inline(__always)
    func reserve(_ count: Int) {
        if count > capacity { grow(count) }
    }

    private func grow(_ count: Int) {
        UnsafeMutableRawPointer(pointer).deallocate()
        capacity = count
        pointer = GrowableBuffer.allocate(count)
    }

    private static func allocate(_ count: Int) -> UnsafeMutablePointer<Element> {
        UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Element>.stride, alignment: 64)
            .bindMemory(to: Element.self, capacity: count)
    }
}

/// Consecutive sorted rows of one expert that one tile call takes together (≤ the path's `maxTileTokens`).
struct TokenGroup {
    var rowStart: Int32
    var rowCount: Int32
}

/// One expert with rows in a runExperts call: its groups are `groups[firstGroup ..< firstGroup + groupCount]`.
struct ExpertWork {
    var expert: Int32
    var firstGroup: Int32
    var groupCount: Int32
    var rows: Int32
}

/// Every buffer a forward pass needs, owned by one backend and reused across calls (guarded by the backend's
/// lock). Sizes follow the largest T (tokens) and routed-row count seen so far.
final class Workspace {
    // Per token (forward): x [T, H] bf16, logits [T, E], the plan's slot tables [T·k], combine [T·k, H] bf16.
    let x = GrowableBuffer<UInt16>()
    let logits = GrowableBuffer<Float>()
    let slotToSorted = GrowableBuffer<Int32>()
    let sortedToSlot = GrowableBuffer<Int32>()
    let rowWeights = GrowableBuffer<Float>()
    let combine = GrowableBuffer<UInt16>()
    // Per expert: counts [E], offsets [E+1], the work list [E].
    let expertCounts: GrowableBuffer<Int32>
    let expertOffsets: GrowableBuffer<Int32>
    let expertWork: GrowableBuffer<ExpertWork>
    // Per routed row: tile groups, row addresses, packed GEMM inputs [rows, H] and intermediates [rows, I].
    let groups = GrowableBuffer<TokenGroup>()
    let inputRows = GrowableBuffer<UnsafeMutablePointer<UInt16>?>()
    let outputRows = GrowableBuffer<UnsafeMutablePointer<UInt16>?>()
    let packedInput = GrowableBuffer<UInt8>()
    let packedIntermediate = GrowableBuffer<UInt8>()
    /// Per worker: the portable kernels' accumulators and a float row for the portable router.
    let portableScratch: GrowableBuffer<SIMD16<Float>>
    let routerRows: GrowableBuffer<Float>
    let portableScratchPerWorker: Int

    init(config: MoEConfig, workers: Int) {
        expertCounts = GrowableBuffer(capacity: config.experts)
        expertOffsets = GrowableBuffer(capacity: config.experts + 1)
        expertWork = GrowableBuffer(capacity: config.experts)
        portableScratchPerWorker = PortableKernels.scratchVectors
        portableScratch = GrowableBuffer(capacity: workers * portableScratchPerWorker)
        routerRows = GrowableBuffer(capacity: workers * config.hidden)
    }

    /// Sizes the per-token buffers for T tokens.
    func reserve(tokens T: Int, config c: MoEConfig) {
        x.reserve(T * c.hidden)
        logits.reserve(T * c.experts)
        slotToSorted.reserve(T * c.topK)
        sortedToSlot.reserve(T * c.topK)
        rowWeights.reserve(T * c.topK)
        combine.reserve(T * c.topK * c.hidden)
    }

    /// Sizes the per-row buffers for `rows` routed rows (indexed by global sorted row).
    func reserve(rows: Int, config c: MoEConfig, layout: ActivationLayout) {
        groups.reserve(rows)
        inputRows.reserve(rows)
        outputRows.reserve(rows)
        packedInput.reserve(rows * c.hidden * layout.bytesPerValue)
        packedIntermediate.reserve(rows * c.intermediate * layout.bytesPerValue)
    }
}

/// A pthread mutex at a stable address.
final class Mutex: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() {
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
