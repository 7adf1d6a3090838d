import CMoEAtomics

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `moe launch` starts.
public struct LaunchOptions: Sendable {
    /// Ranks on this node (the world is ranks × nodes).
    public var ranks: Int
    /// The command every rank runs: arguments after the executable (e.g. ["bench", "--preset", "tiny"]).
    public var arguments: [String]
    /// The program to start; by default this very executable.
    public var executable: String = "/proc/self/exe"
    public var comm: CommMode?
    /// The GPU all-to-all baseline's transport for every rank (MOE_A2A_TRANSPORT).
    public var allToAllTransport: AllToAllTransportChoice?
    /// Seconds a rank waits for a late peer before failing (MOE_TIMEOUT).
    public var timeoutSeconds: Double = 60
    /// Seconds the other ranks get to stop on their own after one fails, before the launcher terminates them.
    public var killGraceSeconds: Double = 5
    /// Seconds the ranks get to finish after the launcher forwarded SIGTERM/SIGINT to them (a server drains the
    /// requests in flight); a second signal ends them at once.
    public var signalGraceSeconds: Double = 120
    /// nil: a fresh random id.
    public var jobID: String?
    public var nodes: Int = 1
    public var nodeRank: Int = 0
    /// host:port of node 0's rendezvous, for multi-node jobs.
    public var master: String?
    /// Extra "NAME=value" variables for every rank.
    public var environment: [String] = []

    public init(ranks: Int, arguments: [String]) {
        self.ranks = ranks
        self.arguments = arguments
    }

    public func validate() throws {
        guard ranks >= 1, ranks <= 256 else { throw ExpertParallelError.invalidArgument("--ranks must be in 1...256, got \(ranks)") }
        guard nodes >= 1, nodeRank >= 0, nodeRank < nodes else {
            throw ExpertParallelError.invalidArgument("--node-rank \(nodeRank) must be in 0..<--nodes \(nodes)")
        }
        guard nodes == 1 || master != nil else {
            throw ExpertParallelError.invalidArgument("a job of \(nodes) nodes needs --master host:port (node 0's address)")
        }
        guard timeoutSeconds > 0, killGraceSeconds >= 0, signalGraceSeconds >= 0 else {
            throw ExpertParallelError.invalidArgument("--timeout must be > 0 and the kill and signal graces ≥ 0")
        }
        guard !arguments.isEmpty else {
            throw ExpertParallelError.invalidArgument("nothing to launch: give the command after --, e.g. moe launch --ranks 2 -- bench --preset tiny")
        }
    }
}

/// How one rank ended.
public struct RankExit: Sendable, Equatable, CustomStringConvertible {
    public enum Status: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
    }

    public var rank: Int
    public var pid: Int32
    public var status: Status
    /// The launcher stopped it after another rank failed (or on a forwarded signal).
    public var stoppedByLauncher: Bool

    public var succeeded: Bool { status == .exited(0) }

    public var description: String {
        let how: String
        switch status {
        case .exited(let code): how = "exited with status \(code)"
        case .signaled(let signal): how = "was killed by \(signalName(signal))"
        }
        return "rank \(rank) (pid \(pid)) \(how)\(stoppedByLauncher ? " (stopped by the launcher)" : "")"
    }
}

/// The result of a launch: every rank's end, the exit code to return, and what was cleaned up.
public struct LaunchOutcome: Sendable {
    public var jobID: String
    public var exits: [RankExit]
    /// 0 when every rank succeeded; otherwise the first failing rank's status (128 + signal if killed).
    public var exitCode: Int32
    /// Shared-memory segments the launcher removed after its ranks (left by ranks killed with SIGKILL
    /// before their heaps were set up).
    public var segmentsRemoved: Int
}

/// Starts R rank processes of one command, forwards their output with `[rank i]` prefixes, stops the rest
/// when one fails, and removes whatever shared memory a killed rank could not.
public enum RankLauncher {
    /// The variables a launched rank inherits: everything but those the launcher sets for each rank (a rank's
    /// identity, its job's comm, transport and timeout), so a stale MOE_RANK of an enclosing job cannot leak in
    /// while the engine's settings (MOE_CUDA_LIBRARY_PATH, MOE_KERNEL_CACHE, MOE_CUDA_PDL, …) reach every rank.
    static func inheritedEnvironment(_ environment: [String]) -> [String] {
        let owned = Set(RankEnvironment(jobID: "", rank: 0, world: 1, master: "", comm: .symmetric, allToAllTransport: .auto).variables.map(\.0))
            .union(["MOE_LAUNCHER_PID"])
        return environment.filter { entry in
            !owned.contains(String(entry.prefix { $0 != "=" }))
        }
    }

    /// Runs the ranks of this node to completion. Output goes to this process' stdout/stderr, each line
    /// prefixed; the launcher's own messages are prefixed `[launch]` and go to stderr.
    public static func run(_ options: LaunchOptions) throws -> LaunchOutcome {
        try options.validate()
        var jobID = options.jobID ?? SymmetricHeap.newJobID()
        let world = options.ranks * options.nodes
        // Multi-node: node 0 serves the rendezvous for the whole job; the other nodes learn the job id from it.
        var server: RendezvousServer?
        defer { server?.stop() }
        if options.nodes > 1, let master = options.master {
            if options.nodeRank == 0 {
                server = try RendezvousServer(
                    endpoint: master, jobID: jobID, nodes: options.nodes, ranksPerNode: options.ranks,
                    timeoutSeconds: options.timeoutSeconds)
                note("node 0 of \(options.nodes): rendezvous at \(master), job \(jobID)")
            } else {
                jobID = try RendezvousClient.joinJob(
                    master: master, nodeRank: options.nodeRank, ranksPerNode: options.ranks, nodes: options.nodes,
                    timeoutSeconds: options.timeoutSeconds)
                note("node \(options.nodeRank) of \(options.nodes): joined job \(jobID) at \(master)")
            }
        }
        let firstRank = options.nodeRank * options.ranks
        var base = Self.inheritedEnvironment(ChildProcess.currentEnvironment)
        base.append(contentsOf: options.environment)
        base.append("MOE_LAUNCHER_PID=\(getpid())")

        moe_watch_termination_signals()
        var children: [ChildProcess] = []
        for local in 0..<options.ranks {
            let environment = RankEnvironment(
                jobID: jobID, rank: firstRank + local, world: world, localRank: local, localWorld: options.ranks,
                nodeRank: options.nodeRank, nodes: options.nodes, master: options.master, comm: options.comm,
                allToAllTransport: options.allToAllTransport, timeoutSeconds: options.timeoutSeconds)
            let variables = environment.variables.map { "\($0.0)=\($0.1)" }
            do {
                children.append(try ChildProcess.spawn(
                    executable: options.executable, arguments: options.arguments, environment: base + variables))
            } catch {
                for child in children { kill(child.pid, SIGKILL) }
                for child in children { _ = child.wait() }
                throw error
            }
        }
        let (exits, culprit) = supervise(
            children, firstRank: firstRank, graceSeconds: options.killGraceSeconds, signalGraceSeconds: options.signalGraceSeconds
        ) { failure in
            // Other nodes' ranks may still wait at the rendezvous: tell them now rather than at their timeout.
            guard options.nodes > 1, let master = options.master else { return }
            if let server {
                server.reportFailure("\(failure)")
            } else {
                RendezvousClient.reportFailure(master: master, nodeRank: options.nodeRank, reason: "\(failure)")
            }
        }
        var removed = 0
        for rank in firstRank..<(firstRank + options.ranks)
        where SharedMemorySegment.removeIfPresent(name: SymmetricHeap.segmentName(jobID: jobID, rank: rank)) {
            removed += 1
        }
        if removed > 0 { note("removed \(removed) shared-memory segment(s) left by ranks that could not clean up") }
        // The exit code is the status of the rank that failed first (the others usually fail because of it).
        var code: Int32 = 0
        if let culprit = culprit.map({ exits[$0] }) {
            switch culprit.status {
            case .exited(let status): code = status == 0 ? 1 : status
            case .signaled(let signal): code = 128 + signal
            }
        }
        return LaunchOutcome(jobID: jobID, exits: exits, exitCode: code, segmentsRemoved: removed)
    }

    private static func note(_ message: String) { writeAll("[launch] \(message)\n", to: 2) }

    /// Forwards output until every child has ended; stops the others once one fails.
    /// Returns every rank's end and the index of the rank whose failure the exit code reports: the first seen, or a rank
    /// killed by a signal that ended within a second of it.
    private static func supervise(
        _ children: [ChildProcess], firstRank: Int, graceSeconds: Double, signalGraceSeconds: Double, onFirstFailure: (RankExit) -> Void
    ) -> (exits: [RankExit], culprit: Int?) {
        var splitters = [[LineSplitter]](repeating: [LineSplitter(), LineSplitter()], count: children.count)
        var ended = [RankExit?](repeating: nil, count: children.count)
        var firstFailure: Int?
        var terminated = false
        var killed = false
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        // Once stopping: when the running ranks get SIGTERM, then SIGKILL, then when their pipes stop being read.
        var terminateAt: Double?, killAt: Double?, stopReadingAt: Double?
        var signals = 0
        var endedAt = [Double?](repeating: nil, count: children.count)

        /// Starts (or, for a failure during a signal's longer grace, shortens) the countdown to terminating the ranks.
        func stopOthers(_ why: String, grace: Double) {
            let at = MonotonicClock.seconds() + grace
            guard terminateAt.map({ at < $0 }) ?? true else { return }
            terminateAt = at
            killAt = at + 3
            stopReadingAt = at + 6
            if ended.contains(where: { $0 == nil }) {
                note("\(why); the other ranks get \(RankLauncher.format(grace)) s to stop on their own")
            }
        }

        while ended.contains(where: { $0 == nil }) || children.contains(where: { $0.outputDescriptor >= 0 || $0.errorDescriptor >= 0 }) {
            var descriptors: [pollfd] = []
            var owners: [(child: Int, stream: Int)] = []
            for (index, child) in children.enumerated() {
                for (stream, fd) in [child.outputDescriptor, child.errorDescriptor].enumerated() where fd >= 0 {
                    descriptors.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                    owners.append((index, stream))
                }
            }
            if !descriptors.isEmpty {
                _ = poll(&descriptors, nfds_t(descriptors.count), 50)
            } else {
                MonotonicClock.sleep(seconds: 0.01)
            }
            for (slot, descriptor) in descriptors.enumerated() where descriptor.revents != 0 {
                let (index, stream) = owners[slot]
                let child = children[index]
                let n = buffer.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
                let prefix = "[rank \(firstRank + index)] "
                if n > 0 {
                    let lines = buffer.withUnsafeBytes { splitters[index][stream].feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    if !lines.isEmpty { writeAll(lines.map { prefix + $0 + "\n" }.joined(), to: stream == 0 ? 1 : 2) }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    if let rest = splitters[index][stream].finish() { writeAll(prefix + rest + "\n", to: stream == 0 ? 1 : 2) }
                    close(descriptor.fd)
                    if stream == 0 { child.outputDescriptor = -1 } else { child.errorDescriptor = -1 }
                }
            }
            var endedNow: [Int] = []
            for (index, child) in children.enumerated() where ended[index] == nil {
                guard let termination = child.poll() else { continue }
                let status: RankExit.Status
                switch termination {
                case .exited(let code): status = .exited(code)
                case .signaled(let signal): status = .signaled(signal)
                }
                ended[index] = RankExit(rank: firstRank + index, pid: child.pid, status: status, stoppedByLauncher: terminated)
                endedAt[index] = MonotonicClock.seconds()
                endedNow.append(index)
            }
            // Of ranks that ended together, one killed by a signal is the likelier cause of the others' errors.
            endedNow.sort { lhs, rhs in
                func crashed(_ i: Int) -> Bool { if case .signaled = ended[i]!.status { true } else { false } }
                return crashed(lhs) && !crashed(rhs)
            }
            for index in endedNow where !ended[index]!.succeeded {
                let exit = ended[index]!
                if firstFailure == nil {
                    firstFailure = index
                    onFirstFailure(exit)
                }
                if !exit.stoppedByLauncher { note("\(exit)") }
                stopOthers("rank \(exit.rank) failed", grace: graceSeconds)
            }
            let count = Int(moe_take_termination_count())
            if count > 0 {
                let signal = moe_take_termination_signal()
                let first = signals == 0
                signals += count
                if first {
                    // The ranks stop on the signal themselves (a server first finishes its requests in flight).
                    note("received \(signalName(signal)); stopping the ranks (a second signal ends them at once)")
                    for (index, child) in children.enumerated() where ended[index] == nil { kill(child.pid, signal) }
                    stopOthers("stopping on \(signalName(signal))", grace: max(graceSeconds, signalGraceSeconds))
                }
                if signals > 1 && !killed {
                    note("received \(signalName(signal)) again; killing the ranks")
                    for (index, child) in children.enumerated() where ended[index] == nil { kill(child.pid, SIGKILL) }
                    (terminated, killed) = (true, true)
                    stopReadingAt = min(stopReadingAt ?? .infinity, MonotonicClock.seconds() + 3)
                }
            }
            let now = MonotonicClock.seconds()
            if !terminated, let terminateAt, now >= terminateAt {
                terminated = true
                let running = children.indices.filter { ended[$0] == nil }
                if !running.isEmpty {
                    note("terminating rank\(running.count > 1 ? "s" : "") \(running.map { String(firstRank + $0) }.joined(separator: ", "))")
                }
                for index in running { kill(children[index].pid, SIGTERM) }
            }
            if !killed, let killAt, now >= killAt {
                killed = true
                for (index, child) in children.enumerated() where ended[index] == nil { kill(child.pid, SIGKILL) }
            }
            if killed, let stopReadingAt, now >= stopReadingAt {
                // Output pipes held open by something else: stop reading them.
                for child in children {
                    if child.outputDescriptor >= 0 { close(child.outputDescriptor); child.outputDescriptor = -1 }
                    if child.errorDescriptor >= 0 { close(child.errorDescriptor); child.errorDescriptor = -1 }
                }
            }
        }
        // A rank killed by a signal (not by the launcher) that ended just after the first failure seen is still the
        // likelier cause: a SIGKILLed rank's peers can notice its death (its lock released) and exit before the
        // launcher can reap it.
        let exits = ended.map { $0! }, times = endedAt.map { $0! }
        guard let first = firstFailure else { return (exits, nil) }
        let crashed = exits.indices.filter { index in
            guard case .signaled = exits[index].status, !exits[index].stoppedByLauncher else { return false }
            return times[index] - times[first] < 1.0
        }
        return (exits, crashed.min { times[$0] < times[$1] } ?? first)
    }

    static func format(_ seconds: Double) -> String { ExpertParallelError.format(seconds) }
}

extension RankLauncher {
    /// The `--ranks R` shortcut of `moe forward` / `moe bench`. Outside a job it starts R ranks running this
    /// same command line (this executable, these arguments), waits, and returns their exit code; inside a
    /// rank (MOE_RANK set) it returns nil, and the command goes on as that rank.
    public static func launchSelfUnlessRank(
        ranks: Int, comm: CommMode?, timeoutSeconds: Double?, arguments: [String] = Array(CommandLine.arguments.dropFirst())
    ) throws -> Int32? {
        if let environment = try RankEnvironment.current() {
            guard environment.world == ranks * environment.nodes else {
                throw ExpertParallelError.invalidArgument(
                    "--ranks \(ranks) disagrees with the job this process was launched in (MOE_WORLD_SIZE=\(environment.world))")
            }
            return nil
        }
        var options = LaunchOptions(ranks: ranks, arguments: arguments)
        options.comm = comm
        if let timeoutSeconds { options.timeoutSeconds = timeoutSeconds }
        return try run(options).exitCode
    }
}
