import MoECPU
import MoECUDA
import MoECore

/// Every backend this binary knows, in order of preference for `--backend auto`.
/// A backend registers a name, an availability probe and a constructor.
enum BackendRegistry {
    struct Provider: Sendable {
        var name: String
        var availability: @Sendable () -> BackendAvailability
        var make: @Sendable (MoELayerWeights) throws -> any MoEBenchmarkable
    }

    /// Most preferred first.
    static let providers: [Provider] = [
        Provider(name: "cuda", availability: { CUDABackend.availability() }, make: { try CUDABackend(weights: $0) }),
        Provider(name: "cpu", availability: { CPUBackend.availability() }, make: { CPUBackend(weights: $0) }),
    ]

    static func availability() -> [BackendAvailability] { providers.map { $0.availability() } }

    /// Builds the chosen backend. `auto` takes the first available provider and says why the better ones
    /// were passed over; an explicit choice that is unavailable fails naming what is missing.
    static func make(_ choice: BackendChoice, weights: MoELayerWeights) throws -> (backend: any MoEBenchmarkable, why: String) {
        if choice == .auto {
            var passedOver: [String] = []
            for provider in providers {
                let availability = provider.availability()
                if availability.available {
                    let why = passedOver.isEmpty
                        ? "auto: \(provider.name) (\(availability.reason))"
                        : "auto: \(provider.name); passed over \(passedOver.joined(separator: "; "))"
                    return (try provider.make(weights), why)
                }
                passedOver.append("\(provider.name): \(availability.reason)")
            }
            throw MoEError.backendUnavailable(backend: "auto", reason: passedOver.joined(separator: "; "))
        }
        guard let provider = providers.first(where: { $0.name == choice.rawValue }) else {
            throw MoEError.backendUnavailable(
                backend: choice.rawValue, reason: "this build of moe has no \(choice.rawValue) backend")
        }
        let availability = provider.availability()
        guard availability.available else {
            throw MoEError.backendUnavailable(backend: choice.rawValue, reason: availability.reason)
        }
        return (try provider.make(weights), "\(provider.name) (requested)")
    }
}
