/// E expert matrices of one shape, stacked: blocks [E, rows, columns/32, 16] u8, scales [E, rows, columns/32] u8.
public struct MXFP4ExpertStack: Sendable, Equatable {
    public let experts: Int
    public let rows: Int
    public let columns: Int
    public var blocks: [UInt8]
    public var scales: [UInt8]

    public init(experts: Int, rows: Int, columns: Int, blocks: [UInt8], scales: [UInt8]) {
        precondition(columns % MXFP4.blockSize == 0)
        precondition(blocks.count == experts * rows * columns / 2, "blocks: [E, rows, columns/32, 16]")
        precondition(scales.count == experts * rows * columns / MXFP4.blockSize, "scales: [E, rows, columns/32]")
        self.experts = experts
        self.rows = rows
        self.columns = columns
        self.blocks = blocks
        self.scales = scales
    }

    public var blocksPerRow: Int { columns / MXFP4.blockSize }
    /// Byte offset of expert e's first packed byte in `blocks`.
    public func blockOffset(expert e: Int) -> Int { e * rows * columns / 2 }
    /// Offset of expert e's first scale in `scales`.
    public func scaleOffset(expert e: Int) -> Int { e * rows * blocksPerRow }

    /// One expert's matrix as a standalone value (copies).
    public func matrix(expert e: Int) -> MXFP4Matrix {
        let b = blockOffset(expert: e), s = scaleOffset(expert: e)
        return MXFP4Matrix(
            rows: rows, columns: columns,
            blocks: Array(blocks[b..<(b + rows * columns / 2)]),
            scales: Array(scales[s..<(s + rows * blocksPerRow)]))
    }
}

/// Everything one MoE layer needs, in the checkpoint's own layout (DESIGN §2). bf16 tensors are held as
/// float32 values that are exactly representable in bf16.
public struct MoELayerWeights: Sendable, Equatable {
    public let config: MoEConfig
    /// Wr [E, H] (bf16 values).
    public var routerWeight: [Float]
    /// br [E] (bf16 values).
    public var routerBias: [Float]
    /// W1 [E, 2I, H]: rows interleaved, row 2i = gate_i, row 2i+1 = up_i.
    public var gateUp: MXFP4ExpertStack
    /// b1 [E, 2I] (bf16 values).
    public var gateUpBias: [Float]
    /// W2 [E, H, I].
    public var down: MXFP4ExpertStack
    /// b2 [E, H] (bf16 values).
    public var downBias: [Float]

    public init(
        config: MoEConfig, routerWeight: [Float], routerBias: [Float], gateUp: MXFP4ExpertStack,
        gateUpBias: [Float], down: MXFP4ExpertStack, downBias: [Float]
    ) throws {
        try config.validate()
        let (E, H, I) = (config.experts, config.hidden, config.intermediate)
        func check(_ name: String, _ ok: Bool, _ expected: String) throws {
            if !ok { throw MoEError.shapeMismatch("\(name) must be \(expected) for \(config)") }
        }
        try check("router weight", routerWeight.count == E * H, "[E, H] = [\(E), \(H)]")
        try check("router bias", routerBias.count == E, "[E] = [\(E)]")
        try check("gate_up", gateUp.experts == E && gateUp.rows == 2 * I && gateUp.columns == H, "[E, 2I, H]")
        try check("gate_up bias", gateUpBias.count == E * 2 * I, "[E, 2I]")
        try check("down", down.experts == E && down.rows == H && down.columns == I, "[E, H, I]")
        try check("down bias", downBias.count == E * H, "[E, H]")
        self.config = config
        self.routerWeight = routerWeight
        self.routerBias = routerBias
        self.gateUp = gateUp
        self.gateUpBias = gateUpBias
        self.down = down
        self.downBias = downBias
    }

    /// Total bytes of the layer's weights as stored (MXFP4 experts, bf16 router and biases).
    public var storedBytes: Int {
        let c = config
        return c.experts * (c.gateUpBytesPerExpert + c.downBytesPerExpert + c.biasBytesPerExpert)
            + (c.experts * c.hidden + c.experts) * 2
    }
}
