import MoECUDA

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A blocking IPv4 TCP socket with typed errors: the transport of the multi-node rendezvous and of the
/// cross-node part of the symmetric heap.
final class TCPSocket: @unchecked Sendable {
    private(set) var descriptor: Int32
    /// What this socket is for, in error messages ("rank 3", "the rendezvous at 10.0.0.1:29500").
    let label: String

    init(descriptor: Int32, label: String) {
        self.descriptor = descriptor
        self.label = label
    }

    deinit { close() }

    func close() {
        if descriptor >= 0 {
            Glibc.close(descriptor)
            descriptor = -1
        }
    }

    /// Hands the descriptor to a new owner (this object no longer closes it).
    func takeDescriptor() -> Int32 {
        let fd = descriptor
        descriptor = -1
        return fd
    }

    /// Stops both directions (wakes a thread blocked in `receive`) without releasing the descriptor.
    func shutdownBoth() { if descriptor >= 0 { shutdown(descriptor, Int32(SHUT_RDWR)) } }
    func shutdownWrite() { if descriptor >= 0 { shutdown(descriptor, Int32(SHUT_WR)) } }

    private func failure(_ call: String, _ code: Int32 = errno) -> ExpertParallelError {
        .system(call: call, object: label, errno: code)
    }

    // MARK: addresses

    /// Parses "host:port" and resolves host (a name or dotted quad) to IPv4.
    static func resolve(_ endpoint: String) throws -> sockaddr_in {
        guard let colon = endpoint.lastIndex(of: ":"), let port = UInt16(endpoint[endpoint.index(after: colon)...]) else {
            throw ExpertParallelError.invalidArgument("'\(endpoint)' is not host:port")
        }
        let host = String(endpoint[..<colon])
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host.isEmpty ? "0.0.0.0" : host, nil, &hints, &result)
        guard rc == 0, let first = result else {
            throw ExpertParallelError.invalidArgument("cannot resolve host '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(result) }
        var address = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
        address.sin_port = port.bigEndian
        return address
    }

    static func describe(_ address: sockaddr_in) -> String {
        var copy = address.sin_addr
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &copy, &text, socklen_t(text.count))
        return "\(cString(text)):\(UInt16(bigEndian: address.sin_port))"
    }

    // MARK: server side

    /// Listens on `address` (port 0: any free port).
    static func listen(on address: sockaddr_in, label: String) throws -> TCPSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ExpertParallelError.system(call: "socket", object: label, errno: errno) }
        let socket = TCPSocket(descriptor: fd, label: label)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var bindAddress = address
        let bound = withUnsafePointer(to: &bindAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw socket.failure("bind \(describe(address))") }
        guard Glibc.listen(fd, 256) == 0 else { throw socket.failure("listen") }
        return socket
    }

    /// The address this socket is bound to.
    var localAddress: sockaddr_in {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return address
    }

    /// Accepts one connection, waiting at most until `deadline` (monotonic seconds); nil on timeout.
    func accept(until deadline: Double, label: String) throws -> TCPSocket? {
        while true {
            let remaining = deadline - MonotonicClock.seconds()
            if remaining <= 0 { return nil }
            var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&descriptors, 1, Int32(min(remaining, 0.25) * 1000) + 1)
            if ready < 0 && errno != EINTR { throw failure("poll") }
            guard ready > 0 else { continue }
            let fd = Glibc.accept(descriptor, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == EAGAIN || errno == ECONNABORTED { continue }
                throw failure("accept")
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let connection = TCPSocket(descriptor: fd, label: label)
            connection.configureConnection()
            return connection
        }
    }

    // MARK: client side

    /// Connects to `endpoint`, retrying refused connections until `deadline` (the peer may not listen yet).
    static func connect(to endpoint: String, until deadline: Double, label: String) throws -> TCPSocket {
        let address = try resolve(endpoint)
        while true {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw ExpertParallelError.system(call: "socket", object: label, errno: errno) }
            var target = address
            let rc = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if rc == 0 {
                let socket = TCPSocket(descriptor: fd, label: label)
                socket.configureConnection()
                return socket
            }
            let code = errno
            Glibc.close(fd)
            guard code == ECONNREFUSED || code == EINTR || code == ETIMEDOUT || code == ENETUNREACH || code == EHOSTUNREACH,
                MonotonicClock.seconds() < deadline
            else {
                throw ExpertParallelError.system(call: "connect", object: "\(label) at \(endpoint)", errno: code)
            }
            MonotonicClock.sleep(seconds: 0.02)
        }
    }

    /// No Nagle delay; and keepalive probes, so that a peer host that vanishes without closing (power loss, a
    /// partition) is seen as lost within about 25 s even by a rank that only waits (a serving follower's idle
    /// barrier has no timeout).
    private func configureConnection() {
        func set(_ level: Int32, _ option: Int32, _ value: Int32) {
            var value = value
            setsockopt(descriptor, level, option, &value, socklen_t(MemoryLayout<Int32>.size))
        }
        set(Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        set(SOL_SOCKET, SO_KEEPALIVE, 1)
        #if os(Linux)
        set(Int32(IPPROTO_TCP), TCP_KEEPIDLE, 10)
        set(Int32(IPPROTO_TCP), TCP_KEEPINTVL, 5)
        set(Int32(IPPROTO_TCP), TCP_KEEPCNT, 3)
        // Keepalive sends no probe while data is unacknowledged; this bounds that case too (a live peer's kernel
        // acknowledges at once, however busy the process).
        set(Int32(IPPROTO_TCP), TCP_USER_TIMEOUT, 25_000)
        #endif
    }

    // MARK: data

    /// Sends every byte (no SIGPIPE: a closed peer is an error, not a signal).
    func send(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.send(descriptor, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("send")
            }
            offset += n
        }
    }

    func send(_ text: String) throws {
        var bytes = Array(text.utf8)
        try bytes.withUnsafeMutableBytes { try send(UnsafeRawBufferPointer($0)) }
    }

    /// Fills `buffer` completely; returns false on an orderly close before any byte of it arrived.
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        var offset = 0
        while offset < buffer.count {
            let n = recv(descriptor, buffer.baseAddress! + offset, buffer.count - offset, 0)
            if n == 0 {
                if offset == 0 { return false }
                throw ExpertParallelError.invalidArgument("\(label) closed the connection in the middle of a message")
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("recv")
            }
            offset += n
        }
        return true
    }

    /// Reads one '\n'-terminated line (without it), waiting at most until `deadline`; nil on close.
    func receiveLine(until deadline: Double) throws -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let remaining = deadline - MonotonicClock.seconds()
            guard remaining > 0 else {
                throw ExpertParallelError.invalidArgument("\(label) did not answer within the timeout")
            }
            var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&descriptors, 1, Int32(min(remaining, 0.25) * 1000) + 1)
            if ready < 0 && errno != EINTR { throw failure("poll") }
            guard ready > 0 else { continue }
            let n = recv(descriptor, &byte, 1, 0)
            if n == 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("recv")
            }
            if byte == 0x0A { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
            if line.count > 1 << 20 { throw ExpertParallelError.invalidArgument("\(label) sent a line over 1 MiB") }
        }
    }
}
