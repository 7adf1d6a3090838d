#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import SafeTensors

@Suite struct RoundTripTests {
    let directory = TemporaryDirectory()

    /// Every dtype, awkward shapes (scalar, empty, odd sizes): the same dtypes, shapes and bytes come back.
    @Test func everyDTypeRoundTripsExactly() throws {
        defer { directory.remove() }
        var generator = SystemRandomNumberGenerator()
        var writer = SafeTensorsWriter(metadata: ["format": "pt", "note": "quote \" and\nnewline"])
        var expected: [(String, SafeTensorsDType, [Int], [UInt8])] = []
        let shapes: [[Int]] = [[], [0], [1], [3, 5], [2, 1, 7]]
        for (d, dtype) in SafeTensorsDType.allCases.enumerated() {
            for (s, shape) in shapes.enumerated() {
                let count = shape.reduce(1, *) * dtype.size
                let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let name = "t\(d).\(s).\(dtype)"
                try writer.add(name, dtype: dtype, shape: shape, bytes: bytes)
                expected.append((name, dtype, shape, bytes))
            }
        }
        let path = directory.file("all.safetensors")
        try writer.write(to: path)
        let file = try SafeTensorsFile(path: path)
        #expect(file.metadata == writer.metadata)
        #expect(file.tensorNames == expected.map(\.0))
        #expect((8 + file.headerLength) % 8 == 0, "data area aligned to 8 bytes")
        for (name, dtype, shape, bytes) in expected {
            let info = try file.info(name)
            #expect(info.dtype == dtype && info.shape == shape)
            #expect(try file.bytes(name) == bytes, "\(name)")
        }
    }

    @Test func typedAccessorsConvert() throws {
        defer { directory.remove() }
        let floats: [Float] = [0, -0.0, 1.5, -3.25, .infinity, -.infinity, 0x1p-130, 3.4e38, 0.1]
        let doubles: [Double] = [0.1, -2.5e-300, .pi, .infinity]
        var writer = SafeTensorsWriter()
        try writer.add("f32", floats: floats, shape: [3, 3])
        try writer.add("bf16", floats: floats, shape: [9], dtype: .bf16)
        try writer.add("f64", doubles: doubles, shape: [2, 2])
        try writer.add("i32", int32s: [.min, -1, 0, 7, .max], shape: [5])
        try writer.add("u8", dtype: .u8, shape: [3], bytes: [0, 128, 255])
        // IEEE half: 1.0, -2.0, 65504 (max), 2^-24 (smallest subnormal), +inf, NaN, -0.
        let halves: [UInt16] = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x7E00, 0x8000]
        try writer.add("f16", dtype: .f16, shape: [7], bytes: halves.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] })
        let path = directory.file("typed.safetensors")
        try writer.write(to: path)

        let file = try SafeTensorsFile(path: path)
        #expect(try file.floats("f32").map(\.bitPattern) == floats.map(\.bitPattern))
        #expect(try file.floats("bf16") == floats.map(Self.bf16Round))
        #expect(try file.doubles("f64").map(\.bitPattern) == doubles.map(\.bitPattern))
        #expect(try file.doubles("f32") == floats.map(Double.init))
        #expect(try file.int32s("i32") == [.min, -1, 0, 7, .max])
        #expect(try file.uint8s("u8") == [0, 128, 255])
        let f16 = try file.floats("f16")
        #expect(Array(f16[0..<5]) == [1, -2, 65504, 0x1p-24, .infinity])
        #expect(f16[5].isNaN)
        #expect(f16[6] == 0 && f16[6].sign == .minus)
    }

    /// bf16 rounding, written independently of the codec: nearest, ties to even.
    static func bf16Round(_ x: Float) -> Float {
        if !x.isFinite { return x }
        let bits = x.bitPattern, truncated = bits & 0xFFFF_0000, remainder = bits & 0xFFFF
        let down = Float(bitPattern: truncated), up = Float(bitPattern: truncated + 0x1_0000)
        if remainder < 0x8000 { return down }
        if remainder > 0x8000 { return up }
        return (truncated >> 16) & 1 == 0 ? down : up
    }

    @Test func bf16TiesRoundToEven() throws {
        defer { directory.remove() }
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: goes to 1 (even). 1 + 3·2^-8 goes up to 1 + 2^-6.
        let values: [Float] = [1 + 0x1p-8, 1 + 3 * 0x1p-8, -(1 + 0x1p-8), 1 + 0x1p-8 + 0x1p-20]
        var writer = SafeTensorsWriter()
        try writer.add("x", floats: values, shape: [4], dtype: .bf16)
        let path = directory.file("ties.safetensors")
        try writer.write(to: path)
        #expect(try SafeTensorsFile(path: path).floats("x") == [1, 1 + 0x1p-6, -1, 1 + 0x1p-7])
    }

    @Test func readsFilesWithOutOfOrderDataAndPadding() throws {
        defer { directory.remove() }
        // As other writers may produce: data not in header order, header padded with spaces, a hole.
        let header = #"{"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]}}    "#
        let path = directory.file("other.safetensors")
        try writeRawFile(path, header: header, data: [1, 2, 9, 9, 3, 4])
        let file = try SafeTensorsFile(path: path)
        #expect(try file.bytes("a") == [1, 2])
        #expect(try file.bytes("b") == [3, 4])
    }

    @Test func writerRejectsInconsistentTensors() throws {
        var writer = SafeTensorsWriter()
        let short = #expect(throws: SafeTensorsError.self) {
            try writer.add("w", dtype: .f32, shape: [2, 2], bytes: [0, 0, 0])
        }
        #expect(short?.tensor == "w")
        #expect(short?.description.contains("needs 16") == true)
        try writer.add("w", dtype: .u8, shape: [1], bytes: [0])
        #expect(throws: SafeTensorsError.self) { try writer.add("w", dtype: .u8, shape: [1], bytes: [0]) }
        #expect(throws: SafeTensorsError.self) { try writer.add("__metadata__", dtype: .u8, shape: [1], bytes: [0]) }
        #expect(throws: SafeTensorsError.self) { try writer.add("n", dtype: .u8, shape: [-1], bytes: []) }
        #expect(throws: SafeTensorsError.self) { try writer.add("h", floats: [1], shape: [1], dtype: .f16) }
        #expect(writer.specs.map(\.name) == ["w"])
    }

    /// A stream writer that fails or is abandoned part-way leaves nothing behind: no file, no temporary.
    @Test func failedWritesLeaveNoFile() throws {
        defer { directory.remove() }
        let path = directory.file("partial.safetensors")
        let specs = [TensorSpec(name: "a", dtype: .u8, shape: [2]), TensorSpec(name: "b", dtype: .u8, shape: [2])]
        do {
            let writer = try SafeTensorsStreamWriter(path: path, tensors: specs)
            try writer.append("a", bytes: [1, 2])
            let outOfOrder = #expect(throws: SafeTensorsError.self) { try writer.append("a", bytes: [1, 2]) }
            #expect(outOfOrder?.description.contains("expected 'b'") == true)
            let unfinished = #expect(throws: SafeTensorsError.self) { try writer.finish() }
            #expect(unfinished?.tensor == "b")
        }
        #expect(try FileSystem.listDirectory(directory.path).isEmpty)

        let missingDirectory = #expect(throws: SafeTensorsError.self) {
            try SafeTensorsWriter().write(to: directory.file("no/such/dir.safetensors"))
        }
        #expect(missingDirectory?.description.contains("no/such/dir.safetensors") == true)
    }

    @Test func rewritingReplacesTheWholeFile() throws {
        defer { directory.remove() }
        let path = directory.file("replace.safetensors")
        var big = SafeTensorsWriter()
        try big.add("x", dtype: .u8, shape: [1000], bytes: .init(repeating: 1, count: 1000))
        try big.write(to: path)
        var small = SafeTensorsWriter()
        try small.add("y", dtype: .u8, shape: [1], bytes: [2])
        try small.write(to: path)
        let file = try SafeTensorsFile(path: path)
        #expect(file.tensorNames == ["y"])
        #expect(file.fileSize == 8 + file.headerLength + 1)
        #expect(try FileSystem.listDirectory(directory.path) == ["replace.safetensors"])
    }
}
