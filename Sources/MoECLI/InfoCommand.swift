import ArgumentParser
import MoECUDA
import MoECore

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "List the backends on this machine and, for each unavailable one, why.")

    func run() throws {
        print("backend  available  details")
        for a in BackendRegistry.availability() {
            print("\(a.name.padding(8))  \((a.available ? "yes" : "no").padding(9))  \(a.reason)")
        }
        print("")
        print("library  available  details")
        let nccl: (Bool, String)
        do {
            let library = try NCCLLibrary.load()
            let version = (try? library.version()).map { "NCCL \($0), " } ?? ""
            nccl = (true, "\(version)\(library.libraryPath): the GPU all-to-all baseline over NCCL, and the symmetric path's rails across nodes")
        } catch {
            nccl = (false, "\(error) — the GPU all-to-all baseline then copies through CUDA IPC (one node), and the symmetric path runs on one node only")
        }
        print("\("nccl".padding(8))  \((nccl.0 ? "yes" : "no").padding(9))  \(nccl.1)")
    }
}

extension String {
    /// Left-aligned in a column of `width` characters.
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    /// Right-aligned in a column of `width` characters.
    func leftPadding(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
