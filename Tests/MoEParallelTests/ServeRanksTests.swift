import Foundation
import Testing

@testable import MoEParallel

#if canImport(Glibc)
import Glibc
#endif

/// `moe serve --ranks R` through the real binary: rank 0 serves HTTP, the layer runs on R rank processes.
@Suite(.serialized) struct ServeRanksTests {
    /// A `moe serve` (or other long-running) process: its output is collected while the test talks to it.
    final class Server {
        let child: ChildProcess
        private(set) var output = ""
        var port = 0

        /// `listens`: wait for the "listening on" line (the launcher of rank 0); other nodes' launchers print none.
        init(_ arguments: [String], listens: Bool = true, executable: String = LaunchCommandTests.moe) throws {
            child = try ChildProcess.spawn(
                executable: executable, arguments: arguments,
                environment: ChildProcess.currentEnvironment.filter { !$0.hasPrefix("MOE_") })
            let deadline = MonotonicClock.seconds() + 120
            while listens && port == 0 {
                guard MonotonicClock.seconds() < deadline, pump(timeoutMilliseconds: 200) || child.poll() == nil else {
                    throw ExpertParallelError.invalidArgument("moe serve did not start listening:\n\(output)")
                }
                if let range = output.range(of: #"listening on http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression) {
                    port = Int(output[range].split(separator: ":").last!)!
                }
            }
        }

        /// Reads what is there; false once both streams ended.
        @discardableResult
        func pump(timeoutMilliseconds: Int32) -> Bool {
            var descriptors = [child.outputDescriptor, child.errorDescriptor].filter { $0 >= 0 }
                .map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard !descriptors.isEmpty else { return false }
            _ = poll(&descriptors, nfds_t(descriptors.count), timeoutMilliseconds)
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            for descriptor in descriptors where descriptor.revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    output += String(decoding: buffer[0..<n], as: UTF8.self)
                } else {
                    close(descriptor.fd)
                    if descriptor.fd == child.outputDescriptor { child.outputDescriptor = -1 } else { child.errorDescriptor = -1 }
                }
            }
            return true
        }

        /// Reads until the process ends; its shell status (128 + signal when killed).
        func finish(within seconds: Double) -> Int32? {
            let deadline = MonotonicClock.seconds() + seconds
            while pump(timeoutMilliseconds: 200), MonotonicClock.seconds() < deadline {}
            while MonotonicClock.seconds() < deadline {
                if let end = child.poll() { return end.shellStatus }
                usleep(20_000)
            }
            kill(child.pid, SIGKILL)
            _ = child.wait()
            return nil
        }

        /// The pid of this launcher's rank `rank` (from its children's environments).
        func rankPid(_ rank: Int) -> Int32? {
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
            for entry in entries {
                guard let pid = Int32(entry),
                      let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")"),
                      Int32(stat[stat.index(close, offsetBy: 2)...].split(separator: " ")[1]) == child.pid,
                      let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ")
                else { continue }
                if environ.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "MOE_RANK=\(rank)" }) {
                    return pid
                }
            }
            return nil
        }
    }

    /// POST `body` as JSON to 127.0.0.1:port over a plain socket; the status and the response body.
    static func post(port: Int, path: String, body: String) throws -> (status: Int, body: String) {
        let socket = try TCPSocket.connect(to: "127.0.0.1:\(port)", until: MonotonicClock.seconds() + 10, label: "moe serve")
        try socket.send(
            "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n" + body)
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(socket.descriptor, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            response.append(contentsOf: buffer[0..<n])
        }
        let text = String(decoding: response, as: UTF8.self)
        let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
        let payload = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, payload)
    }

    static func request(tokens: Int, seed: Int, routing: String) -> String {
        let rows = (0..<tokens).map { t in
            "[" + (0..<128).map { h in String(Float(((t * 131 + h * 17 + seed * 7) % 97) - 48) / 32) }.joined(separator: ",") + "]"
        }
        return #"{"hidden_states": [\#(rows.joined(separator: ","))], "routing": "\#(routing)"}"#
    }

    /// Answers of 3 ranks equal a single-rank server's byte for byte; SIGTERM stops every rank cleanly; a killed
    /// rank fails the next request with its name and ends the job non-zero.
    @Test func serveOverRanksAnswersLikeOneRankAndFailsClearlyWhenARankDies() throws {
        let common = ["serve", "--preset", "tiny", "--port", "0", "--log-level", "warning"]
        let single = try Server(common)
        let ranks = try Server(common + ["--ranks", "3", "--workers-per-rank", "1"])
        for (index, tokens) in [1, 4, 9].enumerated() {
            let body = Self.request(tokens: tokens, seed: index, routing: index == 1 ? "softmax-first" : "renormalize")
            let expected = try Self.post(port: single.port, path: "/v1/moe/forward", body: body)
            let got = try Self.post(port: ranks.port, path: "/v1/moe/forward", body: body)
            #expect(expected.status == 200 && got.status == 200, "\(expected.body.prefix(300)) / \(got.body.prefix(300))")
            #expect(got.body == expected.body, "T=\(tokens): the 3-rank server's answer differs")
        }
        kill(single.child.pid, SIGTERM)
        #expect(single.finish(within: 30) == 0, "\(single.output)")

        let victim = try #require(ranks.rankPid(1), "rank 1's process not found")
        kill(victim, SIGKILL)
        usleep(200_000)
        let failed = try Self.post(port: ranks.port, path: "/v1/moe/forward", body: Self.request(tokens: 5, seed: 9, routing: "renormalize"))
        #expect(failed.status == 503)
        #expect(failed.body.contains("rank 1 (pid \(victim))") && failed.body.contains("died"), "\(failed.body)")
        let status = ranks.finish(within: 30)
        #expect(status != nil && status != 0, "\(ranks.output)")
        #expect(ranks.output.contains("the expert-parallel group failed"), "\(ranks.output)")
    }

    @Test func sigtermStopsEveryRankAfterTheRequestsInFlight() throws {
        let ranks = try Server(["serve", "--preset", "tiny", "--port", "0", "--log-level", "info", "--ranks", "2", "--workers-per-rank", "1"])
        let answer = try Self.post(port: ranks.port, path: "/v1/moe/forward", body: Self.request(tokens: 3, seed: 1, routing: "renormalize"))
        #expect(answer.status == 200)
        kill(ranks.child.pid, SIGTERM)
        #expect(ranks.finish(within: 30) == 0, "\(ranks.output)")
        #expect(ranks.output.contains("stopped 2 ranks"), "\(ranks.output)")
    }

    /// Two loopback "nodes" of one rank each: rank 0's rows reach the other node over the heap's TCP stores.
    @Test func serveAcrossTwoLoopbackNodesAnswersLikeOneRank() throws {
        let commands = try LaunchedRankTests.nodeCommands(
            nodes: 2, ranks: 1, ["serve", "--preset", "tiny", "--port", "0", "--log-level", "warning"])
        let other = try Server(commands[1], listens: false)
        let first = try Server(commands[0])
        let single = try Server(["serve", "--preset", "tiny", "--port", "0", "--log-level", "warning"])
        for (index, tokens) in [1, 6].enumerated() {
            let body = Self.request(tokens: tokens, seed: 20 + index, routing: "renormalize")
            let expected = try Self.post(port: single.port, path: "/v1/moe/forward", body: body)
            let got = try Self.post(port: first.port, path: "/v1/moe/forward", body: body)
            #expect(got.status == 200 && got.body == expected.body, "T=\(tokens): \(got.body.prefix(300))")
        }
        kill(single.child.pid, SIGTERM)
        kill(first.child.pid, SIGTERM)
        #expect(first.finish(within: 30) == 0, "\(first.output)")
        #expect(other.finish(within: 30) == 0, "\(other.output)")
        _ = single.finish(within: 30)
    }

    /// Rank 0 cannot serve (its port is taken): every rank ends with that reason, not a follower left waiting.
    @Test func aServerThatCannotStartEndsEveryRankWithTheReason() throws {
        let (taken, port) = try LaunchedRankTests.loopbackListener()
        defer { taken.close() }
        let run = try LaunchCommandTests.run([
            "serve", "--preset", "tiny", "--port", "\(port)", "--ranks", "2", "--workers-per-rank", "1", "--log-level", "warning",
        ])
        #expect(run.status != 0)
        #expect(run.errors.contains("[rank 1] Error: rank 0 failed: rank 0 could not serve:"), "\(run.all)")
        #expect(run.seconds < 60)
    }
}
