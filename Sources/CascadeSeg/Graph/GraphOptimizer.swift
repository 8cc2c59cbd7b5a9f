/// Load-time rewrites that keep a graph's results but do less work on the device:
/// BatchNormalization folded into the convolution before it, and activations fused into the
/// kernel that produces their input. Device-independent.
public enum GraphOptimizer {
    public static func optimize(_ graph: Graph, weights: [String: Tensor]) throws -> (Graph, [String: Tensor]) {
        var graph = graph
        var weights = weights
        try foldBatchNorms(&graph, &weights)
        fuseActivations(&graph)
        dropIdentities(&graph)
        return (graph, weights)
    }

    static func consumers(_ graph: Graph) -> [String: Int] {
        var count: [String: Int] = [:]
        for node in graph.nodes { for input in node.inputs where !input.isEmpty { count[input, default: 0] += 1 } }
        for output in graph.outputs { count[output.name, default: 0] += 1 }
        return count
    }

    /// Conv -> BatchNormalization, where the conv output feeds only the BN, becomes one Conv
    /// with scaled weights: w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta.
    static func foldBatchNorms(_ graph: inout Graph, _ weights: inout [String: Tensor]) throws {
        let uses = consumers(graph)
        var producerIndex: [String: Int] = [:]
        for (i, node) in graph.nodes.enumerated() { for o in node.outputs { producerIndex[o] = i } }
        var removed = Set<Int>()
        for (bnIndex, bn) in graph.nodes.enumerated() where bn.op == .batchNormalization {
            guard let x = bn.input(0), let convIndex = producerIndex[x], uses[x] == 1 else { continue }
            let conv = graph.nodes[convIndex]
            guard conv.op == .conv, conv.attributes["activation"] == nil,
                  let wName = conv.input(1), let w = weights[wName],
                  let gamma = bn.input(1).flatMap({ weights[$0] }), let beta = bn.input(2).flatMap({ weights[$0] }),
                  let mean = bn.input(3).flatMap({ weights[$0] }), let variance = bn.input(4).flatMap({ weights[$0] }) else { continue }
            guard w.shape.count == 5, w.shape[0] >= 1 else { continue }  // shape errors are reported when the conv is lowered
            let k = w.shape[0]
            guard gamma.count == k, beta.count == k, mean.count == k, variance.count == k else {
                throw CascadeSegError.invalidGraph("node '\(bn.name)': BatchNormalization parameters do not match \(k) channels")
            }
            let epsilon = try bn.float("epsilon", default: 1e-5)
            let perOutput = w.count / k
            var newW = w.data
            var newB = [Float](repeating: 0, count: k)
            let oldB = conv.input(2).flatMap { weights[$0] }?.data ?? [Float](repeating: 0, count: k)
            for o in 0..<k {
                let s = Double(gamma.data[o]) / (Double(variance.data[o]) + epsilon).squareRoot()
                for j in 0..<perOutput { newW[o * perOutput + j] = Float(Double(w.data[o * perOutput + j]) * s) }
                newB[o] = Float((Double(oldB[o]) - Double(mean.data[o])) * s + Double(beta.data[o]))
            }
            let wFolded = conv.name + ".folded_weight", bFolded = conv.name + ".folded_bias"
            weights[wFolded] = Tensor(shape: w.shape, data: newW)
            weights[bFolded] = Tensor(shape: [k], data: newB)
            var fused = conv
            fused.inputs = [conv.inputs[0], wFolded, bFolded]
            fused.outputs = bn.outputs
            graph.nodes[convIndex] = fused
            removed.insert(bnIndex)
        }
        graph.nodes = graph.nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    }

    static let fusableProducers: Set<OpType> = [.conv, .convTranspose, .instanceNormalization, .groupNormalization, .add]

    /// Producer -> Relu / LeakyRelu / Sigmoid / Tanh, where the producer output has no other
    /// reader, becomes the producer with an `activation` attribute.
    static func fuseActivations(_ graph: inout Graph) {
        let uses = consumers(graph)
        var producerIndex: [String: Int] = [:]
        for (i, node) in graph.nodes.enumerated() { for o in node.outputs { producerIndex[o] = i } }
        var removed = Set<Int>()
        for (i, node) in graph.nodes.enumerated() {
            let activation: (String, Double?)
            switch node.op {
            case .relu: activation = ("relu", nil)
            case .leakyRelu: activation = ("leaky_relu", (try? node.float("alpha", default: 0.01)) ?? 0.01)
            case .sigmoid: activation = ("sigmoid", nil)
            case .tanh: activation = ("tanh", nil)
            default: continue
            }
            guard let x = node.input(0), uses[x] == 1, let p = producerIndex[x], !removed.contains(p) else { continue }
            var producer = graph.nodes[p]
            guard fusableProducers.contains(producer.op), producer.attributes["activation"] == nil else { continue }
            producer.attributes["activation"] = .string(activation.0)
            if let alpha = activation.1 { producer.attributes["activation_alpha"] = .float(alpha) }
            producer.outputs = node.outputs
            graph.nodes[p] = producer
            removed.insert(i)
            // The fused node now produces this node's output; later fusions must see that.
            for o in node.outputs { producerIndex[o] = p }
        }
        graph.nodes = graph.nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    }

    /// Identity nodes become renames of their input (unless they produce a graph output).
    static func dropIdentities(_ graph: inout Graph) {
        let outputs = Set(graph.outputs.map(\.name))
        var rename: [String: String] = [:]
        graph.nodes.removeAll { node in
            guard node.op == .identity, let x = node.input(0), !outputs.contains(node.outputs[0]) else { return false }
            rename[node.outputs[0]] = x
            return true
        }
        guard !rename.isEmpty else { return }
        func resolve(_ name: String) -> String {
            var n = name
            while let r = rename[n] { n = r }
            return n
        }
        for i in graph.nodes.indices {
            graph.nodes[i].inputs = graph.nodes[i].inputs.map(resolve)
        }
    }
}
