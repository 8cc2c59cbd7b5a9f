/// AttributeProto: a named node attribute. Only the value fields a converter reads are kept
/// (f, i, s, t, g, floats, ints, strings, graphs); `type` says which one is in use.
public struct OnnxAttribute: Sendable {
    /// AttributeProto.AttributeType.
    public enum Kind: Int32, Sendable {
        case undefined = 0, float = 1, int = 2, string = 3, tensor = 4, graph = 5
        case floats = 6, ints = 7, strings = 8, tensors = 9, graphs = 10
        case sparseTensor = 11, sparseTensors = 12, typeProto = 13, typeProtos = 14
    }

    public var name = ""
    public var type: Int32 = 0
    public var f: Float?
    public var i: Int64?
    public var s: [UInt8]?
    public var t: OnnxTensorProto?
    /// Sub-graphs (If, Loop, Scan bodies) are decoded so that nesting is bounded and their
    /// operators can be named in errors; the converter does not run them.
    public var g: OnnxGraphProto?
    public var floats: [Float] = []
    public var ints: [Int64] = []
    public var strings: [[UInt8]] = []
    public var graphs: [OnnxGraphProto] = []
    /// A reference to an attribute of an enclosing function (not valid in a main graph).
    public var refAttrName = ""

    public var kind: Kind? { Kind(rawValue: type) }

    init(_ r: inout ProtobufReader) throws {
        while let f = try r.nextField() {
            switch f.number {
            case 1: name = try r.string(f, "name")
            case 2: self.f = try r.float(f, "f")
            case 3: i = try r.int64(f, "i")
            case 4: s = try r.bytes(f, "s")
            case 5: t = try r.message(f, "t") { try OnnxTensorProto(&$0) }
            case 6: g = try r.message(f, "g") { try OnnxGraphProto(&$0) }
            case 7:
                try r.repeatedFloats(f, "floats", into: &floats)
                guard floats.count <= 1 << 24 else { throw r.fail("attribute has more than 2^24 floats") }
            case 8:
                try r.repeatedVarints(f, "ints", into: &ints, limit: 1 << 24)
            case 9:
                guard strings.count < 1 << 16 else { throw r.fail("attribute has more than 65536 strings") }
                strings.append(try r.bytes(f, "strings"))
            case 11:
                guard graphs.count < 1024 else { throw r.fail("attribute has more than 1024 graphs") }
                graphs.append(try r.message(f, "graphs") { try OnnxGraphProto(&$0) })
            case 20: type = try r.int32(f, "type")
            case 21: refAttrName = try r.string(f, "ref_attr_name")
            default: try r.skip(f)
            }
        }
        // IR version 1 files may leave `type` unset; infer it from the field in use.
        if type == 0 {
            if self.f != nil { type = Kind.float.rawValue }
            else if i != nil { type = Kind.int.rawValue }
            else if s != nil { type = Kind.string.rawValue }
            else if t != nil { type = Kind.tensor.rawValue }
            else if g != nil { type = Kind.graph.rawValue }
            else if !floats.isEmpty { type = Kind.floats.rawValue }
            else if !ints.isEmpty { type = Kind.ints.rawValue }
            else if !strings.isEmpty { type = Kind.strings.rawValue }
            else if !graphs.isEmpty { type = Kind.graphs.rawValue }
        }
    }

    public var stringValue: String? { s.map { String(decoding: $0, as: UTF8.self) } }
}
