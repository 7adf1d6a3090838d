import ArgumentParser
import Foundation
import MoECore

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "The conformance suite: every available backend against the float64 reference, many shapes and seeds.")

    @Option(help: "Backend to check: all (every backend, unavailable ones SKIP), auto, cpu or cuda.")
    var backend: String = "all"

    @Flag(help: "Small shapes only (skips the gpt-oss-sized cases).")
    var quick = false

    func validate() throws {
        if backend != "all" && BackendChoice(rawValue: backend) == nil {
            throw ValidationError("--backend must be all, auto, cpu or cuda (got '\(backend)')")
        }
    }

    func run() throws {
        let providers: [BackendRegistry.Provider]
        if backend == "all" {
            providers = BackendRegistry.providers
        } else if backend == "auto" {
            providers = Array(BackendRegistry.providers.filter { $0.availability().available }.prefix(1))
        } else {
            providers = BackendRegistry.providers.filter { $0.name == backend }
            if providers.isEmpty {
                throw MoEError.backendUnavailable(backend: backend, reason: "this build of moe has no \(backend) backend")
            }
        }
        let cases = Conformance.cases(quick: quick)
        var failures = 0, passes = 0, skips = 0
        print("backend  result  rel L2     case")
        for provider in providers {
            let availability = provider.availability()
            guard availability.available else {
                skips += 1
                print("\(provider.name.padding(8)) SKIP    -          all \(cases.count) cases: \(availability.reason)")
                if backend != "all" { failures += 1 }
                continue
            }
            for c in cases {
                let outcome = Conformance.run(c) { try provider.make($0) }
                if outcome.passed { passes += 1 } else { failures += 1 }
                let error = outcome.relativeL2.isNaN ? "-" : String(format: "%.2e", outcome.relativeL2)
                print("\(provider.name.padding(8)) \((outcome.passed ? "PASS" : "FAIL").padding(7)) \(error.padding(10)) \(c)\(outcome.detail.isEmpty ? "" : ": " + outcome.detail)")
                fflush(nil)
            }
        }
        print("\(passes) passed, \(failures) failed, \(skips) skipped")
        if failures > 0 { throw ExitCode.failure }
    }
}
