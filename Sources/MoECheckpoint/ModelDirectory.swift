import MoECore
import SafeTensors

/// A Hugging Face gpt-oss model directory: `config.json`, one or more `.safetensors` files and, when sharded,
/// `model.safetensors.index.json` (whose `weight_map` maps tensor names to shard file names).
///
/// Which files hold the weights: the index's shards when there is an index (every shard it names must exist);
/// otherwise `model.safetensors` when present; otherwise every `*.safetensors` file in the directory (a tensor
/// held by two of them is an error). Shards are opened (memory-mapped and fully validated) when a tensor in them
/// is first needed, so loading one layer touches only that layer's files.
public final class ModelDirectory {
    public static let indexName = "model.safetensors.index.json"
    public static let singleFileName = "model.safetensors"

    public let path: String
    public let config: MoEConfig
    /// Tensor name → weight file name (relative to `path`).
    public let weightMap: [String: String]
    /// The weight files, sorted.
    public let weightFiles: [String]
    /// Whether `weightMap` came from the index (true) or from reading the files' headers (false).
    public let hasIndex: Bool
    private var openFiles: [String: SafeTensorsFile] = [:]

    public init(path: String) throws(CheckpointError) {
        self.path = path
        guard FileSystem.kind(of: path) == .directory else { throw CheckpointError(file: path, .notADirectory) }
        config = try ConfigFile.read(directory: path)
        let indexPath = path + "/" + Self.indexName
        if FileSystem.kind(of: indexPath) != .missing {
            weightMap = try Self.readIndex(indexPath, directory: path)
            weightFiles = Set(weightMap.values).sorted()
            hasIndex = true
        } else {
            hasIndex = false
            let names: [String]
            do {
                names = try FileSystem.listDirectory(path)
            } catch {
                throw CheckpointError(error)
            }
            if names.contains(Self.singleFileName) {
                weightFiles = [Self.singleFileName]
            } else {
                weightFiles = names.filter { $0.hasSuffix(".safetensors") }
            }
            guard !weightFiles.isEmpty else { throw CheckpointError(file: path, .noWeightFiles) }
            var map: [String: String] = [:]
            for name in weightFiles {
                let file: SafeTensorsFile
                do {
                    file = try SafeTensorsFile(path: path + "/" + name)
                } catch {
                    throw CheckpointError(error)
                }
                openFiles[name] = file
                for tensor in file.tensorNames {
                    if let other = map[tensor] {
                        throw CheckpointError(file: path + "/" + name, tensor: tensor, .duplicateTensor(otherFile: other))
                    }
                    map[tensor] = name
                }
            }
            weightMap = map
        }
    }

    /// The validated, memory-mapped file holding `tensor`.
    public func file(holding tensor: String) throws(CheckpointError) -> SafeTensorsFile {
        guard let name = weightMap[tensor] else {
            let source = hasIndex ? path + "/" + Self.indexName : path
            throw CheckpointError(file: source, tensor: tensor, .missingTensor)
        }
        let file: SafeTensorsFile
        if let open = openFiles[name] {
            file = open
        } else {
            do {
                file = try SafeTensorsFile(path: path + "/" + name)
            } catch {
                throw CheckpointError(error)
            }
            openFiles[name] = file
        }
        guard file.contains(tensor) else {
            throw CheckpointError(file: path + "/" + Self.indexName, tensor: tensor, .tensorNotInShard(shard: name))
        }
        return file
    }

    /// Parses the index: `{"weight_map": {tensor: shard}}` with plain file names that exist in `directory`.
    static func readIndex(_ indexPath: String, directory: String) throws(CheckpointError) -> [String: String] {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(indexPath)
        } catch {
            throw CheckpointError(file: indexPath, .cannotRead(reason: error.reason))
        }
        let root: JSONValue
        do {
            root = try JSONValue.parse(bytes)
        } catch {
            throw CheckpointError(file: indexPath, .invalidJSON(reason: error.description))
        }
        guard let mapValue = root.objectValue?["weight_map"] else {
            throw CheckpointError(file: indexPath, .invalidIndex(reason: "no \"weight_map\" object at the top level"))
        }
        guard let map = mapValue.objectValue else {
            throw CheckpointError(file: indexPath, .invalidIndex(reason: "\"weight_map\" is a \(mapValue.kindName), not an object"))
        }
        var weightMap: [String: String] = [:]
        for (tensor, value) in map.pairs {
            guard let shard = value.stringValue else {
                throw CheckpointError(
                    file: indexPath, tensor: tensor, .invalidIndex(reason: "the shard is a \(value.kindName), not a file name"))
            }
            // Shards live in the model directory itself; never follow a name out of it.
            guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                throw CheckpointError(
                    file: indexPath, tensor: tensor, .invalidIndex(reason: "shard \"\(shard)\" is not a plain file name in the directory"))
            }
            weightMap[tensor] = shard
        }
        for shard in Set(weightMap.values).sorted() where FileSystem.kind(of: directory + "/" + shard) != .file {
            throw CheckpointError(file: indexPath, .missingShard(shard))
        }
        return weightMap
    }
}
