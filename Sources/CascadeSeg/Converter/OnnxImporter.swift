/// Options of an ONNX import.
public struct OnnxImportOptions: Sendable {
    /// Name of the graph in the model file (one stage: `stage1`).
    public var graphName: String
    /// Overrides the size multiple the importer derives from the network's strides.
    public var sizeMultiple: [Int]?

    public init(graphName: String = "stage1", sizeMultiple: [Int]? = nil) {
        self.graphName = graphName
        self.sizeMultiple = sizeMultiple
    }
}

/// The result of an import: an engine graph, its weights, and what the conversion found.
public struct OnnxImportedGraph: Sendable {
    public var graph: Graph
    public var weights: [String: Tensor]
    public var opset: Int64
    public var inputChannels: Int
    /// Channels of the first output, when known.
    public var outputChannels: Int?
    /// Rewrites worth telling the user about (fused patterns, folded nodes).
    public var notes: [String]
}

/// Turns an ONNX graph into an engine `Graph` (docs/FORMAT.md): ONNX operators map to the
/// engine's, operands that ONNX passes as input tensors (Resize scales and sizes, Pad pads,
/// Slice bounds) become attributes, constant subgraphs are folded, dead nodes dropped, and
/// PyTorch's GroupNorm export pattern becomes one GroupNormalization node. Anything that
/// cannot be expressed is collected, and one error lists it all, before anything is written.
public final class OnnxImporter {
    /// Opsets whose semantics this importer implements for the operators it maps.
    public static let supportedOpsets: ClosedRange<Int64> = 11...23

    /// What the importer knows about a runtime value.
    struct Activation {
        var channels: Int?
        /// Input voxels per output voxel along each spatial axis (the cumulative stride).
        var stride: [Double]
        /// Produced by ArgMax (integral values): casts to integer types are exact.
        var isIndex = false
        /// ArgMax with keepdims 0: ONNX dropped the channel axis, the engine kept it.
        var channelAxisDropped = false
    }

    enum ValueState {
        case activation(Activation)
        /// `Reshape(x, [N, G, -1])` of a GroupNorm export, waiting for its InstanceNormalization.
        case groupReshaped(source: String, groups: Int, origin: OnnxNodeProto)
        /// ... and after the InstanceNormalization, waiting for the Reshape back to x's shape.
        case groupNormed(source: String, groups: Int, epsilon: Double, scale: [Float], bias: [Float], origins: [OnnxNodeProto])
        /// `Transpose(x, perm)` with the channels moved last (perm[4] = 1), waiting for a Softmax
        /// over them (how exporters write a channel softmax before opset 13).
        case channelsLast(source: String, perm: [Int], origin: OnnxNodeProto)
        /// ... and after that Softmax, waiting for the inverse Transpose.
        case channelsLastSoftmax(source: String, perm: [Int], origins: [OnnxNodeProto])
    }

    enum Issue {
        case unsupportedOp(op: String, node: String)
        case problem(op: String, node: String, message: String)
    }

    /// An engine node, or a placeholder for an ONNX node that could not be mapped (`issue`).
    struct Pending {
        var node: Node
        var issue: Issue?
    }

    let model: OnnxModelProto
    let onnxGraph: OnnxGraphProto
    let baseDirectory: String?
    let options: OnnxImportOptions
    var opset: Int64 = 0

    var initializers: [String: OnnxTensorProto] = [:]
    var constants: [String: OnnxConstant] = [:]
    var states: [String: ValueState] = [:]
    var alias: [String: String] = [:]
    var pending: [Pending] = []
    var producer: [String: Int] = [:]
    var consumers: [String: Int] = [:]
    var usedNames: Set<String> = []
    var nodeNames: Set<String> = []
    var weights: [String: Tensor] = [:]
    /// Constant value name -> weight name, so that a constant read by several nodes is stored once.
    var weightForValue: [String: String] = [:]
    /// GroupNormalization nodes made from the export pattern whose scale and bias may still
    /// absorb a following per-channel Mul / Add: output value -> (pending index, scale, bias names).
    var affineNorms: [String: (index: Int, scale: String, bias: String)] = [:]
    var notes: [String] = []
    var inputName = ""

    init(model: OnnxModelProto, graph: OnnxGraphProto, baseDirectory: String?, options: OnnxImportOptions) {
        self.model = model
        self.onnxGraph = graph
        self.baseDirectory = baseDirectory
        self.options = options
    }

    /// Imports the main graph of `model`. `baseDirectory` is the folder external data paths
    /// are relative to (nil: external data is refused).
    public static func importGraph(_ model: OnnxModelProto, baseDirectory: String?,
                                   options: OnnxImportOptions = OnnxImportOptions()) throws -> OnnxImportedGraph {
        guard let graph = model.graph else { throw CascadeSegError.invalidModel("ONNX model has no graph") }
        let importer = OnnxImporter(model: model, graph: graph, baseDirectory: baseDirectory, options: options)
        return try importer.run()
    }

    // MARK: - Walk

    func run() throws -> OnnxImportedGraph {
        guard let opset = model.defaultOpset else { throw CascadeSegError.invalidModel("ONNX model declares no opset for the default domain") }
        guard Self.supportedOpsets.contains(opset) else {
            throw CascadeSegError.invalidModel("ONNX opset \(opset) is not supported (this converter reads opsets \(Self.supportedOpsets.lowerBound)...\(Self.supportedOpsets.upperBound); export with opset_version=17)")
        }
        self.opset = opset
        guard onnxGraph.sparseInitializerCount == 0 else { throw CascadeSegError.invalidModel("ONNX sparse initializers are not supported") }

        for t in onnxGraph.initializers {
            guard !t.name.isEmpty else { throw CascadeSegError.invalidModel("ONNX initializer without a name") }
            guard initializers[t.name] == nil else { throw CascadeSegError.invalidModel("ONNX initializer '\(t.name)' is defined twice") }
            initializers[t.name] = t
        }
        let runtimeInputs = onnxGraph.inputs.filter { initializers[$0.name] == nil }
        guard runtimeInputs.count == 1 else {
            throw CascadeSegError.invalidGraph("the ONNX graph must have exactly one input (the image, 1 x C x D x H x W); it has \(runtimeInputs.count): \(runtimeInputs.map(\.name))")
        }
        let input = runtimeInputs[0]
        inputName = input.name
        let inputShape = try declaredInputShape(input)
        guard case .fixed(let inputChannels) = inputShape[1] else { throw CascadeSegError.invalidGraph("unreachable") }
        states[input.name] = .activation(Activation(channels: inputChannels, stride: [1, 1, 1]))
        guard !onnxGraph.outputs.isEmpty else { throw CascadeSegError.invalidGraph("the ONNX graph has no outputs") }

        for n in onnxGraph.nodes {
            for i in n.inputs where !i.isEmpty { consumers[i, default: 0] += 1 }
            for o in n.outputs where !o.isEmpty { usedNames.insert(o) }
        }
        for o in onnxGraph.outputs { consumers[o.name, default: 0] += 1 }
        usedNames.formUnion(initializers.keys)
        usedNames.insert(input.name)

        for (index, n) in try topologicalOrder().enumerated() {
            var node = n
            node.name = uniqueNodeName(n.name.isEmpty ? "\(n.opType)_\(index)" : n.name)
            try visit(node)
        }
        return try finish(inputShape: inputShape, inputChannels: inputChannels)
    }

    func declaredInputShape(_ input: OnnxValueInfo) throws -> [Dimension] {
        guard let shape = input.shape, shape.count == 5 else {
            throw CascadeSegError.invalidGraph("ONNX input '\(input.name)' must be 5-D (N, C, D, H, W), is \(input.shape.map { "\($0.count)-D" } ?? "of unknown rank")")
        }
        if let t = input.elementType, t != OnnxTensorProto.DataType.float.rawValue {
            throw CascadeSegError.invalidGraph("ONNX input '\(input.name)' has element type \(t); only float32 images are supported")
        }
        if case .value(let n) = shape[0], n != 1 { throw CascadeSegError.invalidGraph("ONNX input '\(input.name)' has batch \(n); the engine runs batch 1") }
        guard case .value(let c) = shape[1], c >= 1, c <= 64 else {
            throw CascadeSegError.invalidGraph("ONNX input '\(input.name)' must declare its channel count (1...64); export with a fixed channel axis")
        }
        let names = ["D", "H", "W"]
        var dims: [Dimension] = [.fixed(1), .fixed(Int(c))]
        for i in 2..<5 {
            switch shape[i] {
            case .value(let v):
                guard v >= 1, v <= 1 << 16 else { throw CascadeSegError.invalidGraph("ONNX input '\(input.name)' has spatial size \(v)") }
                dims.append(.fixed(Int(v)))
            case .param(let p) where Self.isPlainSymbol(p): dims.append(.symbol(p))
            default:
                dims.append(.symbol(names[i - 2]))
            }
        }
        // A plain name that another axis also uses for a different size would tie the two.
        for i in 2..<5 {
            if case .param(let p) = shape[i], Self.isPlainSymbol(p) { continue }
            if case .symbol(let s) = dims[i], dims.enumerated().contains(where: { $0.offset != i && $0.element == .symbol(s) }) {
                dims[i] = .symbol("\(s)_\(i - 2)")
            }
        }
        return dims
    }

    /// A dim_param usable as a size symbol: an identifier. Exporters also write expressions
    /// (the dynamo exporter's `4*_D` for a size declared as a multiple of 4); those axes get
    /// the plain names D, H, W.
    static func isPlainSymbol(_ p: String) -> Bool {
        guard let first = p.unicodeScalars.first, p.unicodeScalars.count <= 64,
              first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return p.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    /// Nodes in an order where every value is defined before it is read (ONNX requires files
    /// to be sorted; this does not trust that). Refuses reads of undefined values and cycles.
    func topologicalOrder() throws -> [OnnxNodeProto] {
        let nodes = onnxGraph.nodes
        var producerOf: [String: Int] = [:]
        for (i, n) in nodes.enumerated() {
            for o in n.outputs where !o.isEmpty {
                guard producerOf[o] == nil, initializers[o] == nil, o != inputName else {
                    throw CascadeSegError.invalidModel("ONNX value '\(o)' is defined more than once")
                }
                producerOf[o] = i
            }
        }
        var pendingCount = [Int](repeating: 0, count: nodes.count)
        var readers: [Int: [Int]] = [:]
        for (i, n) in nodes.enumerated() {
            var deps = Set<Int>()
            for name in n.inputs where !name.isEmpty {
                if let p = producerOf[name] { deps.insert(p) } else if initializers[name] == nil && name != inputName {
                    throw CascadeSegError.invalidModel("ONNX node '\(n.name)' (\(n.opType)) reads '\(name)', which nothing defines")
                }
            }
            pendingCount[i] = deps.count
            for d in deps { readers[d, default: []].append(i) }
        }
        for o in onnxGraph.outputs where producerOf[o.name] == nil && initializers[o.name] == nil && o.name != inputName {
            throw CascadeSegError.invalidModel("ONNX graph output '\(o.name)' is not produced by any node")
        }
        var ready = (0..<nodes.count).filter { pendingCount[$0] == 0 }
        var order: [OnnxNodeProto] = []
        var cursor = 0
        while cursor < ready.count {
            let i = ready[cursor]; cursor += 1
            order.append(nodes[i])
            for r in readers[i] ?? [] {
                pendingCount[r] -= 1
                if pendingCount[r] == 0 { ready.append(r) }
            }
        }
        guard order.count == nodes.count else { throw CascadeSegError.invalidModel("ONNX graph contains a cycle") }
        return order
    }

    func uniqueNodeName(_ base: String) -> String {
        var name = base, k = 2
        while nodeNames.contains(name) { name = "\(base)_\(k)"; k += 1 }
        nodeNames.insert(name)
        return name
    }

    func uniqueValueName(_ base: String) -> String {
        var name = base, k = 2
        while usedNames.contains(name) { name = "\(base)_\(k)"; k += 1 }
        usedNames.insert(name)
        return name
    }

    func resolve(_ name: String) -> String {
        var n = name
        var hops = 0
        while let a = alias[n], hops < 1 << 20 { n = a; hops += 1 }
        return n
    }

    /// The constant value of `name`, converting an initializer on first use.
    func constant(_ name: String) throws -> OnnxConstant? {
        if let c = constants[name] { return c }
        guard let t = initializers[name] else { return nil }
        let c = try OnnxConstantFolder.constant(t, baseDirectory: baseDirectory)
        constants[name] = c
        return c
    }

    func isKnown(_ name: String) -> Bool { constants[name] != nil || initializers[name] != nil }

    func visit(_ n: OnnxNodeProto) throws {
        var n = n
        n.inputs = n.inputs.map { $0.isEmpty ? $0 : resolve($0) }
        if !(n.domain.isEmpty || n.domain == "ai.onnx") {
            return record(n, .unsupportedOp(op: "\(n.domain).\(n.opType)", node: n.name))
        }
        // Fold when every input is known now.
        if OnnxConstantFolder.foldable.contains(n.opType), n.inputs.allSatisfy({ $0.isEmpty || isKnown($0) }) {
            do {
                let inputs = try n.inputs.map { $0.isEmpty ? nil : try constant($0) }
                if let outs = try OnnxConstantFolder.evaluate(n, inputs: inputs, opset: opset, baseDirectory: baseDirectory) {
                    for (name, value) in zip(n.outputs, outs) where !name.isEmpty { constants[name] = value }
                    return
                }
            } catch CascadeSegError.invalidGraph(let message) {
                return record(n, .problem(op: n.opType, node: n.name, message: message))
            }
        }
        // Shape of a runtime tensor: a vector of symbols.
        if n.opType == "Shape", let x = n.input(0), !n.outputs.isEmpty, case .activation(let a)? = states[x] {
            var dims: [OnnxConstant.SymbolicDim] = [.known(1), a.channels.map { .known(Int64($0)) } ?? .dim(value: x, axis: 1)]
            dims += (2..<5).map { .dim(value: x, axis: $0) }
            var start = OnnxConstantFolder.attributeInt(n, "start", default: 0), end = OnnxConstantFolder.attributeInt(n, "end", default: 5)
            if start < 0 { start += 5 }
            if end < 0 { end += 5 }
            start = min(max(start, 0), 5); end = min(max(end, start), 5)
            let part = Array(dims[Int(start)..<Int(end)])
            constants[n.outputs[0]] = OnnxConstant(shape: [part.count], storage: .symbolic(part))
            return
        }
        try map(n)
    }

    // MARK: - Recording

    /// A placeholder for a node that cannot be converted; its outputs become opaque values so
    /// that the walk goes on and every problem is reported at once (if the node is live).
    func record(_ n: OnnxNodeProto, _ issue: Issue) {
        let runtimeInputs = n.inputs.filter { !$0.isEmpty && states[$0] != nil }
        let outputs = n.outputs.filter { !$0.isEmpty }
        let index = pending.count
        pending.append(Pending(node: Node(name: n.name, op: .identity, inputs: runtimeInputs, outputs: outputs), issue: issue))
        for o in outputs {
            producer[o] = index
            states[o] = .activation(Activation(channels: nil, stride: [1, 1, 1]))
        }
    }

    func problem(_ n: OnnxNodeProto, _ message: String) {
        record(n, .problem(op: n.opType, node: n.name, message: message))
    }

    /// Appends an engine node writing `node.outputs[0]`.
    func emit(_ node: Node, _ activation: Activation) {
        let index = pending.count
        pending.append(Pending(node: node, issue: nil))
        for o in node.outputs {
            producer[o] = index
            states[o] = .activation(activation)
        }
    }

    /// Registers a constant as a weight and returns its name. `value` names the ONNX constant
    /// when the weight is that constant unchanged (stored once however many nodes read it).
    func weight(_ c: OnnxConstant, value: String?, node: String, role: String, shape: [Int]? = nil) throws -> String {
        guard let data = c.floats else {
            throw CascadeSegError.invalidGraph("node '\(node)': the \(role) depends on runtime sizes")
        }
        let shape = shape ?? c.shape
        guard shape.count <= 8, shape.reduce(1, *) == data.count else {
            throw CascadeSegError.invalidGraph("node '\(node)': the \(role) has shape \(shape) with \(data.count) values")
        }
        if let bad = data.firstIndex(where: { !$0.isFinite }) {
            throw CascadeSegError.invalidGraph("node '\(node)': the \(role) holds \(data[bad]) at index \(bad) (weights must be finite)")
        }
        if let value, shape == c.shape, let existing = weightForValue[value] { return existing }
        let name: String
        if let value, shape == c.shape, initializers[value] != nil || constants[value] != nil, weights[value] == nil {
            name = value
            usedNames.insert(value)
        } else {
            name = uniqueValueName("\(node).\(role)")
        }
        weights[name] = Tensor(shape: shape, data: data)
        if let value, shape == c.shape { weightForValue[value] = name }
        return name
    }

    // MARK: - Finishing

    func finish(inputShape: [Dimension], inputChannels: Int) throws -> OnnxImportedGraph {
        var outputs: [String] = []
        var outputProblems: [String] = []
        for o in onnxGraph.outputs {
            let r = resolve(o.name)
            if isKnown(r) {
                outputProblems.append("graph output '\(o.name)' is a constant, not computed from the input")
                continue
            }
            guard states[r] != nil else {
                outputProblems.append("graph output '\(o.name)' is not computed by the graph")
                continue
            }
            materialize(r)
            if r == o.name {
                outputs.append(r)
            } else if let p = producer[r], r != inputName, !onnxGraph.outputs.contains(where: { $0.name == r }), !outputs.contains(r) {
                rename(r, to: o.name, producedBy: p)
                outputs.append(o.name)
            } else {
                emit(Node(name: uniqueNodeName("\(o.name).identity"), op: .identity, inputs: [r], outputs: [o.name]),
                     activation(r) ?? Activation(channels: nil, stride: [1, 1, 1]))
                outputs.append(o.name)
            }
        }

        // Liveness: only what the outputs need.
        var live = Set<Int>()
        var stack = outputs.compactMap { producer[$0] }
        while let i = stack.popLast() {
            guard live.insert(i).inserted else { continue }
            for input in pending[i].node.inputs where !input.isEmpty {
                if let p = producer[input] { stack.append(p) }
            }
        }
        let liveIndices = live.sorted()
        var unsupported: [String: [String]] = [:]
        var problems = outputProblems
        for i in liveIndices {
            switch pending[i].issue {
            case .unsupportedOp(let op, let node)?: unsupported[op, default: []].append(node)
            case .problem(let op, let node, let message)?:
                problems.append(message.hasPrefix("node '") ? message : "node '\(node)' (\(op)): \(message)")
            case nil: break
            }
        }
        if !unsupported.isEmpty || !problems.isEmpty {
            var lines: [String] = []
            if !unsupported.isEmpty {
                let list = unsupported.keys.sorted().map { op -> String in
                    let nodes = unsupported[op]!
                    let shown = nodes.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
                    return "\(op) (node\(nodes.count > 1 ? "s" : "") \(shown)\(nodes.count > 5 ? ", and \(nodes.count - 5) more" : ""))"
                }
                lines.append("unsupported ONNX operators: " + list.joined(separator: ", "))
            }
            lines += problems
            throw CascadeSegError.invalidGraph("cannot convert the ONNX graph:\n  " + lines.joined(separator: "\n  "))
        }

        let nodes = liveIndices.map { pending[$0].node }
        let referenced = Set(nodes.flatMap(\.inputs))
        let usedWeights = weights.filter { referenced.contains($0.key) }
        let dropped = pending.count - nodes.count
        if dropped > 0 { notes.append("dropped \(dropped) node(s) that no output depends on") }

        let multiple = options.sizeMultiple ?? sizeMultiple(nodes: nodes)
        var graph = Graph(name: options.graphName, inputs: [ValueInfo(name: inputName, shape: inputShape)],
                          outputs: outputs.map { ValueInfo(name: $0, shape: []) }, nodes: nodes, sizeMultiple: multiple)
        // Check the whole graph with the engine's own rules at a probe size.
        let order: [Node]
        do { order = try graph.validatedOrder(constants: Set(usedWeights.keys)) } catch {
            throw CascadeSegError.invalidGraph("the converted graph is invalid: \(Self.message(error))")
        }
        var probe: [Int] = [1, inputChannels]
        for i in 0..<3 {
            if case .fixed(let v) = inputShape[2 + i] { probe.append(v) } else { probe.append(max(1, (64 + multiple[i] - 1) / multiple[i]) * multiple[i]) }
        }
        let shapes: [String: [Int]]
        do {
            shapes = try ShapeInference.infer(graph: graph, order: order, inputShape: probe, constants: usedWeights.mapValues(\.shape))
        } catch {
            throw CascadeSegError.invalidGraph("the converted graph fails the engine's checks at input size \(probe): \(Self.message(error))")
        }
        graph.outputs = try outputs.map { name in
            guard let s = shapes[name] else { throw CascadeSegError.invalidGraph("output '\(name)' has no shape") }
            var dims: [Dimension] = [.fixed(1), .fixed(s[1])]
            let declared = onnxGraph.outputs.first { $0.name == name }?.shape
            for axis in 2..<5 {
                if s[axis] == probe[axis], case .symbol = inputShape[axis] { dims.append(inputShape[axis]) }
                else if case .value(let v)? = declared?.count == 5 ? declared?[axis] : nil { dims.append(.fixed(Int(v))) }
                else if case .param(let p)? = declared?.count == 5 ? declared?[axis] : nil, Self.isPlainSymbol(p) { dims.append(.symbol(p)) }
                else { dims.append(.symbol("\(["D", "H", "W"][axis - 2])_\(name)")) }
            }
            return ValueInfo(name: name, shape: dims)
        }
        return OnnxImportedGraph(graph: graph, weights: usedWeights, opset: opset, inputChannels: inputChannels,
                                 outputChannels: outputs.first.flatMap { shapes[$0]?[1] }, notes: notes)
    }

    static func message(_ error: Error) -> String {
        switch error as? CascadeSegError {
        case .invalidGraph(let m)?, .invalidInput(let m)?, .invalidModel(let m)?: return m
        default: return "\(error)"
        }
    }

    /// Renames value `old` (written by pending node `index`) to `new` in every node.
    func rename(_ old: String, to new: String, producedBy index: Int) {
        for i in pending.indices {
            pending[i].node.inputs = pending[i].node.inputs.map { $0 == old ? new : $0 }
            pending[i].node.outputs = pending[i].node.outputs.map { $0 == old ? new : $0 }
        }
        producer[new] = index
        producer[old] = nil
        states[new] = states[old]
    }

    /// A value in a pattern state read by something outside the pattern: the pattern's nodes
    /// become placeholders (a Reshape of an activation is not supported on its own).
    func materialize(_ name: String) {
        switch states[name] {
        case .groupReshaped(_, _, let origin)?:
            record(origin, .unsupportedOp(op: origin.opType, node: origin.name))
        case .channelsLast(_, _, let origin)?:
            record(origin, .unsupportedOp(op: origin.opType, node: origin.name))
        case .groupNormed(_, _, _, _, _, let origins)?, .channelsLastSoftmax(_, _, let origins)?:
            for origin in origins {
                if origin.opType == "Reshape" || origin.opType == "Transpose" {
                    record(origin, .unsupportedOp(op: origin.opType, node: origin.name))
                } else {
                    record(origin, .problem(op: origin.opType, node: origin.name,
                                            message: "its input is a \(origins[0].opType) of an activation, which is not supported"))
                }
            }
        default: break
        }
    }

    func activation(_ name: String) -> Activation? {
        if case .activation(let a)? = states[name] { return a }
        return nil
    }

    /// The largest cumulative stride of any value, per axis, rounded up to an integer.
    func sizeMultiple(nodes: [Node]) -> [Int] {
        var m: [Double] = [1, 1, 1]
        for node in nodes {
            for o in node.outputs {
                guard let a = activation(o) else { continue }
                for i in 0..<3 where a.stride[i].isFinite && a.stride[i] > 0 { m[i] = max(m[i], min(a.stride[i], 4096)) }
            }
        }
        return m.map { v in
            let r = v.rounded()
            return Int(min(abs(v - r) < 1e-6 ? r : v.rounded(.up), 4096))
        }
    }
}
