/// How router logits become top-k expert weights (DESIGN §2).
public enum RoutingMode: String, CaseIterable, Sendable, Codable {
    /// gpt-oss default: take the k largest logits, then softmax over those k only.
    case renormalize
    /// Softmax over all E logits, then the k largest probabilities, not renormalised.
    case softmaxFirst = "softmax-first"
}

/// Top-k selection for one token. Ties go to the lower expert id; the k slots are ordered by descending
/// weight (ties: lower id). Weights are computed in the precision of `Scalar`.
public enum TopK {
    /// Indices of the k largest values of `logits[0..<count]`, largest first, ties to the lower index.
    /// Insertion into a k-long sorted list: O(E·k), no allocation beyond `ids`.
    @inlinable
    public static func largest<Scalar: BinaryFloatingPoint>(
        _ logits: UnsafePointer<Scalar>, count: Int, k: Int, into ids: UnsafeMutablePointer<Int32>
    ) {
        var filled = 0
        for e in 0..<count {
            let value = logits[e]
            // A later index only displaces an earlier one when strictly larger: ties keep the lower id.
            if filled == k && !(value > logits[Int(ids[k - 1])]) { continue }
            var position = filled == k ? k - 1 : filled
            if filled < k { filled += 1 }
            while position > 0 && value > logits[Int(ids[position - 1])] {
                ids[position] = ids[position - 1]
                position -= 1
            }
            ids[position] = Int32(e)
        }
    }

    /// Routes one token: writes k expert ids and k weights.
    @inlinable
    public static func route<Scalar: BinaryFloatingPoint & ElementaryExp>(
        logits: UnsafePointer<Scalar>, experts: Int, k: Int, mode: RoutingMode,
        ids: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Scalar>
    ) {
        largest(logits, count: experts, k: k, into: ids)
        let top = logits[Int(ids[0])]  // the overall maximum
        switch mode {
        case .renormalize:
            var sum: Scalar = 0
            for j in 0..<k {
                let w = Scalar.expOf(logits[Int(ids[j])] - top)
                weights[j] = w
                sum += w
            }
            for j in 0..<k { weights[j] /= sum }
        case .softmaxFirst:
            var sum: Scalar = 0
            for e in 0..<experts { sum += Scalar.expOf(logits[e] - top) }
            for j in 0..<k { weights[j] = Scalar.expOf(logits[Int(ids[j])] - top) / sum }
        }
    }
}

/// exp for the two scalar types the engine routes in (Foundation-free).
public protocol ElementaryExp { static func expOf(_ x: Self) -> Self }
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif
extension Float: ElementaryExp { @inlinable public static func expOf(_ x: Float) -> Float { expf(x) } }
extension Double: ElementaryExp { @inlinable public static func expOf(_ x: Double) -> Double { exp(x) } }
