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
        try runTogether([arguments])[0]
    }

    /// Runs several tool processes at once (the nodes of a multi-node job) and collects each one's output.
    static func runTogether(_ commands: [[String]], executable: String = tool) throws -> [Run] {
        let start = MonotonicClock.seconds()
        let children = try commands.map {
            try ChildProcess.spawn(
                executable: executable, arguments: $0, environment: ChildProcess.currentEnvironment.filter { !$0.hasPrefix("MOE_") })
        }
        var streams = [[[UInt8]]](repeating: [[], []], count: children.count)
        var ended = [Double](repeating: 0, count: children.count)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while children.contains(where: { $0.outputDescriptor >= 0 || $0.errorDescriptor >= 0 }) {
            var descriptors: [pollfd] = []
            var owners: [(Int, Int)] = []
            for (index, child) in children.enumerated() {
                for (stream, fd) in [child.outputDescriptor, child.errorDescriptor].enumerated() where fd >= 0 {
                    descriptors.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                    owners.append((index, stream))
                }
            }
            _ = poll(&descriptors, nfds_t(descriptors.count), 1000)
            for (slot, descriptor) in descriptors.enumerated() where descriptor.revents != 0 {
                let (index, stream) = owners[slot]
                let n = buffer.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    streams[index][stream].append(contentsOf: buffer[0..<n])
                } else {
                    close(descriptor.fd)
                    if stream == 0 { children[index].outputDescriptor = -1 } else { children[index].errorDescriptor = -1 }
                    ended[index] = MonotonicClock.seconds() - start
                }
            }
        }
        return children.enumerated().map { index, child in
            Run(
                status: child.wait().shellStatus, output: String(decoding: streams[index][0], as: UTF8.self),
                errors: String(decoding: streams[index][1], as: UTF8.self), seconds: ended[index])
        }
    }

    /// A free TCP port on the loopback interface (for a multi-node job's --master).
    static func freePort() throws -> Int {
        let (socket, port) = try loopbackListener()
        socket.close()
        return port
    }

    /// A socket listening on a free loopback port, and the port.
    static func loopbackListener() throws -> (TCPSocket, Int) {
        let socket = try TCPSocket.listen(on: try TCPSocket.resolve("127.0.0.1:0"), label: "port probe")
        return (socket, Int(UInt16(bigEndian: socket.localAddress.sin_port)))
    }

    /// The launch commands of `nodes` node launchers on 127.0.0.1, each running `ranks` ranks of `command`.
    static func nodeCommands(nodes: Int, ranks: Int, extra: [String] = [], _ command: [String]) throws -> [[String]] {
        let master = "127.0.0.1:\(try freePort())"
        return (0..<nodes).map { node in
            ["launch", "--nodes", "\(nodes)", "--node-rank", "\(node)", "--master", master, "--ranks", "\(ranks)"] + extra
                + ["--"] + command
        }
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

    @Test func aRankTerminatedDuringSetupRemovesItsOwnSegment() throws {
        let job = SymmetricHeap.newJobID()
        // Rank 1 stalls before the setup barrier (its segment still named); rank 0 times out; the launcher then
        // sends rank 1 SIGTERM, whose handler unlinks the segment, so the launcher finds nothing left to remove.
        let run = try Self.run([
            "launch", "--ranks", "2", "--timeout", "1", "--kill-grace", "0.3", "--job-id", job, "--",
            "forward", "--shape", "64,32,8,4", "--tokens", "4", "--fault", "rank=1,phase=setup,layer=0,action=stall",
        ])
        #expect(run.status != 0)
        #expect(run.seconds < 10)
        #expect(run.errors.contains("timed out after 1 s at barrier 'setup'"), "\(run.errors)")
        #expect(run.errors.contains("terminating rank 1"), "\(run.errors)")
        #expect(!run.errors.contains("removed"), "the signal handler should have unlinked it: \(run.errors)")
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

    // MARK: several "nodes" on 127.0.0.1

    @Test(arguments: CommMode.allCases)
    func twoNodesOfTwoRanksAreBitIdentical(comm: CommMode) throws {
        let runs = try Self.runTogether(Self.nodeCommands(nodes: 2, ranks: 2, [
            "forward", "--comm", comm.rawValue, "--shape", "64,32,8,4", "--tokens", "13", "--layers", "2", "--verify",
        ]))
        for run in runs { #expect(run.status == 0, "\(run.all)") }
        #expect(runs[0].output.contains("[rank 0] bit-identical to the single-rank forward"), "\(runs[0].all)")
        #expect(runs[1].output.contains("[rank 3] rank 3/4"), "\(runs[1].all)")
        #expect(runs[1].errors.contains("node 1 of 2: joined job"), "\(runs[1].errors)")
    }

    @Test func threeNodesOfOneRankRunOverTCPOnlyInChunks() throws {
        let runs = try Self.runTogether(Self.nodeCommands(nodes: 3, ranks: 1, [
            "forward", "--shape", "96,160,5,3", "--tokens", "10", "--max-tokens-per-rank", "2", "--map", "2,0,1,2,0",
            "--mode", "softmax-first", "--verify",
        ]))
        for run in runs { #expect(run.status == 0, "\(run.all)") }
        #expect(runs[0].output.contains("bit-identical"), "\(runs[0].all)")
    }

    @Test func aKilledRankOnAnotherNodeEndsTheJob() throws {
        let runs = try Self.runTogether(Self.nodeCommands(nodes: 2, ranks: 2, extra: ["--timeout", "30"], [
            "forward", "--shape", "64,32,8,4", "--tokens", "12", "--layers", "3",
            "--fault", "rank=3,phase=combine,layer=1,action=kill",
        ]))
        // Node 1's launcher exits with the first failing rank's status it reaps: rank 3's SIGKILL, or its node-mate
        // rank 2's error exit when rank 2 noticed the death first (seen under load).
        #expect(runs[1].status == 128 + SIGKILL || (runs[1].status != 0 && runs[1].all.contains("rank 3")), "\(runs[1].all)")
        #expect(runs[0].status != 0, "\(runs[0].all)")
        #expect(runs.allSatisfy { $0.seconds < 10 }, "\(runs.map(\.seconds))")
        #expect(runs[0].errors.contains("rank 3 (pid"), "\(runs[0].errors)")
        // Node 0's ranks see rank 3's connection drop, or hear from rank 2 (rank 3's node-mate) that it died.
        #expect(
            runs[0].errors.contains("on another node disconnected") || runs[0].errors.contains("died (its process is gone)"),
            "\(runs[0].errors)")
    }

    @Test func nodesWithAnotherModelOrShapeAreRefused() throws {
        // Rank 1 (alone on node 1) loads other weights: the rendezvous refuses both ranks, naming it and the field.
        let weights = try Self.runTogether(Self.nodeCommands(nodes: 2, ranks: 1, extra: ["--timeout", "20"], [
            "forward", "--shape", "64,32,8,4", "--tokens", "4", "--fault", "rank=1,action=other-seed",
        ]))
        for run in weights {
            #expect(run.status != 0)
            #expect(run.seconds < 10)
            #expect(run.errors.contains("rank 1 was started with a different weights ("), "\(run.errors)")
        }
        // Rank 2 of node 1 loads other weights: its node-mate refuses it through shared memory, node 1's launcher
        // reports the failure to node 0, and node 0's ranks stop at once instead of waiting out the timeout.
        let local = try Self.runTogether(Self.nodeCommands(nodes: 2, ranks: 2, extra: ["--timeout", "20"], [
            "forward", "--shape", "64,32,8,4", "--tokens", "4", "--fault", "rank=2,action=other-seed",
        ]))
        #expect(local.allSatisfy { $0.status != 0 && $0.seconds < 10 }, "\(local.map(\.seconds))")
        #expect(local[1].errors.contains("was started with a different model weights (digest)"), "\(local[1].errors)")
        #expect(local[0].errors.contains("node 1 failed: rank"), "\(local[0].errors)")
        // Node 1 with another --ranks is refused before any of its ranks starts.
        var commands = try Self.nodeCommands(nodes: 2, ranks: 2, extra: ["--timeout", "20"], [
            "forward", "--shape", "64,32,8,4", "--tokens", "4",
        ])
        commands[1][commands[1].firstIndex(of: "--ranks")! + 1] = "3"
        let shape = try Self.runTogether(commands)
        #expect(shape[1].status != 0)
        #expect(shape[1].errors.contains("node 1 was started with --nodes 2 --ranks 3; node 0 has --nodes 2 --ranks 2"), "\(shape[1].errors)")
        #expect(shape[0].status != 0 && shape[0].seconds < 10, "\(shape[0].all)")
        // Whichever of node 0's ranks reaches the rendezvous first reports the refusal.
        let refusal = try Regex("the rendezvous refused rank [01]: node 1 was started with")
        #expect(shape[0].errors.contains(refusal), "\(shape[0].errors)")
    }
}

/// SIGTERM to the launcher: the ranks get the signal and time to finish (a server drains its requests), not the
/// 5 s kill grace of a failed job; a second signal ends them at once.
@Test func aSignalLetsTheRanksFinishAndASecondOneEndsThem() throws {
    func launch(lingerMilliseconds: Int) throws -> ServeRanksTests.Server {
        try ServeRanksTests.Server(
            ["launch", "--ranks", "2", "--kill-grace", "0.5", "--signal-grace", "30", "--", "linger",
             "--milliseconds", "\(lingerMilliseconds)"],
            listens: false, executable: LaunchedRankTests.tool)
    }
    /// Reads the launcher's output until both ranks linger; then sends `signals` SIGTERMs and returns its end.
    func run(_ launcher: ServeRanksTests.Server, signals: Int) -> (status: Int32, seconds: Double, output: String) {
        var sent = 0, sentAt = 0.0
        let start = MonotonicClock.seconds()
        while launcher.pump(timeoutMilliseconds: 50) {
            // The first signal once both ranks linger; a second one once the launcher has taken the first.
            let ready = sent == 0 ? launcher.output.components(separatedBy: "lingering").count - 1 >= 2
                : launcher.output.contains("a second signal ends them at once")
            if sent < signals, ready {
                kill(launcher.child.pid, SIGTERM)
                if sent == 0 { sentAt = MonotonicClock.seconds() }
                sent += 1
            }
            if MonotonicClock.seconds() - start > 60 { kill(launcher.child.pid, SIGKILL) }
        }
        return (launcher.child.wait().shellStatus, MonotonicClock.seconds() - sentAt, launcher.output)
    }
    // One signal: the ranks work on for 8 s, well past the 0.5 s kill grace + 3 s, and end normally.
    let patient = run(try launch(lingerMilliseconds: 8000), signals: 1)
    #expect(patient.status == 0, "\(patient.output)")
    #expect(patient.seconds > 4 && patient.output.contains("a second signal ends them at once"), "\(patient.output)")
    #expect(!patient.output.contains("terminating rank"), "\(patient.output)")
    // Two signals: killed at once.
    let impatient = run(try launch(lingerMilliseconds: 20_000), signals: 2)
    #expect(impatient.status != 0 && impatient.seconds < 5, "\(impatient.seconds) s: \(impatient.output)")
    #expect(impatient.output.contains("again; killing the ranks"), "\(impatient.output)")
}
