// swift-tools-version: 6.1
import PackageDescription

// Module map (DESIGN §6): a dependency-free core; platform-specific code at the edges.
//   MoECore        configs, bf16, MXFP4, routing, plan, reference forward, backend protocol, profiling
//   SafeTensors    memory-mapped safetensors reader and writer (no dependencies)
//   MoECheckpoint  Hugging Face gpt-oss model directories -> MoELayerWeights
//   MoECPU         the CPU backend
//   CMoECPUKernels its vector kernels (AVX-512 BF16, AVX2; chosen at run time), thread pool, CPU feature probe
//   CCUDA/MoECUDA  CUDA driver API + NVRTC (+ NCCL) loaded at run time with dlopen; kernels in Kernels/*.cu
//   MoEParallel    expert parallelism over symmetric memory, the all-to-all baseline, the rank launcher
//   MoEServer      the HTTP server (Hummingbird)
//   MoECLI         the `moe` tool
let package = Package(
    name: "MoEKit",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "moe", targets: ["MoECLI"]),
        .library(name: "MoECore", targets: ["MoECore"]),
        .library(name: "MoECPU", targets: ["MoECPU"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    ],
    targets: [
        .target(name: "MoECore"),
        .target(name: "SafeTensors"),
        .target(name: "MoECheckpoint", dependencies: ["MoECore", "SafeTensors"]),
        .target(name: "CMoECPUKernels"),
        .target(name: "MoECPU", dependencies: ["MoECore", "CMoECPUKernels"]),
        .target(name: "CCUDA", linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "MoECUDA", dependencies: ["MoECore", "CCUDA"],
            resources: [
                .embedInCode("Kernels/moe_params.h"), .embedInCode("Kernels/moe_common.cuh"),
                .embedInCode("Kernels/moe_routing.cu"), .embedInCode("Kernels/moe_experts.cu"),
                .embedInCode("Kernels/moe_ceilings.cu"),
                .embedInCode("Kernels/moe_ep.cu"), .embedInCode("Kernels/moe_ep_node.cuh"),
            ]),
        .target(name: "CMoEAtomics"),
        .target(name: "MoEParallel", dependencies: ["MoECore", "MoECPU", "MoECUDA", "CMoEAtomics"]),
        // The rank program the expert-parallel process tests launch (the same library code `moe launch` runs).
        .executableTarget(name: "MoEParallelRankTool", dependencies: ["MoEParallel"], path: "Tests/MoEParallelRankTool"),
        .target(
            name: "MoEServer",
            dependencies: [
                "MoECore", "MoECPU", "MoECheckpoint", "SafeTensors",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "MoECLI",
            dependencies: [
                "MoECore", "MoECPU", "MoECUDA", "MoECheckpoint", "SafeTensors", "MoEParallel", "MoEServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "MoECoreTests", dependencies: ["MoECore"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"]),
        .testTarget(name: "MoECheckpointTests", dependencies: ["MoECheckpoint", "MoECPU"]),
        .testTarget(name: "MoECPUTests", dependencies: ["MoECPU"]),
        .testTarget(name: "MoECUDATests", dependencies: ["MoECUDA"]),
        // moe_ep.cu's phase blocks (Kernels/moe_ep_node.cuh) compiled for the host, run by the rail tests.
        .target(name: "CMoEEPHost", path: "Tests/CMoEEPHost"),
        .testTarget(
            name: "MoEParallelTests", dependencies: ["MoEParallel", "MoEParallelRankTool", "MoECLI", "MoECheckpoint", "CMoEEPHost"]),
        .testTarget(
            name: "MoEServerTests",
            dependencies: ["MoEServer", .product(name: "HummingbirdTesting", package: "hummingbird")]),
        .testTarget(name: "MoECLITests", dependencies: ["MoECLI"]),
    ],
    swiftLanguageModes: [.v6]
)
