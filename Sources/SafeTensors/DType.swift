/// The element types a safetensors file may declare, by their header names.
public enum SafeTensorsDType: String, CaseIterable, Sendable, Hashable, CustomStringConvertible {
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case u16 = "U16"
    case i16 = "I16"
    case u32 = "U32"
    case i32 = "I32"
    case u64 = "U64"
    case i64 = "I64"
    case f16 = "F16"
    case bf16 = "BF16"
    case f32 = "F32"
    case f64 = "F64"
    case f8E4M3 = "F8_E4M3"
    case f8E5M2 = "F8_E5M2"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .bool, .u8, .i8, .f8E4M3, .f8E5M2: 1
        case .u16, .i16, .f16, .bf16: 2
        case .u32, .i32, .f32: 4
        case .u64, .i64, .f64: 8
        }
    }

    public var description: String { rawValue }

    /// The header names, for error messages ("BOOL, U8, ...").
    public static var supportedNames: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
