/// The parts of ONNX's ModelProto, GraphProto, NodeProto and ValueInfoProto that a converter
/// needs, decoded from the protobuf wire format (field numbers from onnx/onnx.proto). Unknown
/// fields are skipped; counts are capped so that a small hostile file cannot make the decoder
/// allocate much more than its own size.
public struct OnnxModelProto: Sendable {
    public struct OperatorSet: Equatable, Sendable {
        public var domain: String
        public var version: Int64
    }

    public var irVersion: Int64 = 0
    public var opsetImports: [OperatorSet] = []
    public var producerName = ""
    public var producerVersion = ""
    public var graph: OnnxGraphProto?

    static let maxListCount = 1 << 18

    /// The opset version of the default domain (`""` or `ai.onnx`), when declared.
    public var defaultOpset: Int64? {
        opsetImports.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }?.version
    }

    public init(bytes: [UInt8]) throws {
        var r = ProtobufReader(bytes, context: "ModelProto")
        while let f = try r.nextField() {
            switch f.number {
            case 1: irVersion = try r.int64(f, "ir_version")
            case 2: producerName = try r.string(f, "producer_name")
            case 3: producerVersion = try r.string(f, "producer_version")
            case 7: graph = try r.message(f, "graph") { try OnnxGraphProto(&$0) }
            case 8:
                guard opsetImports.count < 1024 else { throw r.fail("too many opset_import entries") }
                opsetImports.append(try r.message(f, "opset_import") { m in
                    var set = OperatorSet(domain: "", version: 0)
                    while let g = try m.nextField() {
                        switch g.number {
                        case 1: set.domain = try m.string(g, "domain")
                        case 2: set.version = try m.int64(g, "version")
                        default: try m.skip(g)
                        }
                    }
                    return set
                })
            default: try r.skip(f)
            }
        }
    }
}

/// GraphProto: nodes, initializers and the declared inputs, outputs and value infos.
public struct OnnxGraphProto: Sendable {
    public var name = ""
    public var nodes: [OnnxNodeProto] = []
    public var initializers: [OnnxTensorProto] = []
    public var inputs: [OnnxValueInfo] = []
    public var outputs: [OnnxValueInfo] = []
    public var valueInfo: [OnnxValueInfo] = []
    /// Sparse initializers are not supported; their names are kept for the error message.
    public var sparseInitializerCount = 0

    init(_ r: inout ProtobufReader) throws {
        func capped<T>(_ list: [T], _ what: String) throws {
            guard list.count < OnnxModelProto.maxListCount else { throw r.fail("more than \(OnnxModelProto.maxListCount) \(what)") }
        }
        while let f = try r.nextField() {
            switch f.number {
            case 1: try capped(nodes, "nodes"); nodes.append(try r.message(f, "node") { try OnnxNodeProto(&$0) })
            case 2: name = try r.string(f, "name")
            case 5: try capped(initializers, "initializers"); initializers.append(try r.message(f, "initializer") { try OnnxTensorProto(&$0) })
            case 11: try capped(inputs, "inputs"); inputs.append(try r.message(f, "input") { try OnnxValueInfo(&$0) })
            case 12: try capped(outputs, "outputs"); outputs.append(try r.message(f, "output") { try OnnxValueInfo(&$0) })
            case 13: try capped(valueInfo, "value_info entries"); valueInfo.append(try r.message(f, "value_info") { try OnnxValueInfo(&$0) })
            case 15: sparseInitializerCount += 1; try r.skip(f)
            default: try r.skip(f)
            }
        }
    }
}

/// NodeProto: one operator application.
public struct OnnxNodeProto: Sendable {
    public var name = ""
    public var opType = ""
    public var domain = ""
    public var inputs: [String] = []
    public var outputs: [String] = []
    public var attributes: [OnnxAttribute] = []

    init(_ r: inout ProtobufReader) throws {
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                guard inputs.count < 1 << 16 else { throw r.fail("a node has more than 65536 inputs") }
                inputs.append(try r.string(f, "input"))
            case 2:
                guard outputs.count < 1 << 16 else { throw r.fail("a node has more than 65536 outputs") }
                outputs.append(try r.string(f, "output"))
            case 3: name = try r.string(f, "name")
            case 4: opType = try r.string(f, "op_type")
            case 5:
                guard attributes.count < 1 << 16 else { throw r.fail("a node has more than 65536 attributes") }
                attributes.append(try r.message(f, "attribute") { try OnnxAttribute(&$0) })
            case 7: domain = try r.string(f, "domain")
            default: try r.skip(f)
            }
        }
    }

    public func attribute(_ name: String) -> OnnxAttribute? { attributes.first { $0.name == name } }

    /// The input at `index`, or nil when absent or empty (an omitted optional input).
    public func input(_ index: Int) -> String? {
        index < inputs.count && !inputs[index].isEmpty ? inputs[index] : nil
    }
}

/// ValueInfoProto with a tensor type: element type and (possibly symbolic) shape.
public struct OnnxValueInfo: Sendable {
    public enum Dim: Equatable, Sendable {
        case value(Int64)
        case param(String)
        case unknown
    }

    public var name = ""
    public var elementType: Int32?
    /// nil when the type has no shape (rank unknown).
    public var shape: [Dim]?

    init(_ r: inout ProtobufReader) throws {
        while let f = try r.nextField() {
            switch f.number {
            case 1: name = try r.string(f, "name")
            case 2:
                try r.message(f, "type") { t in
                    while let g = try t.nextField() {
                        guard g.number == 1 else { try t.skip(g); continue }  // only tensor_type
                        try t.message(g, "tensor_type") { tt in
                            while let h = try tt.nextField() {
                                switch h.number {
                                case 1: elementType = try tt.int32(h, "elem_type")
                                case 2: shape = try tt.message(h, "shape") { try Self.shape(&$0) }
                                default: try tt.skip(h)
                                }
                            }
                        }
                    }
                }
            default: try r.skip(f)
            }
        }
    }

    static func shape(_ r: inout ProtobufReader) throws -> [Dim] {
        var dims: [Dim] = []
        while let f = try r.nextField() {
            guard f.number == 1 else { try r.skip(f); continue }
            guard dims.count < 64 else { throw r.fail("a shape has more than 64 dimensions") }
            dims.append(try r.message(f, "dim") { d in
                var dim = Dim.unknown
                while let g = try d.nextField() {
                    switch g.number {
                    case 1: dim = .value(try d.int64(g, "dim_value"))
                    case 2: dim = .param(try d.string(g, "dim_param"))
                    default: try d.skip(g)
                    }
                }
                return dim
            })
        }
        return dims
    }
}
