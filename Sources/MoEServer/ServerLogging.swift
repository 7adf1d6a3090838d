import Logging

/// Logging for the `moe serve` process: swift-log to standard error, every line of a request tagged with its
/// `hb.request.id`.
public enum ServerLogging {
    public static let levels = Logger.Level.allCases.map(\.rawValue)

    /// Installs the standard-error handler (once per process) and returns the server's logger at `level`
    /// (trace, debug, info, notice, warning, error, critical).
    public static func bootstrap(level: String) throws -> Logger {
        guard let parsed = Logger.Level(rawValue: level) else {
            throw LevelError(level: level)
        }
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "moe.serve")
        logger.logLevel = parsed
        return logger
    }

    public struct LevelError: Error, CustomStringConvertible {
        public var level: String
        public var description: String { "unknown log level '\(level)'; use one of \(ServerLogging.levels.joined(separator: ", "))" }
    }
}
