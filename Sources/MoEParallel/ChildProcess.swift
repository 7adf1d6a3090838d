import CMoEAtomics

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A spawned program with its standard output and error on pipes (stdin from /dev/null).
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    /// Read ends; -1 once closed.
    var outputDescriptor: Int32
    var errorDescriptor: Int32

    private init(pid: pid_t, output: Int32, error: Int32) {
        self.pid = pid
        self.outputDescriptor = output
        self.errorDescriptor = error
    }

    deinit {
        if outputDescriptor >= 0 { close(outputDescriptor) }
        if errorDescriptor >= 0 { close(errorDescriptor) }
    }

    /// Starts `executable` with `arguments` (argv[1...]) and exactly `environment` ("NAME=value").
    static func spawn(executable: String, arguments: [String], environment: [String]) throws -> ChildProcess {
        var outputPipe: [Int32] = [-1, -1]
        var errorPipe: [Int32] = [-1, -1]
        let outputRC = moe_pipe_cloexec(&outputPipe)
        guard outputRC == 0 else {
            throw ExpertParallelError.system(call: "pipe2", object: "stdout of \(executable)", errno: -outputRC)
        }
        let errorRC = moe_pipe_cloexec(&errorPipe)
        guard errorRC == 0 else {
            let error = ExpertParallelError.system(call: "pipe2", object: "stderr of \(executable)", errno: -errorRC)
            close(outputPipe[0])
            close(outputPipe[1])
            throw error
        }
        defer {
            close(outputPipe[1])
            close(errorPipe[1])
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errorPipe[1], 2)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        // A clean signal state: the parent may block or ignore signals (test runners do), and children inherit
        // both, which would make the launcher's SIGTERM ineffective.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid = pid_t()
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            close(outputPipe[0])
            close(errorPipe[0])
            throw ExpertParallelError.system(call: "posix_spawn", object: executable, errno: rc)
        }
        return ChildProcess(pid: pid, output: outputPipe[0], error: errorPipe[0])
    }

    /// This process' environment as "NAME=value" strings.
    static var currentEnvironment: [String] {
        var list: [String] = []
        var cursor = environ
        while let entry = cursor.pointee {
            list.append(String(cString: entry))
            cursor += 1
        }
        return list
    }

    /// How a child ended.
    enum Termination: Equatable, Sendable {
        case exited(Int32)
        case signaled(Int32)

        init(waitStatus status: Int32) {
            // WIFEXITED / WEXITSTATUS / WTERMSIG, spelled out (the C macros are not imported).
            if status & 0x7F == 0 {
                self = .exited((status >> 8) & 0xFF)
            } else {
                self = .signaled(status & 0x7F)
            }
        }

        var succeeded: Bool { self == .exited(0) }
        /// The shell convention: the exit status, or 128 + signal.
        var shellStatus: Int32 {
            switch self {
            case .exited(let code): code
            case .signaled(let signal): 128 + signal
            }
        }
    }

    /// Reaps the child if it has ended (non-blocking).
    func poll() -> Termination? {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        guard rc == pid else { return nil }
        return Termination(waitStatus: status)
    }

    /// Waits for the child to end.
    func wait() -> Termination {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return Termination(waitStatus: status)
    }
}

/// Splits bytes arriving on a pipe into lines.
struct LineSplitter {
    private var pending: [UInt8] = []

    /// Appends `bytes`; returns the complete lines (without the newline).
    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == 0x0A {
                lines.append(String(decoding: pending, as: UTF8.self))
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(byte)
            }
        }
        return lines
    }

    /// The unterminated rest, if any.
    mutating func finish() -> String? {
        defer { pending.removeAll() }
        return pending.isEmpty ? nil : String(decoding: pending, as: UTF8.self)
    }
}

/// Signal names for messages.
func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGKILL: "SIGKILL"
    case SIGTERM: "SIGTERM"
    case SIGINT: "SIGINT"
    case SIGSEGV: "SIGSEGV"
    case SIGABRT: "SIGABRT"
    case SIGBUS: "SIGBUS"
    case SIGILL: "SIGILL"
    case SIGTRAP: "SIGTRAP"
    case SIGPIPE: "SIGPIPE"
    case SIGHUP: "SIGHUP"
    case SIGFPE: "SIGFPE"
    default: "signal \(signal)"
    }
}

/// Writes a whole string to a file descriptor (retrying short writes).
func writeAll(_ text: String, to descriptor: Int32) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += n
    }
    bytes.removeAll()
}
