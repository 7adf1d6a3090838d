import MoECore

/// Model-directory loading for the CLI; implemented with MoECheckpoint once it lands.
enum ModelLoading {
    static func loadLayer(directory: String, layer: Int) throws -> MoELayerWeights {
        throw MoEError.invalidArgument("--model is not supported by this build yet; use --preset")
    }
}
