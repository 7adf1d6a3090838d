import Foundation
import Hummingbird
import MoECore

/// The body of POST /start_profile: an optional JSON object, every key optional.
public struct ProfileOptions: Sendable, Equatable {
    /// File stem of the outputs (default `profile-<unix time>-<n>`).
    public var name: String?
    /// Directory of the outputs (default: the server's profile directory).
    public var outputDirectory: String?
    /// Include flops, bytes and rates (default true).
    public var withFlops: Bool
    /// Write a Chrome trace (default true).
    public var trace: Bool
    /// Only these stages (default: all).
    public var stages: [Stage]?

    public init(name: String? = nil, outputDirectory: String? = nil, withFlops: Bool = true, trace: Bool = true, stages: [Stage]? = nil) {
        self.name = name
        self.outputDirectory = outputDirectory
        self.withFlops = withFlops
        self.trace = trace
        self.stages = stages
    }

    public static let acceptedKeys = ["name", "output_dir", "with_flops", "trace", "stages"]
    static var acceptedText: String {
        "accepted keys: name (string), output_dir (string), with_flops (bool), trace (bool), stages (list of "
            + Stage.allCases.map(\.rawValue).joined(separator: ", ") + ")"
    }

    /// No body, or only whitespace → defaults. Otherwise a JSON object with only the accepted keys, each of its
    /// type; anything else throws 400 naming the problem and the accepted keys.
    public static func decode(_ body: ByteBuffer) throws(ServerError) -> ProfileOptions {
        let data = Data(buffer: body)
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return ProfileOptions() }
        do {
            return try JSONDecoder().decode(Body.self, from: data).options
        } catch let error as ServerError {
            throw error
        } catch {
            throw .badRequest("the body is not valid JSON (\(JSONErrors.reason(error))); send a JSON object or no body; \(acceptedText)")
        }
    }

    private struct Body: Decodable {
        var options = ProfileOptions()

        init(from decoder: any Decoder) throws {
            let object: KeyedDecodingContainer<AnyKey>
            do {
                object = try decoder.container(keyedBy: AnyKey.self)
            } catch {
                throw ServerError.badRequest("the body must be a JSON object (or empty); \(ProfileOptions.acceptedText)")
            }
            for key in object.allKeys where !ProfileOptions.acceptedKeys.contains(key.stringValue) {
                throw ServerError.badRequest("unknown key '\(key.stringValue)'; \(ProfileOptions.acceptedText)")
            }
            func value<T: Decodable>(_ key: String, _ type: T.Type, _ typeName: String) throws -> T? {
                guard object.contains(AnyKey(key)) else { return nil }
                do {
                    return try object.decode(T.self, forKey: AnyKey(key))
                } catch {
                    throw ServerError.badRequest("'\(key)' must be \(typeName); \(ProfileOptions.acceptedText)")
                }
            }
            if let name = try value("name", String.self, "a string") {
                guard !name.isEmpty else { throw ServerError.badRequest("'name' must not be empty; \(ProfileOptions.acceptedText)") }
                options.name = name
            }
            if let directory = try value("output_dir", String.self, "a string") {
                guard !directory.isEmpty else {
                    throw ServerError.badRequest("'output_dir' must not be empty; \(ProfileOptions.acceptedText)")
                }
                options.outputDirectory = directory
            }
            if let withFlops = try value("with_flops", Bool.self, "a boolean (true or false)") { options.withFlops = withFlops }
            if let trace = try value("trace", Bool.self, "a boolean (true or false)") { options.trace = trace }
            if let names = try value("stages", [String].self, "a list of stage names") {
                guard !names.isEmpty else {
                    throw ServerError.badRequest("'stages' must list at least one stage (leave it out for all); \(ProfileOptions.acceptedText)")
                }
                options.stages = try names.map { name in
                    guard let stage = Stage(rawValue: name) else {
                        throw ServerError.badRequest(
                            "unknown stage '\(name)' in 'stages'; stages are \(Stage.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    return stage
                }
            }
        }
    }
}

/// The one profiling session a server may run at a time: started and stopped over HTTP, fed by the batcher
/// with the scopes of every forward pass in between.
final class ProfileSessions: @unchecked Sendable {
    struct Session {
        var options: ProfileOptions
        var name: String
        var directory: String
        /// Profiler clock (ns since boot) at start; records are re-based to it so the trace starts near 0.
        var origin: UInt64
        var records: [Profiler.Record] = []
        var batches = 0
    }

    private let lock = NSLock()
    private var active: Session?
    private var started = 0

    var isActive: Bool {
        lock.lock()
        defer { lock.unlock() }
        return active != nil
    }

    /// Starts a session; 409 when one is running, 400 when the output directory cannot be created.
    func start(_ options: ProfileOptions, defaultDirectory: String) throws(ServerError) -> Session {
        lock.lock()
        defer { lock.unlock() }
        if let active {
            throw ServerError(.conflict, "profile '\(active.name)' is already running; POST /stop_profile first")
        }
        started += 1
        let name = options.name ?? "profile-\(Int(Date().timeIntervalSince1970))-\(started)"
        let directory = options.outputDirectory ?? defaultDirectory
        do {
            try FileOutput.makeDirectories(directory)
        } catch {
            throw ServerError.badRequest("cannot use output_dir '\(directory)': \(error); choose a writable directory")
        }
        let session = Session(options: options, name: name, directory: directory, origin: Profiler.now())
        active = session
        return session
    }

    /// Adds one forward pass's scopes (from a profiler whose clock started at `origin`) to the running session.
    func append(_ records: [Profiler.Record], origin: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        guard var session = active else { return }
        active = nil  // avoid copying the record array on write
        let keep = session.options.stages.map { Set($0.map(\.rawValue)) }
        for var r in records where keep?.contains(r.stage) ?? true {
            r.startNanoseconds = (origin &+ r.startNanoseconds) &- session.origin
            session.records.append(r)
        }
        session.batches += 1
        active = session
    }

    /// Ends the session and writes its outputs; 409 when none is running.
    func stop(ceilings: HardwareCeilings?) throws(ServerError) -> (report: ProfileReport, files: ProfileReport.Files) {
        lock.lock()
        let session = active
        active = nil
        lock.unlock()
        guard let session else { throw ServerError(.conflict, "no profile is running; POST /start_profile first") }
        let report = ProfileReport(
            name: session.name, records: session.records, ceilings: ceilings, includeCosts: session.options.withFlops)
        do {
            let files = try report.write(to: session.directory, trace: session.options.trace)
            return (report, files)
        } catch {
            throw ServerError(.internalServerError, "profile '\(session.name)' stopped but its files could not be written: \(error)")
        }
    }
}
