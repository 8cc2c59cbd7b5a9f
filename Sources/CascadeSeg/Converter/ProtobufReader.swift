/// A reader of the protocol-buffers wire format over an untrusted byte buffer.
///
/// Every length is checked against the bytes that remain in the enclosing message before it is
/// used, varints are at most ten bytes, and nested messages are read through `message(_:)`,
/// which caps the nesting depth. Nothing is allocated from a length the file declares except
/// through `bytes(_:)`, whose size is bounded by the buffer itself.
public struct ProtobufReader {
    /// The wire types of the encoding (groups, 3 and 4, are obsolete and refused).
    public enum WireType: Int, Sendable {
        case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5
    }

    /// One field key: its number and how its value is encoded.
    public struct Field: Sendable {
        public var number: Int
        public var wireType: WireType
    }

    public static let maxDepth = 64
    /// Most nested messages one buffer may hold (each becomes a decoded struct of a few hundred
    /// bytes, so this bounds the decoder's memory for a hostile file of tiny messages).
    public static let maxMessages = 1 << 20
    /// Most values one repeated scalar field may hold.
    public static let maxRepeated = 1 << 28

    /// Counts the messages decoded from one buffer, shared by all nested readers.
    final class Budget { var messages = 0 }

    let buffer: [UInt8]
    private(set) var position: Int
    let end: Int
    let depth: Int
    let budget: Budget
    /// Names the message being read, for error messages ("ModelProto.graph.node").
    let context: String

    public init(_ buffer: [UInt8], context: String) {
        self.init(buffer: buffer, range: 0..<buffer.count, depth: 0, budget: Budget(), context: context)
    }

    init(buffer: [UInt8], range: Range<Int>, depth: Int, budget: Budget, context: String) {
        self.buffer = buffer
        self.position = range.lowerBound
        self.end = range.upperBound
        self.depth = depth
        self.budget = budget
        self.context = context
    }

    func fail(_ message: String) -> CascadeSegError {
        .invalidModel("ONNX protobuf: \(context): \(message) (truncated or not an ONNX file?)")
    }

    public var isAtEnd: Bool { position >= end }
    public var remaining: Int { end - position }

    /// The next field key, or nil at the end of the message.
    public mutating func nextField() throws -> Field? {
        guard !isAtEnd else { return nil }
        let key = try varint()
        let number = key >> 3
        guard number >= 1, number <= 536_870_911 else { throw fail("field number \(number) is invalid") }
        guard let wire = WireType(rawValue: Int(key & 7)) else {
            throw fail("field \(number) has unsupported wire type \(key & 7)")
        }
        return Field(number: Int(number), wireType: wire)
    }

    public mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw fail("varint runs past the end of the message") }
            let byte = buffer[position]
            position += 1
            if shift == 63 && byte > 1 { throw fail("varint is longer than 64 bits") }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            guard shift <= 63 else { throw fail("varint is longer than ten bytes") }
        }
    }

    public mutating func fixed32() throws -> UInt32 {
        guard remaining >= 4 else { throw fail("32-bit value runs past the end of the message") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(buffer[position + i]) << (8 * UInt32(i)) }
        position += 4
        return v
    }

    public mutating func fixed64() throws -> UInt64 {
        guard remaining >= 8 else { throw fail("64-bit value runs past the end of the message") }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(buffer[position + i]) << (8 * UInt64(i)) }
        position += 8
        return v
    }

    /// The byte range of a length-delimited value, checked against the rest of the message.
    public mutating func lengthDelimitedRange() throws -> Range<Int> {
        let length = try varint()
        guard length <= UInt64(remaining) else {
            throw fail("length \(length) runs past the end of the message (\(remaining) bytes left)")
        }
        let start = position
        position += Int(length)
        return start..<position
    }

    /// Skips a value of a field this reader does not use.
    public mutating func skip(_ field: Field) throws {
        switch field.wireType {
        case .varint: _ = try varint()
        case .fixed64: _ = try fixed64()
        case .fixed32: _ = try fixed32()
        case .lengthDelimited: _ = try lengthDelimitedRange()
        }
    }

    // MARK: Typed values (each checks the wire type first)

    private func expect(_ field: Field, _ wire: WireType, _ what: String) throws {
        guard field.wireType == wire else {
            throw fail("field \(field.number) (\(what)) has wire type \(field.wireType.rawValue), expected \(wire.rawValue)")
        }
    }

    public mutating func int64(_ field: Field, _ what: String) throws -> Int64 {
        try expect(field, .varint, what)
        return Int64(bitPattern: try varint())
    }

    public mutating func int32(_ field: Field, _ what: String) throws -> Int32 {
        try expect(field, .varint, what)
        // int32 values are sign-extended to 64 bits on the wire; keep the low 32 bits.
        return Int32(truncatingIfNeeded: Int64(bitPattern: try varint()))
    }

    public mutating func float(_ field: Field, _ what: String) throws -> Float {
        try expect(field, .fixed32, what)
        return Float(bitPattern: try fixed32())
    }

    public mutating func bytes(_ field: Field, _ what: String) throws -> [UInt8] {
        try expect(field, .lengthDelimited, what)
        return Array(buffer[try lengthDelimitedRange()])
    }

    public mutating func string(_ field: Field, _ what: String) throws -> String {
        try expect(field, .lengthDelimited, what)
        let range = try lengthDelimitedRange()
        guard range.count <= 1 << 20 else { throw fail("\(what) is longer than 1 MiB") }
        return String(decoding: buffer[range], as: UTF8.self)
    }

    /// A nested message: `body` reads it with its own reader bounded to the message's bytes.
    public mutating func message<T>(_ field: Field, _ what: String, _ body: (inout ProtobufReader) throws -> T) throws -> T {
        try expect(field, .lengthDelimited, what)
        let range = try lengthDelimitedRange()
        guard depth + 1 <= Self.maxDepth else {
            throw CascadeSegError.invalidModel("ONNX protobuf: \(context).\(what): messages nested deeper than \(Self.maxDepth) levels")
        }
        budget.messages += 1
        guard budget.messages <= Self.maxMessages else {
            throw CascadeSegError.invalidModel("ONNX protobuf: more than \(Self.maxMessages) nested messages")
        }
        var inner = ProtobufReader(buffer: buffer, range: range, depth: depth + 1, budget: budget, context: context + "." + what)
        return try body(&inner)
    }

    /// Appends the values of a repeated varint field, packed (one length-delimited run) or not.
    public mutating func repeatedVarints(_ field: Field, _ what: String, into values: inout [Int64], limit: Int = maxRepeated) throws {
        switch field.wireType {
        case .varint:
            guard values.count < limit else { throw fail("\(what) has more than \(limit) values") }
            values.append(Int64(bitPattern: try varint()))
        case .lengthDelimited:
            let range = try lengthDelimitedRange()
            var packed = ProtobufReader(buffer: buffer, range: range, depth: depth, budget: budget, context: context + "." + what)
            // Each varint is at least one byte, so the run's length bounds the count.
            values.reserveCapacity(values.count + min(range.count, 1 << 24))
            while !packed.isAtEnd {
                guard values.count < limit else { throw fail("\(what) has more than \(limit) values") }
                values.append(Int64(bitPattern: try packed.varint()))
            }
        default:
            throw fail("field \(field.number) (\(what)) has wire type \(field.wireType.rawValue), expected a varint or a packed run")
        }
    }

    /// Appends the values of a repeated float (fixed32) field, packed or not.
    public mutating func repeatedFloats(_ field: Field, _ what: String, into values: inout [Float]) throws {
        switch field.wireType {
        case .fixed32:
            values.append(Float(bitPattern: try fixed32()))
        case .lengthDelimited:
            let range = try lengthDelimitedRange()
            guard range.count % 4 == 0 else { throw fail("packed \(what) has \(range.count) bytes, not a multiple of 4") }
            values.reserveCapacity(values.count + range.count / 4)
            var packed = ProtobufReader(buffer: buffer, range: range, depth: depth, budget: budget, context: context + "." + what)
            while !packed.isAtEnd { values.append(Float(bitPattern: try packed.fixed32())) }
        default:
            throw fail("field \(field.number) (\(what)) has wire type \(field.wireType.rawValue), expected 32-bit values")
        }
    }

    /// Appends the values of a repeated double (fixed64) field, packed or not.
    public mutating func repeatedDoubles(_ field: Field, _ what: String, into values: inout [Double]) throws {
        switch field.wireType {
        case .fixed64:
            values.append(Double(bitPattern: try fixed64()))
        case .lengthDelimited:
            let range = try lengthDelimitedRange()
            guard range.count % 8 == 0 else { throw fail("packed \(what) has \(range.count) bytes, not a multiple of 8") }
            values.reserveCapacity(values.count + range.count / 8)
            var packed = ProtobufReader(buffer: buffer, range: range, depth: depth, budget: budget, context: context + "." + what)
            while !packed.isAtEnd { values.append(Double(bitPattern: try packed.fixed64())) }
        default:
            throw fail("field \(field.number) (\(what)) has wire type \(field.wireType.rawValue), expected 64-bit values")
        }
    }
}
