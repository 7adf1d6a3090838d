import CMoECPUKernels
import MoECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The instruction-set paths of the CPU backend's expert GEMMs. Chosen once per backend from the CPU's features
/// (the best supported one), or forced by `CPUBackend(weights:workers:kernels:)` or by the environment variable
/// `MOEKIT_CPU_KERNELS` (for tests and benchmarks). Every path reads the same packed weights and meets the
/// same accuracy bar; `portable` runs everywhere.
public enum CPUKernelPath: String, CaseIterable, Sendable, Codable {
    /// AMX BF16: MXFP4 decoded to bf16 by vpermw into AMX tiles (the block scale folded into the exponents where that
    /// is exact), tdpbf16ps, fp32 sums (Sapphire Rapids and later; Linux grants the tile state at start-up).
    case amxBF16 = "amx-bf16"
    /// AVX-512 BF16: MXFP4 decoded to bf16 by vpermw, vdpbf16ps dot products, fp32 sums (Zen 4, Sapphire Rapids).
    case avx512BF16 = "avx512-bf16"
    /// AVX2 + FMA: MXFP4 decoded to fp32 by vpermps, fp32 FMA (x86-64 since Haswell / Zen 1).
    case avx2 = "avx2"
    /// NEON: MXFP4 decoded to fp32 by a table lookup, fp32 FMA (every arm64 CPU).
    case neon
    /// Swift SIMD, no instruction-set assumptions: the reference the other paths are tested against.
    case portable

    /// Names the environment variable that forces a path.
    public static let environmentVariable = "MOEKIT_CPU_KERNELS"

    /// Whether this CPU (and OS) can run the path.
    public var isSupported: Bool {
        let features = moekit_cpu_features()
        switch self {
        case .amxBF16: return features & MOEKIT_CPU_AMX_BF16 != 0
        case .avx512BF16: return features & MOEKIT_CPU_AVX512_BF16 != 0
        case .avx2: return features & MOEKIT_CPU_AVX2_FMA != 0
        case .neon: return features & MOEKIT_CPU_NEON != 0
        case .portable: return true
        }
    }

    /// Supported paths, fastest first.
    public static var supported: [CPUKernelPath] { allCases.filter(\.isSupported) }

    /// The fastest path this CPU supports.
    public static var best: CPUKernelPath { supported[0] }

    /// What the path needs, for error messages.
    public var requirement: String {
        switch self {
        case .amxBF16: "an x86-64 CPU with AMX-TILE, AMX-BF16 and AVX512_BF16 (Intel Sapphire Rapids or later) and an OS that grants the tile state"
        case .avx512BF16: "an x86-64 CPU with AVX-512 F/BW/VL and AVX512_BF16 (e.g. AMD Zen 4, Intel Sapphire Rapids)"
        case .avx2: "an x86-64 CPU with AVX2 and FMA3"
        case .neon: "an arm64 CPU (Advanced SIMD)"
        case .portable: "nothing"
        }
    }

    /// The path named by `MOEKIT_CPU_KERNELS`, nil when it is unset or empty. Throws when it names no path or
    /// one this CPU cannot run.
    public static func fromEnvironment() throws -> CPUKernelPath? {
        try fromEnvironmentValue(getenv(environmentVariable).map { String(cString: $0) })
    }

    /// `fromEnvironment` for a given value of the variable (nil: unset).
    static func fromEnvironmentValue(_ value: String?) throws -> CPUKernelPath? {
        guard let value, !value.isEmpty else { return nil }
        return try named(value, source: environmentVariable)
    }

    /// What the non-throwing `CPUBackend.init` runs for a value of MOEKIT_CPU_KERNELS: the named path, or the
    /// fastest one with a note saying why the name was not used.
    static func selection(environmentValue value: String?) -> (path: CPUKernelPath, note: String?) {
        do {
            return (try fromEnvironmentValue(value) ?? best, nil)
        } catch {
            return (best, "\(error); using \(best.rawValue)")
        }
    }

    /// Parses a path name and checks that this CPU supports it; `source` says where the name came from.
    public static func named(_ name: String, source: String) throws -> CPUKernelPath {
        guard let path = CPUKernelPath(rawValue: name) else {
            throw MoEError.invalidArgument(
                "\(source)=\(name) names no CPU kernel path; use one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        try path.requireSupported()
        return path
    }

    /// Throws `backendUnavailable` naming what the path needs when this CPU cannot run it.
    public func requireSupported() throws {
        guard isSupported else {
            throw MoEError.backendUnavailable(
                backend: "cpu (\(rawValue) kernels)",
                reason: "needs \(requirement); this CPU supports \(CPUKernelPath.supported.map(\.rawValue).joined(separator: ", "))")
        }
    }

    /// Tokens one tile call takes (the path's register budget).
    var maxTileTokens: Int {
        switch self {
        case .amxBF16: Int(MOEKIT_AMX_TILE_TOKENS)
        case .avx512BF16: 12
        case .avx2: 8
        case .neon: 8
        case .portable: 8
        }
    }

    /// How the path lays out a GEMM's activations (moekit_cpu.h).
    var activationLayout: ActivationLayout {
        switch self {
        case .amxBF16: .bf16Rows
        case .avx512BF16, .portable: .bf16Pairs
        case .avx2, .neon: .float32
        }
    }

    /// One line for `detail`.
    var summary: String {
        switch self {
        case .amxBF16: "amx-bf16 (MXFP4→bf16 vpermw into AMX tiles, tdpbf16ps, fp32 sums)"
        case .avx512BF16: "avx512-bf16 (MXFP4→bf16 vpermw, vdpbf16ps, fp32 sums)"
        case .avx2: "avx2 (MXFP4→fp32 vpermps, fp32 FMA)"
        case .neon: "neon (MXFP4→fp32 tbl, fp32 FMA)"
        case .portable: "portable (Swift SIMD, fp32)"
        }
    }
}

/// The layouts of packed GEMM activations (moekit_cpu.h).
enum ActivationLayout {
    /// [K/2][tokens] UInt32: a bf16 pair per word, the even input in the low half.
    case bf16Pairs
    /// [K][tokens] Float.
    case float32
    /// [tokens][K] UInt16: each token's bf16 row as it is (AMX A tiles).
    case bf16Rows

    /// Bytes per activation value.
    var bytesPerValue: Int {
        switch self {
        case .bf16Pairs, .bf16Rows: 2
        case .float32: 4
        }
    }

    /// Bytes from the start of a group's packed values to its column `column` (a multiple of 16), for `count` tokens.
    func columnOffset(_ column: Int, tokens count: Int) -> Int {
        switch self {
        case .bf16Pairs, .float32: column * count * bytesPerValue
        case .bf16Rows: column * bytesPerValue
        }
    }
}
