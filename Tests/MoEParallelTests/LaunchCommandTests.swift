import Foundation
import MoECheckpoint
import MoECore
import Testing

import MoECUDA
@testable import MoEParallel

/// The `moe` binary's expert-parallel surface: `moe launch` and `moe bench --ranks`.
@Suite(.serialized) struct LaunchCommandTests {
    static var moe: String {
        let tool = LaunchedRankTests.tool
        return String(tool.dropLast("MoEParallelRankTool".count)) + "moe"
    }

    static func run(_ arguments: [String]) throws -> LaunchedRankTests.Run {
        let start = MonotonicClock.seconds()
        let child = try ChildProcess.spawn(
            executable: moe, arguments: arguments, environment: ChildProcess.currentEnvironment.filter { !$0.hasPrefix("MOE_") })
        var output = Data(), errors = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while child.outputDescriptor >= 0 || child.errorDescriptor >= 0 {
            var descriptors = [child.outputDescriptor, child.errorDescriptor].filter { $0 >= 0 }
                .map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            _ = poll(&descriptors, nfds_t(descriptors.count), 1000)
            for descriptor in descriptors where descriptor.revents != 0 {
                let isOutput = descriptor.fd == child.outputDescriptor
                let n = buffer.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    if isOutput { output.append(contentsOf: buffer[0..<n]) } else { errors.append(contentsOf: buffer[0..<n]) }
                } else {
                    close(descriptor.fd)
                    if isOutput { child.outputDescriptor = -1 } else { child.errorDescriptor = -1 }
                }
            }
        }
        return .init(
            status: child.wait().shellStatus, output: String(decoding: output, as: UTF8.self),
            errors: String(decoding: errors, as: UTF8.self), seconds: MonotonicClock.seconds() - start)
    }

    @Test func launchRunsBenchAsRanksAndChecksBothPathsFirst() throws {
        let job = SymmetricHeap.newJobID()
        let run = try Self.run([
            "launch", "--ranks", "3", "--job-id", job, "--",
            "bench", "--preset", "tiny", "--tokens", "4,7", "--iterations", "2", "--warmup", "0",
        ])
        #expect(run.status == 0, "\(run.all)")
        #expect(run.output.contains("[rank 0] check:   both paths bit-identical to the single-rank CPU forward"), "\(run.output)")
        #expect(run.output.contains("[rank 0] T=7 (3 per rank)"), "\(run.output)")
        #expect(run.output.contains("a2a/sym"), "\(run.output)")
        // Only rank 0 prints results.
        #expect(!run.output.contains("[rank 1] T="), "\(run.output)")
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func benchRanksShortcutWritesTheDocumentedJSON() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ep-bench-\(UInt32.random(in: 0...UInt32.max)).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try Self.run([
            "bench", "--ranks", "2", "--comm", "alltoall", "--preset", "tiny", "--tokens", "5", "--iterations", "2",
            "--warmup", "0", "--json", path,
        ])
        #expect(run.status == 0, "\(run.all)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        let config = object["config"] as! [String: Any]
        #expect(config["ranks"] as? Int == 2)
        #expect(config["comm"] as? String == "alltoall")
        let rows = object["rows"] as! [[String: Any]]
        #expect(rows.count == 1 && rows[0]["tokens"] as? Int == 5)
        let stages = rows[0]["stages"] as! [String: Any]
        #expect(Set(stages.keys) == ["route", "metadata", "dispatch", "experts", "combine", "reduce"])
        let parallel = object["expert_parallel"] as! [String: Any]
        let epRows = parallel["rows"] as! [[String: Any]]
        let paths = epRows[0]["paths"] as! [[String: Any]]
        #expect(paths.map { $0["comm"] as? String } == ["symmetric", "alltoall"])
        #expect((epRows[0]["alltoall_over_symmetric"] as? Double ?? 0) > 0)
        #expect((paths[0]["median_us"] as? Double ?? 0) > 0)
        for path in paths {
            #expect((path["phase_wait_us"] as? [Double])?.count == 6)
            #expect((path["comm_work_us"] as? Double ?? -1) >= 0)
        }
    }

    @Test func badLaunchesAreRefusedWithAReason() throws {
        let missing = try Self.run(["launch", "--ranks", "2"])
        #expect(missing.status != 0)
        #expect(missing.errors.contains("give the command to run after --"), "\(missing.errors)")
        let disagree = try Self.run([
            "launch", "--ranks", "2", "--", "bench", "--ranks", "3", "--preset", "tiny", "--tokens", "2",
        ])
        #expect(disagree.status != 0)
        #expect(disagree.errors.contains("--ranks 3 disagrees with MOE_WORLD_SIZE=2"), "\(disagree.errors)")
        if !CUDABackend.availability().available {
            // GPU expert parallelism (GPUExpertParallelBench) says why it cannot run.
            let gpu = try Self.run(["bench", "--ranks", "2", "--backend", "cuda", "--preset", "tiny", "--tokens", "2"])
            #expect(gpu.status != 0)
            #expect(gpu.errors.contains("GPU expert parallelism needs the CUDA backend"), "\(gpu.errors)")
        }
    }

    @Test func benchAcrossTwoLoopbackNodes() throws {
        let runs = try LaunchedRankTests.runTogether(
            LaunchedRankTests.nodeCommands(nodes: 2, ranks: 1, [
                "bench", "--preset", "tiny", "--tokens", "6", "--iterations", "2", "--warmup", "0",
            ]), executable: Self.moe)
        for run in runs { #expect(run.status == 0, "\(run.all)") }
        #expect(runs[0].output.contains("[rank 0] check:   both paths bit-identical"), "\(runs[0].all)")
        #expect(runs[0].output.contains("R=2 ranks"), "\(runs[0].output)")
    }

    @Test func forwardRanksWritesTheSameFileAsOneRank() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ep-forward-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let model = directory + "/model"
        let initRun = try Self.run(["init", "--preset", "tiny", "--out", model, "--layers", "2", "--seed", "5"])
        #expect(initRun.status == 0, "\(initRun.all)")
        let tokens = 9
        let hidden = MoEPreset.tiny.config.hidden
        try HiddenStatesFile.writeInput(
            directory + "/in.safetensors", values: SyntheticModel.hiddenStates(tokens: tokens, hidden: hidden, seed: 3),
            tokens: tokens, hidden: hidden)
        let common = ["forward", "--model", model, "--layer", "1", "--input", directory + "/in.safetensors", "--routing", "softmax-first"]
        let single = try Self.run(common + ["--output", directory + "/single.safetensors", "--backend", "cpu"])
        #expect(single.status == 0, "\(single.all)")
        for (ranks, comm) in [(2, "symmetric"), (4, "alltoall")] {
            let path = directory + "/ep-\(ranks).safetensors"
            let parallel = try Self.run(common + ["--output", path, "--ranks", "\(ranks)", "--comm", comm])
            #expect(parallel.status == 0, "\(parallel.all)")
            #expect(parallel.output.contains("[rank 0] wrote \(path)"), "\(parallel.output)")
            let expected = try HiddenStatesFile.readOutput(directory + "/single.safetensors")
            let actual = try HiddenStatesFile.readOutput(path)
            #expect(actual.hidden.map(\.bitPattern) == expected.hidden.map(\.bitPattern), "R=\(ranks) \(comm)")
            #expect(actual.topkIds == expected.topkIds)
            #expect(actual.topkWeights.map(\.bitPattern) == expected.topkWeights.map(\.bitPattern))
        }
    }
}

/// Ranks inherit the engine's settings but never an enclosing job's rank identity (the launcher sets those).
@Test func launchedRanksInheritSettingsButNotAnotherJobsIdentity() {
    let parent = [
        "PATH=/usr/bin", "MOE_CUDA_LIBRARY_PATH=/opt/nccl/lib", "MOE_KERNEL_CACHE=/tmp/k", "MOE_CUDA_PDL=0",
        "MOE_RANK=3", "MOE_WORLD_SIZE=4", "MOE_JOB_ID=abc", "MOE_LOCAL_RANK=1", "MOE_LOCAL_WORLD_SIZE=2", "MOE_NODE_RANK=1",
        "MOE_NODES=2", "MOE_MASTER=h:1", "MOE_COMM=alltoall", "MOE_A2A_TRANSPORT=ipc", "MOE_TIMEOUT=5", "MOE_LAUNCHER_PID=7",
        "MOE_RANKS_NOTE=kept",
    ]
    let inherited = RankLauncher.inheritedEnvironment(parent)
    #expect(inherited == ["PATH=/usr/bin", "MOE_CUDA_LIBRARY_PATH=/opt/nccl/lib", "MOE_KERNEL_CACHE=/tmp/k", "MOE_CUDA_PDL=0", "MOE_RANKS_NOTE=kept"])
}

/// `moe info` lists the backends and NCCL, and what NCCL's absence costs (this machine has no libnccl in CI).
@Test func infoListsTheBackendsAndNCCL() throws {
    let run = try LaunchCommandTests.run(["info"])
    #expect(run.status == 0, "\(run.all)")
    #expect(run.output.contains("backend  available") && run.output.contains("cpu "))
    // The NCCL row says whether it loaded and, either way, what that means for the GPU paths: where it looked and
    // what replaces it when absent, what uses it when present.
    let ncclRow = run.output.split(separator: "\n").first { $0.hasPrefix("nccl ") }.map(String.init) ?? ""
    let fields = ncclRow.split(separator: " ", omittingEmptySubsequences: true)
    #expect(fields.count > 2 && (fields[1] == "yes" || fields[1] == "no"), "\(run.output)")
    if fields.count > 1, fields[1] == "no" {
        #expect(ncclRow.contains("looked in") && ncclRow.contains("MOE_CUDA_LIBRARY_PATH"), "\(ncclRow)")
        #expect(ncclRow.contains("copies through CUDA IPC") && ncclRow.contains("one node only"), "\(ncclRow)")
    } else {
        #expect(ncclRow.contains("all-to-all baseline over NCCL") && ncclRow.contains("rails across nodes"), "\(ncclRow)")
    }
}
