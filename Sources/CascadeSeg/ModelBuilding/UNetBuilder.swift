/// Builds nnU-Net-style 3-D U-Nets (PlainConvUNet: per stage two Conv 3x3x3 -> InstanceNorm ->
/// LeakyReLU blocks, stride-2 convs to go down, ConvTranspose k2 s2 to come back up, skip
/// concatenation, 1x1x1 head) with random He-initialised weights. Used for benchmarks, the demo
/// and tests whose point is speed or memory rather than what the network learned.
public enum UNetBuilder {
    public struct Configuration: Sendable {
        public var inputChannels = 1
        public var classes = 17
        public var features = [32, 64, 128, 256, 320]
        public var convsPerStage = 2
        public var seed: UInt64 = 1
        public init() {}
        public init(base: Int, stages: Int = 5, classes: Int = 17) {
            features = (0..<stages).map { min(base << $0, 320) }
            self.classes = classes
        }
        /// The spatial size multiple the network needs (its total stride).
        public var sizeMultiple: Int { 1 << (features.count - 1) }
    }

    public static func plainConvUNet(_ config: Configuration) -> (graph: Graph, weights: [String: Tensor]) {
        var rng = SplitMixRandom(seed: config.seed)
        var nodes: [Node] = []
        var weights: [String: Tensor] = [:]
        func random(_ shape: [Int], scale: Float) -> Tensor {
            Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in rng.nextSigned() * scale })
        }
        func convBlock(_ name: String, _ x: String, _ c: Int, _ k: Int, stride: Int) -> String {
            let fanIn = Float(c * 27)
            weights[name + ".w"] = random([k, c, 3, 3, 3], scale: (6 / fanIn).squareRoot())
            weights[name + ".b"] = random([k], scale: 0.1)
            weights[name + ".norm.scale"] = Tensor(shape: [k], data: (0..<k).map { _ in 1 + 0.1 * rng.nextSigned() })
            weights[name + ".norm.bias"] = random([k], scale: 0.1)
            nodes.append(Node(name: name + ".conv", op: .conv, inputs: [x, name + ".w", name + ".b"], outputs: [name + ".c"],
                              attributes: ["pads": .ints([1, 1, 1, 1, 1, 1]), "strides": .ints([stride, stride, stride])]))
            nodes.append(Node(name: name + ".norm", op: .instanceNormalization, inputs: [name + ".c", name + ".norm.scale", name + ".norm.bias"],
                              outputs: [name + ".n"], attributes: ["epsilon": .float(1e-5)]))
            nodes.append(Node(name: name + ".act", op: .leakyRelu, inputs: [name + ".n"], outputs: [name + ".a"], attributes: ["alpha": .float(0.01)]))
            return name + ".a"
        }
        var x = "image"
        var channels = config.inputChannels
        var skips: [(String, Int)] = []
        for (s, f) in config.features.enumerated() {
            for b in 0..<config.convsPerStage {
                x = convBlock("encoder.\(s).\(b)", x, channels, f, stride: s > 0 && b == 0 ? 2 : 1)
                channels = f
            }
            skips.append((x, f))
        }
        for s in stride(from: config.features.count - 2, through: 0, by: -1) {
            let (skip, f) = skips[s]
            let name = "decoder.\(s)"
            weights[name + ".up.w"] = random([channels, f, 2, 2, 2], scale: (6 / Float(channels * 8)).squareRoot())
            weights[name + ".up.b"] = random([f], scale: 0.1)
            nodes.append(Node(name: name + ".up", op: .convTranspose, inputs: [x, name + ".up.w", name + ".up.b"], outputs: [name + ".u"],
                              attributes: ["strides": .ints([2, 2, 2])]))
            nodes.append(Node(name: name + ".concat", op: .concat, inputs: [name + ".u", skip], outputs: [name + ".cat"], attributes: ["axis": .int(1)]))
            x = name + ".cat"
            channels = 2 * f
            for b in 0..<config.convsPerStage {
                x = convBlock("\(name).\(b)", x, channels, f, stride: 1)
                channels = f
            }
        }
        weights["head.w"] = random([config.classes, channels, 1, 1, 1], scale: (6 / Float(channels)).squareRoot())
        weights["head.b"] = random([config.classes], scale: 0.1)
        nodes.append(Node(name: "head", op: .conv, inputs: [x, "head.w", "head.b"], outputs: ["logits"]))
        let m = config.sizeMultiple
        let graph = Graph(name: "unet",
                          inputs: [ValueInfo(name: "image", shape: [.fixed(1), .fixed(config.inputChannels), .symbol("D"), .symbol("H"), .symbol("W")])],
                          outputs: [ValueInfo(name: "logits", shape: [.fixed(1), .fixed(config.classes), .symbol("D"), .symbol("H"), .symbol("W")])],
                          nodes: nodes, sizeMultiple: [m, m, m])
        return (graph, weights)
    }
}
