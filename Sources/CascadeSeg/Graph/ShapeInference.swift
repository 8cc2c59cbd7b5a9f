/// Computes the concrete shape of every value of a graph for one input shape.
public enum ShapeInference {
    /// `order` must be a validated execution order; `constants` maps weight names to shapes.
    public static func infer(graph: Graph, order: [Node], inputShape: [Int],
                             constants: [String: [Int]]) throws -> [String: [Int]] {
        try checkInput(graph: graph, shape: inputShape)
        var shapes = constants
        shapes[graph.input.name] = inputShape
        for node in order {
            let outs: [[Int]]
            do {
                outs = try outputShapes(node: node, shapes: shapes)
            } catch CascadeSegError.invalidInput(let message) {
                // Size errors of the parameter structs (an input smaller than a kernel, an
                // empty slice) do not know the node; name it here.
                throw CascadeSegError.invalidInput("node '\(node.name)' (\(node.op.rawValue)): \(message)")
            }
            for (name, shape) in zip(node.outputs, outs) { shapes[name] = shape }
        }
        return shapes
    }

    /// Checks a concrete input shape against the declared one and the size multiple.
    public static func checkInput(graph: Graph, shape: [Int]) throws {
        guard shape.count == 5, shape[0] == 1 else {
            throw CascadeSegError.invalidInput("input must be 1 x C x D x H x W, got \(shape)")
        }
        for (axis, dim) in graph.input.shape.enumerated() {
            if case .fixed(let n) = dim, n != shape[axis] {
                let what = axis == 1 ? "channels" : "dimension \(axis)"
                throw CascadeSegError.invalidInput("graph '\(graph.name)' expects \(n) \(what), input has \(shape[axis])")
            }
        }
        for i in 0..<3 where shape[2 + i] < 1 || shape[2 + i] % graph.sizeMultiple[i] != 0 {
            throw CascadeSegError.invalidInput(
                "spatial size \(Array(shape[2...])) must be a positive multiple of \(graph.sizeMultiple) for graph '\(graph.name)'")
        }
        guard checkedElementCount(shape, limit: 1 << 40) != nil else { throw CascadeSegError.invalidInput("input shape \(shape) is too large") }
    }

    static func outputShapes(node: Node, shapes: [String: [Int]]) throws -> [[Int]] {
        func fail(_ m: String) -> CascadeSegError { .invalidGraph("node '\(node.name)' (\(node.op.rawValue)): \(m)") }
        func shape(_ index: Int) throws -> [Int] {
            guard let name = node.input(index) else { throw fail("missing input \(index)") }
            guard let s = shapes[name] else { throw fail("shape of '\(name)' is unknown") }
            return s
        }
        func activation(_ index: Int = 0) throws -> [Int] {
            let s = try shape(index)
            guard s.count == 5, s[0] == 1 else { throw fail("input '\(node.inputs[index])' must be 1 x C x D x H x W, is \(s)") }
            return s
        }
        let x = node.op == .add || node.op == .mul ? try activation(shapes[node.inputs[0]]?.count == 5 ? 0 : 1) : try activation()
        let spatial = Array(x[2...])
        func expectOutputs(_ n: Int) throws { guard node.outputs.count == n else { throw fail("expects \(n) output(s)") } }
        try expectOutputs(1)

        switch node.op {
        case .conv, .convTranspose:
            let params = try ConvParameters(node: node, inputChannels: x[1], weightShape: try shape(1),
                                            biasShape: node.input(2) != nil ? try shape(2) : nil)
            return [[1, params.outChannels] + (try params.outputSpatial(spatial))]
        case .maxPool, .averagePool:
            return [[1, x[1]] + (try PoolParameters(node: node).outputSpatial(spatial))]
        case .instanceNormalization, .groupNormalization, .batchNormalization:
            let inputCount = node.op == .batchNormalization ? 5 : 3
            for i in 1..<inputCount {
                let count = try shape(i).reduce(1, *)
                guard count == x[1] else { throw fail("input \(i) has \(count) values, expected one per channel (\(x[1]))") }
            }
            if node.op == .groupNormalization {
                let groups = try node.int("num_groups")
                guard groups >= 1, x[1] % groups == 0 else { throw fail("num_groups \(groups) must divide channels \(x[1])") }
            }
            _ = try FusedActivation(node: node)
            return [x]
        case .relu, .leakyRelu, .sigmoid, .tanh, .identity:
            return [x]
        case .prelu:
            let slope = try shape(1)
            guard let b = Broadcast.classify(slope, against: x), b != .same || slope == x else {
                throw fail("slope of shape \(slope) does not broadcast per channel against \(x)")
            }
            return [x]
        case .add, .mul:
            let a = try shape(0), b = try shape(1)
            _ = try FusedActivation(node: node)
            // Either operand may be the small one (a weight times an activation, say).
            if a.count == 5, Broadcast.classify(b, against: a) != nil { return [a] }
            if b.count == 5, Broadcast.classify(a, against: b) != nil { return [b] }
            throw fail("operand shapes \(a) and \(b) do not broadcast (same shape, per channel or scalar)")
        case .concat:
            let axis = try node.int("axis", default: 1)
            guard axis == 1 || axis == -4 else { throw fail("only channel concatenation (axis 1) is supported") }
            var channels = 0
            for i in 0..<node.inputs.count {
                let s = try activation(i)
                guard Array(s[2...]) == spatial else { throw fail("inputs have different spatial sizes: \(x) and \(s)") }
                channels += s[1]
            }
            return [[1, channels] + spatial]
        case .resize:
            let params = try ResizeParameters(node: node)
            var like: [Int]? = nil
            if case .like = params.target { like = try shape(1) }
            return [[1, x[1]] + (try params.outputSpatial(spatial, likeShape: like))]
        case .softmax:
            let axis = try node.int("axis", default: 1)
            guard axis == 1 || axis == -4 else { throw fail("only softmax over channels (axis 1) is supported") }
            return [x]
        case .argMax:
            let axis = try node.int("axis", default: 1)
            guard axis == 1 || axis == -4 else { throw fail("only argmax over channels (axis 1) is supported") }
            guard try node.int("keepdims", default: 1) == 1 else { throw fail("keepdims must be 1") }
            return [[1, 1] + spatial]
        case .pad:
            return [[1, x[1]] + (try PadParameters(node: node).outputSpatial(spatial))]
        case .slice:
            return [try SliceParameters(node: node).resolve(x).shape]
        }
    }
}
