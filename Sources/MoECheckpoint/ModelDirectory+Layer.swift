import MoECore
import SafeTensors

extension ModelDirectory {
    /// Loads layer `layer`'s MoE weights. Every tensor is first checked (present, dtype, the shape config.json
    /// implies); then copied out of the mapping and checked for values that would poison every result (non-finite
    /// bf16 values, MXFP4 scale 255 = NaN).
    public func layer(_ layer: Int) throws(CheckpointError) -> MoELayerWeights {
        guard layer >= 0, layer < config.layers else {
            throw CheckpointError(file: path + "/" + ConfigFile.name, .layerOutOfRange(layer: layer, layers: config.layers))
        }
        var files: [GptOssTensor: SafeTensorsFile] = [:]
        for tensor in GptOssTensor.allCases {
            let name = tensor.name(layer: layer)
            let file = try self.file(holding: name)
            let info: TensorInfo
            do {
                info = try file.info(name)
            } catch {
                throw CheckpointError(error)
            }
            guard tensor.acceptedDTypes.contains(info.dtype) else {
                throw CheckpointError(file: file.path, tensor: name, .wrongDType(expected: tensor.acceptedDTypes, found: info.dtype))
            }
            let (expected, symbolic) = tensor.shape(config)
            guard info.shape == expected else {
                throw CheckpointError(file: file.path, tensor: name, .wrongShape(expected: expected, symbolic: symbolic, found: info.shape))
            }
            files[tensor] = file
        }

        func values(_ tensor: GptOssTensor) throws(CheckpointError) -> [Float] {
            let name = tensor.name(layer: layer), file = files[tensor]!
            var values: [Float]
            do {
                values = try file.floats(name)
            } catch {
                throw CheckpointError(error)
            }
            // F32 checkpoints are rounded to the bf16 the engine computes with.
            BF16.roundAll(&values)
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw CheckpointError(file: file.path, tensor: name, .nonFiniteWeight(index: bad, detail: "\(values[bad])"))
            }
            return values
        }
        func bytes(_ tensor: GptOssTensor) throws(CheckpointError) -> [UInt8] {
            let name = tensor.name(layer: layer), file = files[tensor]!
            do {
                return try file.uint8s(name)
            } catch {
                throw CheckpointError(error)
            }
        }
        func scales(_ tensor: GptOssTensor, rows: Int, blocksPerRow: Int) throws(CheckpointError) -> [UInt8] {
            let scales = try bytes(tensor)
            if let bad = scales.firstIndex(of: MXFP4.nanScale) {
                let perExpert = rows * blocksPerRow
                let detail = "the NaN scale 255 (expert \(bad / perExpert), row \(bad % perExpert / blocksPerRow), block \(bad % blocksPerRow))"
                throw CheckpointError(file: files[tensor]!.path, tensor: tensor.name(layer: layer), .nonFiniteWeight(index: bad, detail: detail))
            }
            return scales
        }

        let (E, H, I) = (config.experts, config.hidden, config.intermediate)
        let gateUp = MXFP4ExpertStack(
            experts: E, rows: 2 * I, columns: H, blocks: try bytes(.gateUpBlocks),
            scales: try scales(.gateUpScales, rows: 2 * I, blocksPerRow: H / MXFP4.blockSize))
        let down = MXFP4ExpertStack(
            experts: E, rows: H, columns: I, blocks: try bytes(.downBlocks),
            scales: try scales(.downScales, rows: H, blocksPerRow: I / MXFP4.blockSize))
        do {
            return try MoELayerWeights(
                config: config, routerWeight: try values(.routerWeight), routerBias: try values(.routerBias),
                gateUp: gateUp, gateUpBias: try values(.gateUpBias), down: down, downBias: try values(.downBias))
        } catch let error as CheckpointError {
            throw error
        } catch {
            // Unreachable after the shape checks above; reported rather than trapped all the same.
            throw CheckpointError(file: path, .invalidArgument("layer \(layer): \(error)"))
        }
    }
}
