import CMoEAtomics

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The multi-node rendezvous: a line protocol served by node 0's launcher at `--master host:port`.
///
/// ```
/// node launcher → NODE <node rank> <ranks per node> <nodes>        ← JOB <job id>     | ERROR <why>
/// rank          → RANK <rank> <world> <host:port> <identity>       ← TABLE <host:port>×world | ERROR <why>
/// node launcher → FAIL <node rank> <why>                           (no answer)
/// ```
/// A FAIL (a node's rank failed before or during the rendezvous) answers every waiting and later rank with
/// the reason, so no rank waits out its timeout for a node that is gone.
/// Node launchers learn the job id; ranks learn every rank's listening address once all `world` ranks have
/// registered, and are refused (every one of them, with the reason) when their identities differ: different
/// model, config, expert map or heap layout.
final class RendezvousServer: @unchecked Sendable {
    let jobID: String
    let nodes: Int
    let ranksPerNode: Int
    let timeoutSeconds: Double
    let endpoint: String
    private let listener: TCPSocket
    private let stopFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    private var thread = pthread_t()
    private var running = false
    /// Set by node 0's launcher when one of its own ranks fails (read by the server thread).
    private var localFailure: String?
    private var failureLock = pthread_mutex_t()

    /// Binds `endpoint` (node 0's --master) and starts serving on a background thread.
    init(endpoint: String, jobID: String, nodes: Int, ranksPerNode: Int, timeoutSeconds: Double) throws {
        self.jobID = jobID
        self.nodes = nodes
        self.ranksPerNode = ranksPerNode
        self.timeoutSeconds = timeoutSeconds
        self.endpoint = endpoint
        listener = try TCPSocket.listen(on: try TCPSocket.resolve(endpoint), label: "the rendezvous at \(endpoint)")
        stopFlag.pointee = 0
        pthread_mutex_init(&failureLock, nil)
        let box = Unmanaged.passRetained(self)
        let rc = pthread_create(&thread, nil, { raw in
            let server = Unmanaged<RendezvousServer>.fromOpaque(raw!).takeRetainedValue()
            server.serve()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw ExpertParallelError.system(call: "pthread_create", object: "rendezvous server", errno: rc)
        }
        running = true
    }

    deinit { stopFlag.deallocate() }

    /// Records that a rank of node 0 failed: waiting and later registrations are refused with `reason`.
    func reportFailure(_ reason: String) {
        pthread_mutex_lock(&failureLock)
        localFailure = localFailure ?? reason
        pthread_mutex_unlock(&failureLock)
    }

    private func takeLocalFailure() -> String? {
        pthread_mutex_lock(&failureLock)
        defer { pthread_mutex_unlock(&failureLock) }
        return localFailure
    }

    /// Stops serving and waits for the thread.
    func stop() {
        guard running else { return }
        running = false
        moe_atomic_store_release_u32(stopFlag, 1)
        pthread_join(thread, nil)
        listener.close()
    }

    private struct Client {
        var socket: TCPSocket
        var pending: [UInt8] = []
    }

    private struct Registration {
        var client: Int
        var address: String
        var identity: String
    }

    private func serve() {
        var clients: [Int: Client] = [:]
        var nextClient = 0
        var registrations: [Int: Registration] = [:]
        var world = 0
        var firstRegistration: Double?
        var failure: String?
        var buffer = [UInt8](repeating: 0, count: 4096)

        func reply(_ client: Int, _ line: String) {
            try? clients[client]?.socket.send(line + "\n")
            clients[client]?.socket.close()
            clients[client] = nil
        }

        func handle(_ line: String, from client: Int) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            switch fields.first {
            case "NODE":
                guard fields.count == 4, let node = Int(fields[1]), let perNode = Int(fields[2]), let count = Int(fields[3]) else {
                    return reply(client, "ERROR malformed NODE line")
                }
                // A refused node cannot take part: the job fails, and its waiting ranks learn why now.
                func refuse(_ why: String) {
                    failure = failure ?? why
                    refuseWaiting()
                    reply(client, "ERROR \(why)")
                }
                guard count == nodes, perNode == ranksPerNode else {
                    return refuse("node \(node) was started with --nodes \(count) --ranks \(perNode); node 0 has --nodes \(nodes) --ranks \(ranksPerNode)")
                }
                guard node > 0, node < nodes else { return refuse("node rank \(node) must be in 1..<\(nodes)") }
                reply(client, "JOB \(jobID)")
            case "FAIL":
                let node = fields.count > 1 ? fields[1] : "?"
                failure = failure ?? "node \(node) failed: " + fields.dropFirst(2).joined(separator: " ")
                refuseWaiting()
                clients[client]?.socket.close()
                clients[client] = nil
            case "RANK":
                if let failure { return reply(client, "ERROR \(failure)") }
                guard fields.count >= 5, let rank = Int(fields[1]), let size = Int(fields[2]) else {
                    return reply(client, "ERROR malformed RANK line")
                }
                guard size == nodes * ranksPerNode, rank >= 0, rank < size else {
                    return reply(client, "ERROR rank \(rank) of \(size) does not fit \(nodes) nodes × \(ranksPerNode) ranks")
                }
                guard registrations[rank] == nil else { return reply(client, "ERROR rank \(rank) registered twice") }
                world = size
                registrations[rank] = Registration(client: client, address: fields[3], identity: fields[4...].joined(separator: " "))
                if firstRegistration == nil { firstRegistration = MonotonicClock.seconds() }
                if registrations.count == world { complete() }
            default:
                reply(client, "ERROR unknown request")
            }
        }

        func refuseWaiting() {
            guard let failure else { return }
            for registration in registrations.values { reply(registration.client, "ERROR \(failure)") }
            registrations.removeAll()
            firstRegistration = nil
        }

        func complete() {
            let reference = registrations[0]!.identity
            let differing = registrations.keys.sorted().filter { registrations[$0]!.identity != reference }
            let answer: String
            if differing.isEmpty {
                answer = "TABLE " + (0..<world).map { registrations[$0]!.address }.joined(separator: " ")
            } else {
                let field = Self.firstDifferingField(reference, registrations[differing[0]]!.identity)
                answer = "ERROR rank\(differing.count > 1 ? "s" : "") \(differing.map(String.init).joined(separator: ", ")) "
                    + "\(differing.count > 1 ? "were" : "was") started with a different \(field) than rank 0; "
                    + "every rank must load the same model with the same options"
            }
            for registration in registrations.values { reply(registration.client, answer) }
            registrations.removeAll()
            firstRegistration = nil
        }

        while moe_atomic_load_acquire_u32(stopFlag) == 0 {
            if failure == nil, let local = takeLocalFailure() {
                failure = "node 0 failed: \(local)"
                refuseWaiting()
            }
            var descriptors = [pollfd(fd: listener.descriptor, events: Int16(POLLIN), revents: 0)]
            let ids = Array(clients.keys)
            for id in ids { descriptors.append(pollfd(fd: clients[id]!.socket.descriptor, events: Int16(POLLIN), revents: 0)) }
            _ = poll(&descriptors, nfds_t(descriptors.count), 100)
            if descriptors[0].revents != 0,
                let socket = try? listener.accept(until: MonotonicClock.seconds() + 0.01, label: "a rendezvous client")
            {
                clients[nextClient] = Client(socket: socket)
                nextClient += 1
            }
            for (slot, id) in ids.enumerated() where descriptors[slot + 1].revents != 0 {
                guard let client = clients[id] else { continue }
                let n = buffer.withUnsafeMutableBytes { recv(client.socket.descriptor, $0.baseAddress, $0.count, 0) }
                if n <= 0 {
                    // Gone: forget any registration it made.
                    registrations = registrations.filter { $0.value.client != id }
                    clients[id] = nil
                    continue
                }
                clients[id]!.pending.append(contentsOf: buffer[0..<n])
                while let newline = clients[id]?.pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: clients[id]!.pending[..<newline], as: UTF8.self)
                    clients[id]!.pending.removeSubrange(...newline)
                    handle(line, from: id)
                }
            }
            if let first = firstRegistration, MonotonicClock.seconds() - first > timeoutSeconds, world > 0 {
                let missing = (0..<world).filter { registrations[$0] == nil }
                let answer = "ERROR rank\(missing.count > 1 ? "s" : "") \(missing.map(String.init).joined(separator: ", ")) did not reach the rendezvous within \(ExpertParallelError.format(timeoutSeconds)) s"
                for registration in registrations.values { reply(registration.client, answer) }
                registrations.removeAll()
                firstRegistration = nil
            }
        }
        for client in clients.values { client.socket.close() }
    }

    /// Names the first `name=value` field two identity strings disagree on.
    static func firstDifferingField(_ a: String, _ b: String) -> String {
        let left = a.split(separator: "/"), right = b.split(separator: "/")
        for (x, y) in zip(left, right) where x != y {
            let name = x.split(separator: "=").first.map(String.init) ?? "identity"
            return "\(name) (\(x.split(separator: "=").last ?? "") vs \(y.split(separator: "=").last ?? ""))"
        }
        return "identity"
    }
}

/// The client side of the rendezvous.
enum RendezvousClient {
    /// A node launcher (node rank > 0) learns the job id from node 0.
    static func joinJob(master: String, nodeRank: Int, ranksPerNode: Int, nodes: Int, timeoutSeconds: Double) throws -> String {
        let deadline = MonotonicClock.seconds() + timeoutSeconds
        let socket = try TCPSocket.connect(to: master, until: deadline, label: "the rendezvous at \(master)")
        try socket.send("NODE \(nodeRank) \(ranksPerNode) \(nodes)\n")
        guard let line = try socket.receiveLine(until: deadline) else {
            throw ExpertParallelError.invalidArgument("the rendezvous at \(master) closed without an answer")
        }
        if line.hasPrefix("JOB ") { return String(line.dropFirst(4)) }
        throw ExpertParallelError.invalidArgument("node 0 refused node \(nodeRank): \(line.dropFirst(6))")
    }

    /// A node launcher tells node 0 that one of its ranks failed (best effort, short wait).
    static func reportFailure(master: String, nodeRank: Int, reason: String) {
        guard let socket = try? TCPSocket.connect(to: master, until: MonotonicClock.seconds() + 1, label: "the rendezvous") else {
            return
        }
        try? socket.send("FAIL \(nodeRank) \(reason.split(whereSeparator: \.isNewline).joined(separator: " "))\n")
        socket.close()
    }

    /// A rank registers its listening address and identity; returns every rank's address (index = rank).
    /// `connection` must be connected to the master already (its local address is the one advertised).
    static func registerRank(
        _ connection: TCPSocket, rank: Int, world: Int, address: String, identity: String, deadline: Double
    ) throws -> [String] {
        try connection.send("RANK \(rank) \(world) \(address) \(identity)\n")
        let line: String?
        do {
            line = try connection.receiveLine(until: deadline)
        } catch {
            throw ExpertParallelError.invalidArgument(
                "the rendezvous did not complete in time: not every rank of the \(world) registered (is every node's launcher running, with the same --master?)")
        }
        guard let line else {
            throw ExpertParallelError.invalidArgument("the rendezvous closed without an answer (did node 0's launcher stop?)")
        }
        guard line.hasPrefix("TABLE ") else {
            throw ExpertParallelError.invalidArgument("the rendezvous refused rank \(rank): \(line.dropFirst(6))")
        }
        let table = line.dropFirst(6).split(separator: " ").map(String.init)
        guard table.count == world else {
            throw ExpertParallelError.invalidArgument("the rendezvous sent \(table.count) addresses for \(world) ranks")
        }
        return table
    }
}
