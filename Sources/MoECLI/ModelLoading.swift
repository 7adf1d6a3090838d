import MoECheckpoint
import MoECore

/// Model-directory loading for the CLI (MoECheckpoint: config.json, shards, index, typed errors).
enum ModelLoading {
    static func loadLayer(directory: String, layer: Int) throws -> MoELayerWeights {
        try ModelDirectory(path: directory).layer(layer)
    }
}
