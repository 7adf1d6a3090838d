import ArgumentParser
import MoECore

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "List the backends on this machine and, for each unavailable one, why.")

    func run() throws {
        print("backend  available  details")
        for a in BackendRegistry.availability() {
            print("\(a.name.padding(8))  \((a.available ? "yes" : "no").padding(9))  \(a.reason)")
        }
    }
}

extension String {
    /// Left-aligned in a column of `width` characters.
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    /// Right-aligned in a column of `width` characters.
    func leftPadding(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
