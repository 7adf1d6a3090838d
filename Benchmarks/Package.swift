// swift-tools-version: 6.1
import PackageDescription

// Benchmarks for the CPU backend, kept out of the main package (CI does not build them).
//   MoECPUBenchmarks  package-benchmark suite guarding host-side overhead: allocations per forward pass after
//                     warm-up (must be 0) and the dispatch cost of a tiny layer.
//                     Run: swift package --package-path Benchmarks benchmark
//   cpu-layer-bench   ms per layer for the gpt-oss expert shapes, per kernel path, with the bandwidth floor.
//                     Run: swift run -c release --package-path Benchmarks cpu-layer-bench --help
let package = Package(
    name: "MoEKitBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "MoEKit", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "MoECPUBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "MoECPU", package: "MoEKit"),
                .product(name: "MoECore", package: "MoEKit"),
            ],
            path: "Benchmarks/MoECPUBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]),
        .executableTarget(
            name: "cpu-layer-bench",
            dependencies: [
                .product(name: "MoECPU", package: "MoEKit"),
                .product(name: "MoECore", package: "MoEKit"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
