#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import SafeTensors

/// One bad file per validation rule; each checks the error names the file, the tensor and the problem.
@Suite struct ValidationTests {
    let directory = TemporaryDirectory()

    /// Writes `header` + `data` and returns the error opening it raises.
    func error(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) throws -> SafeTensorsError? {
        let path = directory.file("bad.safetensors")
        try writeRawFile(path, header: header, data: data, declaredLength: declaredLength)
        return openError(path)
    }

    @Test func missingFileNamesThePath() throws {
        defer { directory.remove() }
        let path = directory.file("absent.safetensors")
        let error = try #require(openError(path))
        guard case .cannotOpen = error.problem else { Issue.record("\(error)"); return }
        #expect(error.file == path)
        #expect(error.description.contains("absent.safetensors"))
        #expect(error.description.contains("No such file"))
    }

    @Test func directoryIsNotAFile() throws {
        defer { directory.remove() }
        let error = try #require(openError(directory.path))
        #expect(error.problem == .notRegularFile)
    }

    @Test func fileShorterThanTheLengthField() throws {
        defer { directory.remove() }
        for size in [0, 1, 7] {
            let path = directory.file("short\(size).safetensors")
            try FileSystem.writeFileAtomically(path, bytes: [UInt8](repeating: 1, count: size))
            let error = try #require(openError(path))
            #expect(error.problem == .tooSmall(size: size))
            #expect(error.description.contains("short\(size).safetensors"))
            #expect(error.description.contains("truncated"))
        }
    }

    @Test func headerLengthPastEndOfFile() throws {
        defer { directory.remove() }
        let header = #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
        let error = try #require(try self.error(header: header, data: [7], declaredLength: 4096))
        #expect(error.problem == .headerPastEnd(headerLength: 4096, fileSize: 8 + header.utf8.count + 1))
        let huge = try #require(try self.error(header: "{}", declaredLength: .max))
        #expect(huge.problem == .headerPastEnd(headerLength: .max, fileSize: 10))
    }

    @Test func headerLongerThanTheLimit() throws {
        defer { directory.remove() }
        // A sparse file: the declared header really is there, but is larger than any real header.
        let path = directory.file("huge.safetensors")
        let length = UInt64(SafeTensorsHeader.maximumLength + 1)
        try writeRawFile(path, header: "", declaredLength: length)
        #expect(truncate(path, off_t(8 + length)) == 0)
        let error = try #require(openError(path))
        #expect(error.problem == .headerTooLarge(headerLength: length, limit: SafeTensorsHeader.maximumLength))
    }

    @Test func headerThatIsNotJSON() throws {
        defer { directory.remove() }
        let cases: [(String, String)] = [
            (#"{"a":{"dtype":"U8""#, "end of text"),
            (#"{"a":1,}"#, "expected a string key"),
            (#"{"a":01}"#, "leading zero"),
            (#"{"a":1}{"#, "after the JSON value"),
            (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, "duplicate key \"a\""),
            ("", "end of text"),
        ]
        for (header, reason) in cases {
            let error = try #require(try self.error(header: header, data: [0, 0]))
            guard case .invalidJSON(_, let found) = error.problem else { Issue.record("\(header): \(error)"); continue }
            #expect(found.contains(reason), "\(header): \(found)")
            #expect(error.description.contains("not valid JSON"))
        }
        // Invalid UTF-8 inside a string.
        let path = directory.file("utf8.safetensors")
        try FileSystem.writeFileAtomically(path, bytes: [7, 0, 0, 0, 0, 0, 0, 0] + [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D])
        let error = try #require(openError(path))
        guard case .invalidJSON = error.problem else { Issue.record("\(error)"); return }
    }

    @Test func headerThatIsNotAnObject() throws {
        defer { directory.remove() }
        let error = try #require(try self.error(header: "[1, 2]"))
        #expect(error.problem == .headerNotObject(found: "array"))
    }

    @Test func metadataMustBeStrings() throws {
        defer { directory.remove() }
        let error = try #require(try self.error(header: #"{"__metadata__":{"format":"pt","step":3}}"#))
        #expect(error.problem == .invalidMetadata(reason: "entry \"step\" is a number, not a string"))
        let notObject = try #require(try self.error(header: #"{"__metadata__":"pt"}"#))
        #expect(notObject.problem == .invalidMetadata(reason: "is a string, not an object"))
    }

    @Test func entryMissingFieldsOrNotAnObject() throws {
        defer { directory.remove() }
        let notObject = try #require(try self.error(header: #"{"w":[1]}"#))
        #expect(notObject.tensor == "w")
        #expect(notObject.problem == .invalidEntry(reason: "entry is a array, not an object"))
        let noDType = try #require(try self.error(header: #"{"w":{"shape":[1],"data_offsets":[0,1]}}"#, data: [0]))
        #expect(noDType.problem == .invalidEntry(reason: "entry has no \"dtype\""))
        let noOffsets = try #require(try self.error(header: #"{"w":{"dtype":"U8","shape":[1]}}"#, data: [0]))
        #expect(noOffsets.problem == .invalidEntry(reason: "entry has no \"data_offsets\""))
        #expect(noOffsets.description.contains("tensor 'w'"))
    }

    @Test func unknownDTypeNamesTheTensor() throws {
        defer { directory.remove() }
        let error = try #require(try self.error(header: #"{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#, data: .init(repeating: 0, count: 16)))
        #expect(error.tensor == "w")
        #expect(error.problem == .unknownDType("F128"))
        #expect(error.description.contains("bad.safetensors: tensor 'w': unknown dtype \"F128\""))
        #expect(error.description.contains("F8_E5M2"))
    }

    @Test func shapeMustBeNonNegativeIntegers() throws {
        defer { directory.remove() }
        for shape in ["[-1]", "[1.5]", "[\"2\"]", "3"] {
            let error = try #require(try self.error(header: #"{"w":{"dtype":"U8","shape":\#(shape),"data_offsets":[0,0]}}"#))
            guard case .invalidShape = error.problem else { Issue.record("\(shape): \(error)"); continue }
            #expect(error.tensor == "w")
        }
        let overflow = try #require(try self.error(header: #"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#))
        guard case .invalidShape(let reason) = overflow.problem else { Issue.record("\(overflow)"); return }
        #expect(reason.contains("overflows"))
    }

    @Test func offsetsMustBeAnOrderedPair() throws {
        defer { directory.remove() }
        let data = [UInt8](repeating: 0, count: 8)
        for offsets in ["[4,0]", "[0]", "[0,1,2]", "[-1,0]", "[0,\"4\"]", "{}"] {
            let error = try #require(try self.error(header: #"{"w":{"dtype":"U8","shape":[4],"data_offsets":\#(offsets)}}"#, data: data))
            guard case .invalidOffsets = error.problem else { Issue.record("\(offsets): \(error)"); continue }
            #expect(error.tensor == "w")
        }
    }

    @Test func byteRangeMustMatchShapeTimesDType() throws {
        defer { directory.remove() }
        let error = try #require(try self.error(
            header: #"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}}"#, data: .init(repeating: 0, count: 24)))
        #expect(error.tensor == "w")
        #expect(error.problem == .byteCountMismatch(shape: [2, 3], dtype: .f32, expected: 24, found: 12))
        #expect(error.description.contains("[2, 3] × F32"))
    }

    @Test func rangeMustLieInsideTheDataArea() throws {
        defer { directory.remove() }
        let error = try #require(try self.error(
            header: #"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
            data: .init(repeating: 0, count: 6)))
        #expect(error.tensor == "b")
        #expect(error.problem == .outsideDataArea(begin: 4, end: 8, dataSize: 6))
    }

    @Test func truncatedDataOfAValidFile() throws {
        defer { directory.remove() }
        var writer = SafeTensorsWriter()
        try writer.add("weights", floats: [1, 2, 3, 4, 5, 6, 7, 8], shape: [2, 4])
        let path = directory.file("cut.safetensors")
        try writer.write(to: path)
        #expect(openError(path) == nil)
        var size = stat()
        stat(path, &size)
        #expect(truncate(path, size.st_size - 5) == 0)
        let error = try #require(openError(path))
        #expect(error.tensor == "weights")
        guard case .outsideDataArea(_, 32, 27) = error.problem else { Issue.record("\(error)"); return }
    }

    @Test func overlappingRangesNameBothTensors() throws {
        defer { directory.remove() }
        let error = try #require(try self.error(
            header: #"{"first":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"second":{"dtype":"U16","shape":[2],"data_offsets":[4,8]}}"#,
            data: .init(repeating: 0, count: 8)))
        #expect(error.tensor == "second")
        #expect(error.problem == .overlap(with: "first", range: 4..<8, otherRange: 0..<6))
        #expect(error.description.contains("'first'"))
        // Empty tensors overlap nothing, and touching ranges are fine.
        let fine = try self.error(
            header: #"{"a":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"c":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
            data: .init(repeating: 0, count: 4))
        #expect(fine == nil)
    }

    @Test func accessorsCheckNameAndDType() throws {
        defer { directory.remove() }
        var writer = SafeTensorsWriter()
        try writer.add("ids", int32s: [1, 2], shape: [2])
        let path = directory.file("ok.safetensors")
        try writer.write(to: path)
        let file = try SafeTensorsFile(path: path)
        let missing = #expect(throws: SafeTensorsError.self) { try file.floats("logits") }
        #expect(missing?.tensor == "logits")
        #expect(missing?.problem == .tensorNotFound)
        let wrong = #expect(throws: SafeTensorsError.self) { try file.floats("ids") }
        #expect(wrong?.problem == .wrongDType(expected: [.bf16, .f16, .f32], found: .i32))
        #expect(wrong?.description.contains("dtype is I32, expected BF16 or F16 or F32") == true)
        #expect(throws: SafeTensorsError.self) { try file.uint8s("ids") }
    }
}
