import Testing

@testable import MoEParallel

#if canImport(Glibc)
import Glibc
#endif

/// Real rank processes started by the launcher (the MoEParallelRankTool executable, built with the tests):
/// bit-identity across processes, faults, rendezvous refusals and /dev/shm cleanup.
@Suite(.serialized) struct LaunchedRankTests {
    struct Run {
        var status: Int32
        var output: String
        var errors: String
        var seconds: Double
        var all: String { output + errors }
    }

    /// The rank tool next to the test bundle.
    static var tool: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let path = String(decoding: buffer[0..<max(0, n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return directory + "/MoEParallelRankTool"
    }

    /// Runs the tool to completion, capturing both streams.
    static func run(_ arguments: [String]) throws -> Run {
        let start = MonotonicClock.seconds()
        let child = try ChildProcess.spawn(
            executable: tool, arguments: arguments, environment: ChildProcess.currentEnvironment.filter { !$0.hasPrefix("MOE_") })
        var streams = [[UInt8]](repeating: [], count: 2)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while child.outputDescriptor >= 0 || child.errorDescriptor >= 0 {
            var descriptors = [child.outputDescriptor, child.errorDescriptor].filter { $0 >= 0 }
                .map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            _ = poll(&descriptors, nfds_t(descriptors.count), 1000)
            for descriptor in descriptors where descriptor.revents != 0 {
                let stream = descriptor.fd == child.outputDescriptor ? 0 : 1
                let n = buffer.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    streams[stream].append(contentsOf: buffer[0..<n])
                } else {
                    close(descriptor.fd)
                    if stream == 0 { child.outputDescriptor = -1 } else { child.errorDescriptor = -1 }
                }
            }
        }
        let status = child.wait().shellStatus
        return Run(
            status: status, output: String(decoding: streams[0], as: UTF8.self),
            errors: String(decoding: streams[1], as: UTF8.self), seconds: MonotonicClock.seconds() - start)
    }

    @Test(arguments: [1, 2, 3, 4], CommMode.allCases)
    func rankProcessesAreBitIdenticalToSingleRank(ranks: Int, comm: CommMode) throws {
        let job = SymmetricHeap.newJobID()
        // 11 tokens: every R here needs padding; two layers; softmax-first on odd R.
        let mode = ranks % 2 == 0 ? "renormalize" : "softmax-first"
        let run = try Self.run([
            "launch", "--ranks", "\(ranks)", "--comm", comm.rawValue, "--job-id", job, "--",
            "forward", "--shape", "64,32,8,4", "--tokens", "11", "--layers", "2", "--mode", mode, "--seed", "\(ranks)",
            "--verify",
        ])
        #expect(run.status == 0, "\(run.all)")
        #expect(run.output.contains("[rank 0] bit-identical to the single-rank forward"), "\(run.all)")
        #expect(run.output.contains(", \(comm)"), "\(run.output)")
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func explicitMapFileChunkingAndTheRanksShortcut() throws {
        let path = "/tmp/moe-ep-launch-map-\(getpid()).json"
        defer { unlink(path) }
        let file = fopen(path, "w")!
        fputs("[2, 0, 0, 1, 2, 2, 0, 1]", file)
        fclose(file)
        // --ranks on the command itself relaunches it as 3 ranks; capacity 2 forces chunks of 2 tokens per rank.
        let run = try Self.run([
            "forward", "--ranks", "3", "--comm", "alltoall", "--shape", "64,32,8,4", "--tokens", "14",
            "--map", path, "--max-tokens-per-rank", "2", "--verify",
        ])
        #expect(run.status == 0, "\(run.all)")
        #expect(run.output.contains("bit-identical"), "\(run.all)")
        #expect(run.output.contains("[rank 0] rank 0/3: 64,32,8,4, tokens 0..<5, experts [1, 2, 6]"), "\(run.output)")
    }

    @Test func aKilledRankEndsTheOthersWithItsNameAndPhase() throws {
        let job = SymmetricHeap.newJobID()
        let run = try Self.run([
            "launch", "--ranks", "3", "--timeout", "30", "--job-id", job, "--",
            "forward", "--shape", "64,32,8,4", "--tokens", "12", "--layers", "3",
            "--fault", "rank=1,phase=dispatch,layer=1,action=kill",
        ])
        #expect(run.status == 128 + SIGKILL, "\(run.all)")
        // Far inside the 30 s timeout: death is detected, not waited out.
        #expect(run.seconds < 10, "took \(run.seconds) s")
        #expect(run.errors.contains("[launch] rank 1"), "\(run.errors)")
        #expect(run.errors.contains("was killed by SIGKILL"), "\(run.errors)")
        #expect(run.errors.contains("rank 1 (pid"), "\(run.errors)")
        #expect(run.errors.contains("died (its process is gone) while this rank waited at barrier 'dispatch' of layer 1"), "\(run.errors)")
        #expect(!run.errors.contains("stopped by the launcher"), "the others should stop on their own: \(run.errors)")
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func aStalledRankTimesTheOthersOutNamingIt() throws {
        let job = SymmetricHeap.newJobID()
        let run = try Self.run([
            "launch", "--ranks", "3", "--timeout", "1", "--kill-grace", "0.5", "--job-id", job, "--",
            "forward", "--shape", "64,32,8,4", "--tokens", "6", "--layers", "2",
            "--fault", "rank=2,phase=combine,layer=1,action=stall",
        ])
        #expect(run.status != 0)
        #expect(run.seconds < 10, "took \(run.seconds) s")
        #expect(run.errors.contains("timed out after 1 s at barrier 'combine' of layer 1 waiting for rank 2"), "\(run.errors)")
        #expect(run.errors.contains("terminating rank 2"), "\(run.errors)")
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func aRankExitingWithAnErrorStopsTheOthers() throws {
        let job = SymmetricHeap.newJobID()
        let run = try Self.run([
            "launch", "--ranks", "2", "--comm", "alltoall", "--timeout", "30", "--job-id", job, "--",
            "forward", "--shape", "64,32,8,4", "--tokens", "6", "--fault", "rank=0,phase=all-to-all-dispatch,layer=0,action=exit",
        ])
        #expect(run.status == 3, "\(run.all)")
        #expect(run.seconds < 10)
        #expect(run.errors.contains("injected failure"), "\(run.errors)")
        #expect(run.errors.contains("[rank 1] error: rank 0 (pid"), "\(run.errors)")
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func aRankWithOtherWeightsIsRefusedAtRendezvous() throws {
        let job = SymmetricHeap.newJobID()
        let run = try Self.run([
            "launch", "--ranks", "2", "--timeout", "5", "--kill-grace", "1", "--job-id", job, "--",
            "forward", "--shape", "64,32,8,4", "--tokens", "4", "--fault", "rank=1,action=other-seed",
        ])
        #expect(run.status != 0)
        #expect(run.errors.contains("was started with a different model weights"), "\(run.errors)")
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func aRankKilledBeforeSetupEndsLeavesNothingInDevShm() throws {
        let job = SymmetricHeap.newJobID()
        // Killed at the setup barrier: its segment exists and was never unlinked; the launcher removes it.
        let run = try Self.run([
            "launch", "--ranks", "2", "--timeout", "30", "--job-id", job, "--",
            "forward", "--shape", "64,32,8,4", "--tokens", "4", "--fault", "rank=1,phase=setup,layer=0,action=kill",
        ])
        #expect(run.status == 128 + SIGKILL, "\(run.all)")
        #expect(run.seconds < 10)
        #expect(run.errors.contains("removed 1 shared-memory segment"), "\(run.errors)")
        #expect(leftoverSegments(jobID: job).isEmpty)
    }

    @Test func benchPrintsBothPathsSideBySide() throws {
        let run = try Self.run([
            "bench", "--ranks", "2", "--shape", "64,32,8,4", "--tokens", "3,8", "--iterations", "3", "--warmup", "1",
        ])
        #expect(run.status == 0, "\(run.all)")
        for needle in ["T=3 (2 per rank)", "T=8 (4 per rank)", "symmetric µs", "alltoall µs", "a2a/sym", "dispatch", "layer median"] {
            #expect(run.output.contains(needle), "missing \(needle): \(run.output)")
        }
    }

    @Test func launchWithoutACommandIsABadRequest() throws {
        let run = try Self.run(["launch", "--ranks", "2"])
        #expect(run.status == 2)
        #expect(run.errors.contains("nothing to launch"), "\(run.errors)")
    }
}
