/// A dimension of a declared tensor shape: a fixed size or a symbol (such as `D`) bound when
/// the graph runs on a concrete input.
public enum Dimension: Codable, Equatable, Sendable, CustomStringConvertible {
    case fixed(Int)
    case symbol(String)

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self) { self = .fixed(n) } else { self = .symbol(try c.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .fixed(let n): try c.encode(n)
        case .symbol(let s): try c.encode(s)
        }
    }

    public var description: String {
        switch self { case .fixed(let n): return String(n); case .symbol(let s): return s }
    }
}

/// A named graph input or output with its declared (possibly symbolic) shape.
public struct ValueInfo: Codable, Equatable, Sendable {
    public var name: String
    public var shape: [Dimension]
    public init(name: String, shape: [Dimension]) { self.name = name; self.shape = shape }
}

/// A network: one activation input (1 x C x D x H x W), nodes, and its outputs. Weights are
/// referenced by name and live in the model file's tensor table.
public struct Graph: Codable, Equatable, Sendable {
    public var name: String
    public var inputs: [ValueInfo]
    public var outputs: [ValueInfo]
    public var nodes: [Node]
    /// Each spatial input size must be a multiple of these (the network's total stride).
    public var sizeMultiple: [Int]

    public init(name: String, inputs: [ValueInfo], outputs: [ValueInfo], nodes: [Node], sizeMultiple: [Int] = [1, 1, 1]) {
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.nodes = nodes
        self.sizeMultiple = sizeMultiple
    }

    enum CodingKeys: String, CodingKey { case name, inputs, outputs, nodes, sizeMultiple = "size_multiple" }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        inputs = try c.decode([ValueInfo].self, forKey: .inputs)
        outputs = try c.decode([ValueInfo].self, forKey: .outputs)
        nodes = try c.decode([Node].self, forKey: .nodes)
        sizeMultiple = try c.decodeIfPresent([Int].self, forKey: .sizeMultiple) ?? [1, 1, 1]
    }

    /// The single activation input, whose shape is 1 x C x D x H x W.
    public var input: ValueInfo { inputs[0] }

    /// Number of input channels, when the declared shape fixes it.
    public var inputChannels: Int? {
        if inputs.first?.shape.count == 5, case .fixed(let c) = inputs[0].shape[1] { return c }
        return nil
    }

    /// Checks structure (one input, names defined once, no cycles, every read defined) and
    /// returns the nodes in an executable order. `constants` are the weight names.
    public func validatedOrder(constants: Set<String>) throws -> [Node] {
        guard inputs.count == 1 else { throw CascadeSegError.invalidGraph("graph '\(name)' must have exactly one input, has \(inputs.count)") }
        guard !outputs.isEmpty else { throw CascadeSegError.invalidGraph("graph '\(name)' has no outputs") }
        guard inputs[0].shape.count == 5 else { throw CascadeSegError.invalidGraph("graph '\(name)': input must be 5-D (N, C, D, H, W)") }
        guard sizeMultiple.count == 3, sizeMultiple.allSatisfy({ $0 >= 1 && $0 <= 4096 }) else {
            throw CascadeSegError.invalidGraph("graph '\(name)': size_multiple must be three integers in 1...4096")
        }
        var producer: [String: Int] = [:]
        for (i, node) in nodes.enumerated() {
            guard !node.outputs.isEmpty else { throw CascadeSegError.invalidGraph("node '\(node.name)' has no outputs") }
            for out in node.outputs {
                guard !out.isEmpty else { throw CascadeSegError.invalidGraph("node '\(node.name)' has an empty output name") }
                guard producer[out] == nil, out != inputs[0].name, !constants.contains(out) else {
                    throw CascadeSegError.invalidGraph("value '\(out)' is defined more than once")
                }
                producer[out] = i
            }
        }
        for node in nodes {
            for input in node.inputs where !input.isEmpty {
                guard producer[input] != nil || input == inputs[0].name || constants.contains(input) else {
                    throw CascadeSegError.invalidGraph("node '\(node.name)' reads '\(input)', which nothing defines")
                }
            }
        }
        for output in outputs where producer[output.name] == nil && output.name != inputs[0].name {
            throw CascadeSegError.invalidGraph("graph output '\(output.name)' is not produced by any node")
        }
        // Kahn's algorithm, stable with respect to the stored order.
        var consumers: [Int: [Int]] = [:]
        for (i, node) in nodes.enumerated() {
            for p in Set(node.inputs.compactMap({ producer[$0] })) { consumers[p, default: []].append(i) }
        }
        var pending = nodes.map { node in Set(node.inputs.compactMap { producer[$0] }).count }
        var ready = (0..<nodes.count).filter { pending[$0] == 0 }
        var order: [Node] = []
        var cursor = 0
        while cursor < ready.count {
            let i = ready[cursor]; cursor += 1
            order.append(nodes[i])
            for c in consumers[i] ?? [] {
                pending[c] -= 1
                if pending[c] == 0 { ready.append(c) }
            }
        }
        guard order.count == nodes.count else { throw CascadeSegError.invalidGraph("graph '\(name)' contains a cycle") }
        return order
    }
}
