import Dispatch

/// The stages of one MoE layer, in pipeline order. Every backend reports the ones it runs.
public enum Stage: String, CaseIterable, Sendable, Codable {
    case router, topk, plan, dispatch, gemm1, gemm2, combine, reduce
}

/// Flops and bytes that one stage performs, computed from its own shapes (what the stage itself reads and
/// writes; weights counted once per expert touched).
public struct StageCost: Sendable, Equatable, Codable {
    public var flops: Double
    public var bytes: Double
    public init(flops: Double = 0, bytes: Double = 0) {
        self.flops = flops
        self.bytes = bytes
    }

    /// Router GEMM: 2·T·H·E flops; reads x (bf16) and Wr (bf16), writes fp32 logits.
    public static func router(tokens T: Int, config c: MoEConfig) -> StageCost {
        StageCost(
            flops: 2 * Double(T * c.hidden * c.experts),
            bytes: Double(T * c.hidden * 2 + c.experts * c.hidden * 2 + c.experts * 2 + T * c.experts * 4))
    }
    /// GEMM 1: 2·rows·H·2I flops; reads the gathered rows, the touched experts' W1 and b1; writes a [rows, I] bf16.
    public static func gemm1(rows: Int, expertsTouched: Int, config c: MoEConfig) -> StageCost {
        StageCost(
            flops: 2 * Double(rows) * Double(c.hidden) * Double(2 * c.intermediate),
            bytes: Double(rows * c.hidden * 2 + rows * c.intermediate * 2)
                + Double(expertsTouched) * Double(c.gateUpBytesPerExpert + 2 * c.intermediate * 2))
    }
    /// GEMM 2: 2·rows·I·H flops; reads a, the touched experts' W2 and b2; writes [rows, H] bf16.
    public static func gemm2(rows: Int, expertsTouched: Int, config c: MoEConfig) -> StageCost {
        StageCost(
            flops: 2 * Double(rows) * Double(c.intermediate) * Double(c.hidden),
            bytes: Double(rows * c.intermediate * 2 + rows * c.hidden * 2)
                + Double(expertsTouched) * Double(c.downBytesPerExpert + c.hidden * 2))
    }
    /// k-way reduce: T·k·H adds; reads T·k rows of bf16, writes T rows.
    public static func reduce(tokens T: Int, config c: MoEConfig) -> StageCost {
        StageCost(flops: Double(T * c.topK * c.hidden), bytes: Double(T * c.topK * c.hidden * 2 + T * c.hidden * 4))
    }
}

/// Records named, timed scopes with their flops and bytes. Passing `nil` where a profiler is taken costs
/// nothing; recording takes a lock only when a scope closes (never inside kernels).
public final class Profiler: @unchecked Sendable {
    public struct Record: Sendable, Codable, Equatable {
        public var stage: String
        public var rank: Int
        public var startNanoseconds: UInt64
        public var durationNanoseconds: UInt64
        public var flops: Double
        public var bytes: Double

        /// A record made elsewhere (another process's profiler, a re-based timeline, tests).
        public init(stage: String, rank: Int, startNanoseconds: UInt64, durationNanoseconds: UInt64, flops: Double, bytes: Double) {
            self.stage = stage
            self.rank = rank
            self.startNanoseconds = startNanoseconds
            self.durationNanoseconds = durationNanoseconds
            self.flops = flops
            self.bytes = bytes
        }
    }

    public let rank: Int
    private let lock = DispatchSemaphore(value: 1)
    private var storage: [Record] = []
    public let origin: UInt64

    public init(rank: Int = 0) {
        self.rank = rank
        self.origin = DispatchTime.now().uptimeNanoseconds
    }

    public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Times `body` on the host clock as `stage`.
    @inlinable
    public func scope<R>(_ stage: Stage, cost: StageCost, _ body: () throws -> R) rethrows -> R {
        let start = Profiler.now()
        let result = try body()
        record(stage.rawValue, start: start, end: Profiler.now(), cost: cost)
        return result
    }

    /// Adds a record measured elsewhere (device events, another clock), times in nanoseconds since boot.
    public func record(_ stage: String, start: UInt64, end: UInt64, cost: StageCost) {
        let r = Record(
            stage: stage, rank: rank, startNanoseconds: start &- origin, durationNanoseconds: end &- start,
            flops: cost.flops, bytes: cost.bytes)
        lock.wait()
        storage.append(r)
        lock.signal()
    }

    public var records: [Record] {
        lock.wait()
        defer { lock.signal() }
        return storage
    }

    public func reset() {
        lock.wait()
        storage.removeAll(keepingCapacity: true)
        lock.signal()
    }
}

extension Optional where Wrapped == Profiler {
    /// `profiler.scope(...)` on an optional: runs the body untimed when there is no profiler.
    @inlinable
    public func scope<R>(_ stage: Stage, cost: @autoclosure () -> StageCost, _ body: () throws -> R) rethrows -> R {
        guard let p = self else { return try body() }
        return try p.scope(stage, cost: cost(), body)
    }
}
