import Foundation
import MoECore
import MoEParallel

/// `moe bench --json` output (DESIGN §5). Tools read this: keep the keys stable.
struct BenchmarkReport: Codable {
    struct Machine: Codable {
        var description: String
        var backendDetail: String
        enum CodingKeys: String, CodingKey {
            case description
            case backendDetail = "backend_detail"
        }
    }
    struct Ceilings: Codable {
        var bandwidthGBps: Double
        var bandwidthMethod: String
        var peakTFLOPs: Double
        var peakMethod: String
        /// GPU expert parallelism: the GPU-to-GPU copy ceiling of the same run, per rank (absent elsewhere).
        var peerCopyGBps: Double? = nil
        var peerCopyMethod: String? = nil
        enum CodingKeys: String, CodingKey {
            case bandwidthGBps = "bandwidth_GBps"
            case bandwidthMethod = "bandwidth_method"
            case peakTFLOPs = "peak_TFLOPs"
            case peakMethod = "peak_method"
            case peerCopyGBps = "peer_copy_GBps"
            case peerCopyMethod = "peer_copy_method"
        }
    }
    struct Config: Codable {
        var preset: String?
        var model: String?
        var E: Int
        var k: Int
        var H: Int
        var I: Int
        var backend: String
        var ranks: Int
        var comm: String
        var routing: String
    }
    struct Check: Codable {
        var tokens: Int
        var relativeL2: Double
        var routingMismatches: Int
        enum CodingKeys: String, CodingKey {
            case tokens
            case relativeL2 = "rel_l2"
            case routingMismatches = "routing_mismatches"
        }
    }
    struct StageRow: Codable {
        var medianMicroseconds: Double
        var flops: Double
        var bytes: Double
        enum CodingKeys: String, CodingKey {
            case medianMicroseconds = "median_us"
            case flops, bytes
        }
    }
    struct Row: Codable {
        var tokens: Int
        var medianMicroseconds: Double
        var p10Microseconds: Double
        var p90Microseconds: Double
        var tokensPerSecond: Double
        var TFLOPs: Double
        var GBps: Double
        var floorMicroseconds: Double
        var percentOfFloor: Double
        var expertsTouched: Int
        var weightBytes: Double
        var flops: Double
        var iterations: Int
        var stages: [String: StageRow]?
        enum CodingKeys: String, CodingKey {
            case tokens
            case medianMicroseconds = "median_us"
            case p10Microseconds = "p10_us"
            case p90Microseconds = "p90_us"
            case tokensPerSecond = "tokens_per_s"
            case TFLOPs
            case GBps
            case floorMicroseconds = "floor_us"
            case percentOfFloor = "pct_of_floor"
            case expertsTouched = "experts_touched"
            case weightBytes = "weight_bytes"
            case flops, iterations, stages
        }
    }

    var machine: Machine
    var ceilings: Ceilings
    var config: Config
    var check: Check
    var rows: [Row]
    /// `moe bench --ranks R`: both token exchanges side by side (per phase times and bytes, and their ratio).
    var expertParallel: ExpertParallelBenchReport? = nil

    enum CodingKeys: String, CodingKey {
        case machine, ceilings, config, check, rows
        case expertParallel = "expert_parallel"
    }

    func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MoEError.io("cannot write the benchmark JSON to \(path): \(error.localizedDescription)")
        }
    }
}

/// Flops and weight bytes of one whole layer for a routing outcome, and the floor they imply.
enum LayerCost {
    /// Router + both expert GEMMs: 2·T·H·E + 2·T·k·(H·2I + I·H).
    static func flops(tokens T: Int, config c: MoEConfig) -> Double {
        let (H, I, E, k) = (Double(c.hidden), Double(c.intermediate), Double(c.experts), Double(c.topK))
        return 2 * Double(T) * H * E + 2 * Double(T) * k * (H * 2 * I + I * H)
    }

    /// Weight bytes that must be read: every touched expert's MXFP4 matrices and biases, plus the router.
    static func weightBytes(expertsTouched: Int, config c: MoEConfig) -> Double {
        Double(expertsTouched) * Double(c.gateUpBytesPerExpert + c.downBytesPerExpert + c.biasBytesPerExpert)
            + Double(c.experts * c.hidden * 2 + c.experts * 2)
    }

    /// The physical floor in seconds: the larger of bytes over bandwidth and flops over peak.
    static func floorSeconds(flops: Double, bytes: Double, ceilings: HardwareCeilings) -> Double {
        max(bytes / (ceilings.bandwidthGBps * 1e9), flops / (ceilings.peakTFLOPs * 1e12))
    }
}

/// Order statistics of a timing sample.
struct TimingStats {
    var median: Double
    var p10: Double
    var p90: Double

    init(_ samples: [Double]) {
        precondition(!samples.isEmpty)
        let sorted = samples.sorted()
        func quantile(_ q: Double) -> Double {
            let position = q * Double(sorted.count - 1)
            let lo = Int(position.rounded(.down)), hi = Int(position.rounded(.up))
            return sorted[lo] + (sorted[hi] - sorted[lo]) * (position - Double(lo))
        }
        median = quantile(0.5)
        p10 = quantile(0.1)
        p90 = quantile(0.9)
    }
}
