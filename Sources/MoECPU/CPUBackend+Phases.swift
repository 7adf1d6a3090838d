import CMoECPUKernels
import MoECore

// The parallel phases of a pass, one object each, created once per backend and reused: the caller fills in the
// fields (under the backend's lock) and hands the object to the pool, which calls `run(worker:)` on every worker.
// Nothing is allocated per call. Each phase partitions its outputs by worker, so workers never write the same
// memory and the bits do not depend on the partition.

/// Router logits, tokens split over the workers; converts the fp32 input to bf16 first when `input` is set.
final class RouterPhase: WorkerPhase {
    unowned let backend: CPUBackend
    var tokens = 0
    /// [T, H] fp32 input to round into `convertedX` before routing, or nil when `x` is already bf16.
    var input: UnsafePointer<Float>?
    var convertedX: UnsafeMutablePointer<UInt16>?
    /// [T, H] bf16 rows to route (`convertedX` when converting).
    var x: UnsafePointer<UInt16>?
    /// [T, E]
    var logits: UnsafeMutablePointer<Float>?

    init(backend: CPUBackend) { self.backend = backend }

    func run(worker: Int) {
        let (H, E) = (backend.config.hidden, backend.config.experts)
        for t in backend.pool.share(of: tokens, worker: worker) {
            if let input, let convertedX {
                for h in 0..<H { convertedX[t * H + h] = BF16.bits(input[t * H + h]) }
            }
            backend.routerLogits(x: x! + t * H, into: logits! + t * E, worker: worker)
        }
    }
}

/// Gathers each token group's rows into its packed GEMM 1 input; groups split over the workers.
final class PackPhase: WorkerPhase {
    unowned let backend: CPUBackend
    var groups: UnsafePointer<TokenGroup>?
    var groupCount = 0
    var inputRows: UnsafePointer<UnsafeMutablePointer<UInt16>?>?
    var packedInput: UnsafeMutablePointer<UInt8>?

    init(backend: CPUBackend) { self.backend = backend }

    func run(worker: Int) {
        let H = backend.config.hidden
        let layout = backend.kernelPath.activationLayout
        for g in backend.pool.share(of: groupCount, worker: worker) {
            let start = Int(groups![g].rowStart)
            ActivationPacking.pack(
                rows: inputRows! + start, count: Int(groups![g].rowCount), columns: H, layout: layout,
                into: packedInput! + start * H * layout.bytesPerValue)
        }
    }
}

/// The experts' work list and buffers that both GEMM phases read.
struct ExpertsPass {
    var work: UnsafePointer<ExpertWork>?
    var workCount = 0
    var groups: UnsafePointer<TokenGroup>?
    var packedInput: UnsafeMutablePointer<UInt8>?
    var packedIntermediate: UnsafeMutablePointer<UInt8>?
    /// [routed rows] routing weight per sorted row.
    var rowWeights: UnsafePointer<Float>?
    /// [routed rows] where each sorted row's output goes.
    var outputRows: UnsafePointer<UnsafeMutablePointer<UInt16>?>?
}

/// GEMM 1 + SwiGLU: units are (expert, gate/up row-group pair); a unit runs all of its expert's token groups.
final class GEMM1Phase: WorkerPhase {
    unowned let backend: CPUBackend
    var pass = ExpertsPass()

    init(backend: CPUBackend) { self.backend = backend }

    func run(worker: Int) {
        let b = backend
        let (H, I) = (b.config.hidden, b.config.intermediate)
        let layout = b.kernelPath.activationLayout
        let bytesPerValue = layout.bytesPerValue
        let (groups, packedInput, packedIntermediate) = (pass.groups!, pass.packedInput!, pass.packedIntermediate!)
        let scratch = b.portableScratch(worker)
        b.forEachUnit(worker: worker, unitsPerExpert: I / 16, work: pass.work!, count: pass.workCount) { work, pair in
            let e = Int(work.expert)
            var tile = moekit_gemm1_tile(
                gate_weights: b.gateUp.rowGroup(expert: e, group: 2 * pair),
                up_weights: b.gateUp.rowGroup(expert: e, group: 2 * pair + 1),
                gate_bias: b.gateBias.pointer + e * I + 16 * pair, up_bias: b.upBias.pointer + e * I + 16 * pair,
                activations: nil, intermediate: nil, blocks: Int32(H / 32), tokens: 0,
                swiglu_alpha: Float(b.config.swigluAlpha), swiglu_limit: Float(b.config.swigluLimit),
                intermediate_stride: Int32(I))
            for g in Int(work.firstGroup)..<Int(work.firstGroup + work.groupCount) {
                let start = Int(groups[g].rowStart), n = Int(groups[g].rowCount)
                tile.tokens = Int32(n)
                tile.activations = UnsafeRawPointer(packedInput + start * H * bytesPerValue)
                tile.intermediate = UnsafeMutableRawPointer(
                    packedIntermediate + start * I * bytesPerValue + layout.columnOffset(16 * pair, tokens: n))
                b.kernelPath.gemm1(&tile, scratch: scratch)
            }
        }
    }
}

/// GEMM 2 + bias, times the routing weight, bf16 into the output rows: units are (expert, 16 output columns).
final class GEMM2Phase: WorkerPhase {
    unowned let backend: CPUBackend
    var pass = ExpertsPass()

    init(backend: CPUBackend) { self.backend = backend }

    func run(worker: Int) {
        let b = backend
        let (H, I) = (b.config.hidden, b.config.intermediate)
        let bytesPerValue = b.kernelPath.activationLayout.bytesPerValue
        let (groups, packedIntermediate) = (pass.groups!, pass.packedIntermediate!)
        let (rowWeights, outputRows) = (pass.rowWeights!, pass.outputRows!)
        let scratch = b.portableScratch(worker)
        b.forEachUnit(worker: worker, unitsPerExpert: H / 16, work: pass.work!, count: pass.workCount) { work, columns in
            let e = Int(work.expert)
            var tile = moekit_gemm2_tile(
                weights: b.down.rowGroup(expert: e, group: columns), bias: b.downBias.pointer + e * H + 16 * columns,
                intermediate: nil, row_weights: nil, output_rows: nil, column: Int32(16 * columns),
                blocks: Int32(I / 32), tokens: 0)
            for g in Int(work.firstGroup)..<Int(work.firstGroup + work.groupCount) {
                let start = Int(groups[g].rowStart)
                tile.tokens = groups[g].rowCount
                tile.intermediate = UnsafeRawPointer(packedIntermediate + start * I * bytesPerValue)
                tile.row_weights = rowWeights + start
                tile.output_rows = outputRows + start
                b.kernelPath.gemm2(&tile, scratch: scratch)
            }
        }
    }
}

/// The k-way sum per token (forward only): tokens split over the workers.
final class ReducePhase: WorkerPhase {
    unowned let backend: CPUBackend
    var tokens = 0
    /// [T·k, H] bf16, slot order.
    var combine: UnsafePointer<UInt16>?
    /// [T, H]
    var hidden: UnsafeMutablePointer<Float>?

    init(backend: CPUBackend) { self.backend = backend }

    func run(worker: Int) {
        let (H, k) = (backend.config.hidden, backend.config.topK)
        for t in backend.pool.share(of: tokens, worker: worker) {
            CombineReduction.reduce(rows: combine! + t * k * H, count: k, hidden: H, into: hidden! + t * H)
        }
    }
}

/// The phase objects of one backend.
final class Phases {
    let router: RouterPhase
    let pack: PackPhase
    let gemm1: GEMM1Phase
    let gemm2: GEMM2Phase
    let reduce: ReducePhase

    init(backend: CPUBackend) {
        router = RouterPhase(backend: backend)
        pack = PackPhase(backend: backend)
        gemm1 = GEMM1Phase(backend: backend)
        gemm2 = GEMM2Phase(backend: backend)
        reduce = ReducePhase(backend: backend)
    }
}
