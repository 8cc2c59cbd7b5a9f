/// TensorProto: a constant tensor (initializer, Constant value, attribute tensor), with its
/// data inline (raw_data or a typed field) or in an external file. Decoding keeps the bytes;
/// `floatValues` / `int64Values` check the shape and the data's size and convert.
public struct OnnxTensorProto: Sendable {
    /// TensorProto.DataType values the converter reads.
    public enum DataType: Int32, Sendable {
        case float = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7, string = 8, bool = 9
        case float16 = 10, double = 11, uint32 = 12, uint64 = 13, bfloat16 = 16

        var name: String { String(describing: self) }
        /// Bytes per element in raw_data.
        var size: Int? {
            switch self {
            case .float, .int32, .uint32: return 4
            case .int64, .double, .uint64: return 8
            case .float16, .bfloat16, .int16, .uint16: return 2
            case .uint8, .int8, .bool: return 1
            case .string: return nil
            }
        }
    }

    /// Largest tensor the converter accepts (elements), as the .cseg reader's 4 GiB per tensor.
    public static let maxElements = 1 << 30
    /// Most values of the varint fields (int32_data, int64_data, uint64_data): a one-byte
    /// varint becomes eight bytes here, so these are capped lower (exporters use raw_data
    /// for anything large).
    public static let maxVarintElements = 1 << 24

    public var name = ""
    public var dims: [Int64] = []
    public var dataType: Int32 = 0
    public var rawData: [UInt8]?
    public var floatData: [Float] = []
    public var int32Data: [Int64] = []
    public var int64Data: [Int64] = []
    public var doubleData: [Double] = []
    public var uint64Data: [Int64] = []
    public var stringCount = 0
    public var hasSegment = false
    /// 1 = EXTERNAL.
    public var dataLocation: Int32 = 0
    public var externalData: [(key: String, value: String)] = []

    public init(name: String, dims: [Int64], dataType: DataType) {
        self.name = name; self.dims = dims; self.dataType = dataType.rawValue
    }

    init(_ r: inout ProtobufReader) throws {
        func cap(_ n: Int) throws { guard n <= Self.maxElements else { throw r.fail("tensor has more than 2^30 values") } }
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                try r.repeatedVarints(f, "dims", into: &dims, limit: 32)
            case 2: dataType = try r.int32(f, "data_type")
            case 3: hasSegment = true; try r.skip(f)
            case 4: try r.repeatedFloats(f, "float_data", into: &floatData); try cap(floatData.count)
            case 5: try r.repeatedVarints(f, "int32_data", into: &int32Data, limit: Self.maxVarintElements)
            case 6: stringCount += 1; try r.skip(f)
            case 7: try r.repeatedVarints(f, "int64_data", into: &int64Data, limit: Self.maxVarintElements)
            case 8: name = try r.string(f, "name")
            case 9: rawData = try r.bytes(f, "raw_data")
            case 10: try r.repeatedDoubles(f, "double_data", into: &doubleData); try cap(doubleData.count)
            case 11: try r.repeatedVarints(f, "uint64_data", into: &uint64Data, limit: Self.maxVarintElements)
            case 13:
                guard externalData.count < 64 else { throw r.fail("too many external_data entries") }
                externalData.append(try r.message(f, "external_data") { e in
                    var key = "", value = ""
                    while let g = try e.nextField() {
                        switch g.number {
                        case 1: key = try e.string(g, "key")
                        case 2: value = try e.string(g, "value")
                        default: try e.skip(g)
                        }
                    }
                    return (key, value)
                })
            case 14: dataLocation = try r.int32(f, "data_location")
            default: try r.skip(f)
            }
        }
    }

    func fail(_ m: String) -> CascadeSegError {
        .invalidModel("ONNX tensor '\(name)': \(m)")
    }

    /// The shape as Ints: every dimension non-negative and the product at most `maxElements`.
    public func shape() throws -> [Int] {
        guard dims.allSatisfy({ $0 >= 0 }) else { throw fail("negative dimension in \(dims)") }
        guard dims.allSatisfy({ $0 <= Int64(Self.maxElements) }),
              checkedElementCount(dims.map { Int($0) }, limit: Self.maxElements) != nil else {
            throw fail("shape \(dims) has more than 2^30 elements")
        }
        return dims.map { Int($0) }
    }

    public var type: DataType? { DataType(rawValue: dataType) }

    var isExternal: Bool { dataLocation == 1 }

    /// The little-endian element bytes from raw_data or the external file, or nil when the
    /// data is in a typed field.
    func rawBytes(count: Int, elementSize: Int, baseDirectory: String?) throws -> [UInt8]? {
        let expected = count * elementSize
        if isExternal {
            guard rawData == nil else { throw fail("has both raw_data and external data") }
            return try OnnxExternalData.read(entries: externalData, tensor: name, expectedBytes: expected,
                                             baseDirectory: baseDirectory)
        }
        guard let rawData else { return nil }
        guard rawData.count == expected else {
            throw fail("raw_data has \(rawData.count) bytes, shape \(dims) of \(type?.name ?? "type \(dataType)") needs \(expected)")
        }
        return rawData
    }

    private func checkCount(_ n: Int, _ field: String, _ count: Int) throws {
        guard n == count else { throw fail("\(field) has \(n) values, shape \(dims) needs \(count)") }
    }

    /// The values converted to Float (float, float16, bfloat16, double and integer types).
    public func floatValues(baseDirectory: String?) throws -> [Float] {
        guard !hasSegment else { throw fail("segmented tensors are not supported") }
        let count = try shape().reduce(1, *)
        guard let type, let size = type.size else { throw fail("data type \(dataType) cannot be read as numbers") }
        if let raw = try rawBytes(count: count, elementSize: size, baseDirectory: baseDirectory) {
            return raw.withUnsafeBytes { b -> [Float] in
                switch type {
                case .float: return (0..<count).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
                case .float16: return (0..<count).map { Float16Conversion.toFloat(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
                case .bfloat16: return (0..<count).map { Float(bitPattern: UInt32(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) << 16) }
                case .double: return (0..<count).map { Float(Double(bitPattern: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)))) }
                default: return Self.integers(b, type: type, count: count).map { Float($0) }
                }
            }
        }
        switch type {
        case .float:
            try checkCount(floatData.count, "float_data", count)
            return floatData
        case .double:
            try checkCount(doubleData.count, "double_data", count)
            return doubleData.map { Float($0) }
        case .float16, .bfloat16:
            try checkCount(int32Data.count, "int32_data", count)
            return int32Data.map {
                let bits = UInt16(truncatingIfNeeded: $0)
                return type == .float16 ? Float16Conversion.toFloat(bits) : Float(bitPattern: UInt32(bits) << 16)
            }
        default:
            return try int64Values(baseDirectory: baseDirectory).map { Float($0) }
        }
    }

    /// The values as Int64 (integer and boolean types).
    public func int64Values(baseDirectory: String?) throws -> [Int64] {
        guard !hasSegment else { throw fail("segmented tensors are not supported") }
        let count = try shape().reduce(1, *)
        guard let type, let size = type.size, ![.float, .float16, .bfloat16, .double].contains(type) else {
            throw fail("data type \(type?.name ?? String(dataType)) is not an integer type")
        }
        if let raw = try rawBytes(count: count, elementSize: size, baseDirectory: baseDirectory) {
            return raw.withUnsafeBytes { Self.integers($0, type: type, count: count) }
        }
        switch type {
        case .int64:
            try checkCount(int64Data.count, "int64_data", count)
            return int64Data
        case .uint64, .uint32:
            try checkCount(uint64Data.count, "uint64_data", count)
            return uint64Data
        default:
            try checkCount(int32Data.count, "int32_data", count)
            return int32Data.map { Int64(Int32(truncatingIfNeeded: $0)) }
        }
    }

    static func integers(_ b: UnsafeRawBufferPointer, type: DataType, count: Int) -> [Int64] {
        switch type {
        case .int64, .uint64: return (0..<count).map { Int64(littleEndian: b.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        case .int32: return (0..<count).map { Int64(Int32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
        case .uint32: return (0..<count).map { Int64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        case .int16: return (0..<count).map { Int64(Int16(littleEndian: b.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self))) }
        case .uint16: return (0..<count).map { Int64(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
        case .int8: return (0..<count).map { Int64(Int8(bitPattern: b[$0])) }
        default: return (0..<count).map { Int64(b[$0]) }
        }
    }
}
