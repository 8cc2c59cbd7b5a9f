import XCTest
@testable import CascadeSeg

/// Every op, every kernel path, against the Double reference interpreter
/// (Support/ReferenceInterpreter.swift), on seeded random data. Sizes are small and odd on
/// purpose: widths and channel counts that are not multiples of the kernels' blocks (the CPU
/// conv kernel computes 16 outputs along x and 4 output channels per work-item).
final class OpTests: XCTestCase {
    // MARK: - Harness

    static let context: ComputeContext = {
        do { return try ComputeContext.shared(for: try ComputeDevice.select("cpu")) } catch { fatalError("no OpenCL CPU device: \(error)") }
    }()

    /// A graph reading `x` (1 x channels x D x H x W, symbolic spatial sizes) and producing `outputs`.
    func graph(_ nodes: [Node], channels: Int, outputs: [String] = ["y"], fixedSpatial: [Int]? = nil) -> Graph {
        let spatial: [CascadeSeg.Dimension] = fixedSpatial.map { $0.map { CascadeSeg.Dimension.fixed($0) } } ?? [.symbol("D"), .symbol("H"), .symbol("W")]
        return Graph(name: "test", inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(channels)] + spatial)],
                     outputs: outputs.map { ValueInfo(name: $0, shape: []) }, nodes: nodes)
    }

    /// Compares a device result with the reference: relative L2 error <= `relL2` and max
    /// absolute error <= `maxAbs` times max(1, largest reference magnitude).
    func assertClose(_ got: Tensor, _ ref: RefTensor, _ label: String, relL2: Double = 1e-5, maxAbs: Double = 1e-4,
                     file: StaticString = #filePath, line: UInt = #line) {
        guard got.shape == ref.shape else {
            XCTFail("\(label): shape \(got.shape), reference \(ref.shape)", file: file, line: line)
            return
        }
        var diff2 = 0.0, ref2 = 0.0, worst = 0.0, worstIndex = 0, scale = 1.0
        for i in 0..<ref.count {
            let g = Double(got.data[i]), r = ref.data[i]
            let d = g.isFinite ? abs(g - r) : .infinity
            diff2 += d * d
            ref2 += r * r
            scale = max(scale, abs(r))
            if d > worst || !d.isFinite { worst = d; worstIndex = i }
        }
        let rel = ref2 > 0 ? (diff2 / ref2).squareRoot() : diff2.squareRoot()
        if !(rel <= relL2) || !(worst <= maxAbs * scale) {
            XCTFail("\(label): relative L2 error \(rel) (limit \(relL2)), max abs error \(worst) (limit \(maxAbs * scale)) at flat index \(worstIndex): got \(got.data[worstIndex]), reference \(ref.data[worstIndex])",
                    file: file, line: line)
        }
    }

    /// Runs `graph` on the OpenCL CPU device and on the reference interpreter and compares
    /// every output. Also checks that the measured device peak equals the plan.
    @discardableResult
    func check(_ graph: Graph, weights: [String: Tensor] = [:], input: Tensor, _ label: String,
               relL2: Double = 1e-5, maxAbs: Double = 1e-4, file: StaticString = #filePath, line: UInt = #line) throws -> Network {
        // Device memory other live networks hold (the peak is context-wide; the plan is this network's).
        let baseline = Self.context.memory.liveBytes
        let network = try Network(graph: graph, weights: weights, context: Self.context)
        let result = try network.run(input)
        let reference = try ReferenceInterpreter.run(graph: graph, weights: weights, input: input)
        for output in graph.outputs {
            guard let got = result.outputs[output.name], let ref = reference[output.name] else {
                XCTFail("\(label): output '\(output.name)' missing", file: file, line: line)
                continue
            }
            assertClose(got, ref, "\(label) [\(output.name)]", relL2: relL2, maxAbs: maxAbs, file: file, line: line)
        }
        XCTAssertEqual(result.peakDeviceBytes - baseline, result.plannedPeakBytes, "\(label): measured peak differs from the plan", file: file, line: line)
        return network
    }

    /// One node reading `x` (and weights), writing `y`.
    func checkSingle(_ op: OpType, channels: Int, size: [Int], weights: [String: Tensor] = [:], weightInputs: [String] = [],
                     attributes: [String: AttributeValue] = [:], seed: UInt64, range: ClosedRange<Double> = -1...1,
                     _ label: String, relL2: Double = 1e-5, maxAbs: Double = 1e-4,
                     file: StaticString = #filePath, line: UInt = #line) throws {
        var rng = SeededRandom(seed: seed)
        let x = rng.tensor([1, channels] + size, in: range)
        let g = graph([Node(name: "op", op: op, inputs: ["x"] + weightInputs, outputs: ["y"], attributes: attributes)], channels: channels)
        try check(g, weights: weights, input: x, label, relL2: relL2, maxAbs: maxAbs, file: file, line: line)
    }

    struct ConvCase {
        var c: Int
        var k: Int
        var kernel: [Int]
        var size: [Int]
        var attributes: [String: AttributeValue] = [:]
        var group = 1
        var bias = true
    }

    /// A single Conv (or ConvTranspose) with random weights.
    func checkConv(_ cases: [ConvCase], transposed: Bool = false, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        var rng = SeededRandom(seed: seed)
        for (n, cc) in cases.enumerated() {
            let wShape = transposed ? [cc.c, cc.k / cc.group] + cc.kernel : [cc.k, cc.c / cc.group] + cc.kernel
            var weights = ["w": rng.tensor(wShape)]
            var inputs = ["x", "w"]
            if cc.bias { weights["b"] = rng.tensor([cc.k]); inputs.append("b") }
            var attributes = cc.attributes
            if cc.group != 1 { attributes["group"] = .int(cc.group) }
            let g = graph([Node(name: "conv", op: transposed ? .convTranspose : .conv, inputs: inputs, outputs: ["y"], attributes: attributes)],
                          channels: cc.c)
            let label = "case \(n): C=\(cc.c) K=\(cc.k) kernel \(cc.kernel) size \(cc.size) group \(cc.group) \(cc.attributes)"
            try check(g, weights: weights, input: rng.tensor([1, cc.c] + cc.size), label, file: file, line: line)
        }
    }

    // MARK: - Conv

    func testConvStride1AllKernelSizes() throws {
        let pads1: [String: AttributeValue] = ["pads": .ints([1, 1, 1, 1, 1, 1])]
        try checkConv([
            ConvCase(c: 16, k: 9, kernel: [1, 1, 1], size: [3, 4, 33]),
            ConvCase(c: 1, k: 1, kernel: [1, 1, 1], size: [2, 3, 1]),
            ConvCase(c: 3, k: 5, kernel: [3, 3, 3], size: [5, 7, 17], attributes: pads1),
            ConvCase(c: 1, k: 1, kernel: [3, 3, 3], size: [3, 3, 1], attributes: pads1),
            ConvCase(c: 5, k: 16, kernel: [3, 3, 3], size: [4, 5, 5], attributes: pads1, bias: false),
            ConvCase(c: 9, k: 3, kernel: [3, 3, 3], size: [3, 4, 16], attributes: pads1),
            ConvCase(c: 2, k: 4, kernel: [3, 3, 3], size: [3, 3, 32], attributes: pads1),
            ConvCase(c: 5, k: 3, kernel: [5, 5, 5], size: [4, 6, 17], attributes: ["pads": .ints([2, 2, 2, 2, 2, 2])]),
            ConvCase(c: 2, k: 5, kernel: [7, 7, 7], size: [3, 4, 33], attributes: ["pads": .ints([3, 3, 3, 3, 3, 3])]),
            ConvCase(c: 3, k: 2, kernel: [3, 3, 3], size: [5, 6, 21]),                     // no padding
            ConvCase(c: 9, k: 4, kernel: [1, 3, 3], size: [3, 5, 19], attributes: ["pads": .ints([0, 1, 1, 0, 1, 1])]),
            ConvCase(c: 3, k: 5, kernel: [3, 1, 7], size: [4, 3, 18], attributes: ["pads": .ints([1, 0, 3, 1, 0, 3])]),
            ConvCase(c: 4, k: 2, kernel: [1, 1, 9], size: [2, 3, 20], attributes: ["pads": .ints([0, 0, 4, 0, 0, 4])]),  // too wide for conv3d_s1
        ], seed: 1)
    }

    func testConvAsymmetricPads() throws {
        try checkConv([
            ConvCase(c: 3, k: 5, kernel: [3, 3, 3], size: [4, 5, 17], attributes: ["pads": .ints([0, 1, 2, 1, 0, 0])]),
            ConvCase(c: 2, k: 3, kernel: [3, 3, 3], size: [3, 4, 5], attributes: ["pads": .ints([2, 0, 1, 0, 2, 3])]),
            ConvCase(c: 1, k: 4, kernel: [5, 5, 5], size: [3, 3, 14], attributes: ["pads": .ints([1, 3, 0, 3, 1, 4])]),
            ConvCase(c: 3, k: 5, kernel: [3, 3, 3], size: [5, 6, 17],
                     attributes: ["pads": .ints([0, 1, 2, 2, 1, 0]), "strides": .ints([2, 2, 2])]),
        ], seed: 2)
    }

    func testConvStridesAndDilations() throws {
        try checkConv([
            ConvCase(c: 3, k: 5, kernel: [3, 3, 3], size: [7, 9, 17], attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            ConvCase(c: 4, k: 9, kernel: [2, 2, 2], size: [4, 6, 10], attributes: ["strides": .ints([2, 2, 2])]),
            ConvCase(c: 1, k: 1, kernel: [3, 3, 3], size: [3, 3, 1], attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            ConvCase(c: 2, k: 3, kernel: [1, 3, 3], size: [3, 5, 33], attributes: ["strides": .ints([1, 2, 2]), "pads": .ints([0, 1, 1, 0, 1, 1])]),
            ConvCase(c: 16, k: 16, kernel: [3, 3, 3], size: [5, 5, 67], attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            ConvCase(c: 3, k: 2, kernel: [3, 3, 3], size: [7, 8, 19], attributes: ["strides": .ints([3, 1, 3]), "pads": .ints([1, 0, 2, 0, 1, 1])]),
            // Stride 2 along x with every kernel width the blocked kernel compiles for, and z/y strides of 3.
            ConvCase(c: 16, k: 9, kernel: [1, 1, 1], size: [3, 4, 33], attributes: ["strides": .ints([2, 2, 2])]),
            ConvCase(c: 1, k: 1, kernel: [1, 1, 1], size: [1, 1, 1], attributes: ["strides": .ints([2, 2, 2])]),
            ConvCase(c: 3, k: 5, kernel: [5, 5, 5], size: [5, 6, 17], attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([2, 2, 2, 2, 2, 2])]),
            ConvCase(c: 2, k: 3, kernel: [7, 7, 7], size: [3, 4, 33], attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([3, 3, 3, 3, 3, 3])]),
            ConvCase(c: 5, k: 4, kernel: [1, 3, 3], size: [7, 8, 18], attributes: ["strides": .ints([3, 3, 2]), "pads": .ints([0, 1, 1, 0, 0, 1])]),
            ConvCase(c: 2, k: 5, kernel: [3, 3, 3], size: [7, 8, 9], attributes: ["strides": .ints([3, 2, 1]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            ConvCase(c: 3, k: 4, kernel: [3, 3, 4], size: [4, 5, 16], attributes: ["strides": .ints([1, 1, 2]), "pads": .ints([1, 1, 1, 1, 1, 2])]),
            ConvCase(c: 3, k: 5, kernel: [3, 3, 3], size: [5, 6, 17], attributes: ["dilations": .ints([2, 2, 2]), "pads": .ints([2, 2, 2, 2, 2, 2])]),
            ConvCase(c: 2, k: 3, kernel: [3, 3, 3], size: [7, 7, 20], attributes: ["dilations": .ints([1, 2, 3])], bias: false),
            ConvCase(c: 5, k: 4, kernel: [3, 3, 3], size: [6, 7, 18],
                     attributes: ["dilations": .ints([2, 2, 2]), "strides": .ints([2, 2, 2]), "pads": .ints([2, 1, 2, 2, 1, 2])]),
        ], seed: 3)
    }

    func testConvGroupsAndDepthwise() throws {
        let pads1: [String: AttributeValue] = ["pads": .ints([1, 1, 1, 1, 1, 1])]
        try checkConv([
            ConvCase(c: 4, k: 6, kernel: [3, 3, 3], size: [3, 5, 17], attributes: pads1, group: 2),
            ConvCase(c: 6, k: 2, kernel: [1, 1, 1], size: [2, 3, 5], group: 2),
            ConvCase(c: 16, k: 16, kernel: [3, 3, 3], size: [3, 4, 9], attributes: pads1, group: 4),
            ConvCase(c: 5, k: 5, kernel: [3, 3, 3], size: [4, 5, 33], attributes: pads1, group: 5),  // depthwise
            ConvCase(c: 1, k: 1, kernel: [3, 3, 3], size: [3, 3, 3], attributes: pads1, group: 1),
            ConvCase(c: 3, k: 6, kernel: [3, 3, 3], size: [3, 4, 17], attributes: pads1, group: 3, bias: false),  // depth multiplier 2
            ConvCase(c: 9, k: 9, kernel: [3, 3, 3], size: [5, 6, 17],
                     attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1])], group: 9),
            ConvCase(c: 4, k: 4, kernel: [5, 5, 5], size: [4, 4, 6],
                     attributes: ["dilations": .ints([2, 1, 1]), "pads": .ints([4, 2, 0, 4, 2, 4])], group: 4),
        ], seed: 4)
    }

    func testConvTranspose() throws {
        let k2s2: [String: AttributeValue] = ["strides": .ints([2, 2, 2])]
        try checkConv([
            ConvCase(c: 5, k: 3, kernel: [2, 2, 2], size: [2, 3, 9], attributes: k2s2),
            ConvCase(c: 16, k: 9, kernel: [2, 2, 2], size: [2, 2, 17], attributes: k2s2),
            ConvCase(c: 1, k: 1, kernel: [2, 2, 2], size: [1, 1, 1], attributes: k2s2),
            ConvCase(c: 3, k: 16, kernel: [2, 2, 2], size: [2, 3, 16], attributes: k2s2, bias: false),
            ConvCase(c: 3, k: 5, kernel: [3, 3, 3], size: [3, 4, 9],
                     attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1]), "output_padding": .ints([1, 1, 1])]),
            ConvCase(c: 2, k: 3, kernel: [3, 3, 3], size: [2, 3, 17],
                     attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1]), "output_padding": .ints([1, 0, 1])]),
            ConvCase(c: 4, k: 2, kernel: [2, 2, 2], size: [2, 3, 5],
                     attributes: ["strides": .ints([2, 2, 2]), "output_padding": .ints([1, 1, 1])]),     // k2s2 shape, general kernel
            ConvCase(c: 2, k: 5, kernel: [1, 2, 2], size: [3, 3, 7], attributes: ["strides": .ints([1, 2, 2])]),
            ConvCase(c: 3, k: 2, kernel: [4, 4, 4], size: [2, 3, 5], attributes: ["strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            ConvCase(c: 2, k: 3, kernel: [3, 3, 3], size: [3, 4, 6], attributes: ["dilations": .ints([2, 2, 1]), "pads": .ints([0, 1, 2, 2, 1, 0])]),
            ConvCase(c: 3, k: 4, kernel: [3, 3, 3], size: [2, 3, 4],
                     attributes: ["strides": .ints([3, 2, 1]), "pads": .ints([2, 0, 1, 1, 2, 0]), "output_padding": .ints([2, 1, 0])]),
        ], transposed: true, seed: 5)
    }

    func testFusedActivationsOnEveryConvPath() throws {
        let pads1: AttributeValue = .ints([1, 1, 1, 1, 1, 1])
        let activations: [[String: AttributeValue]] = [
            ["activation": .string("relu")],
            ["activation": .string("leaky_relu"), "activation_alpha": .float(0.2)],
            ["activation": .string("leaky_relu")],
            ["activation": .string("sigmoid")],
            ["activation": .string("tanh")],
        ]
        for (i, act) in activations.enumerated() {
            func with(_ a: [String: AttributeValue]) -> [String: AttributeValue] { a.merging(act) { $1 } }
            try checkConv([
                ConvCase(c: 3, k: 5, kernel: [3, 3, 3], size: [3, 4, 17], attributes: with(["pads": pads1])),                  // conv3d_s1
                ConvCase(c: 2, k: 3, kernel: [3, 3, 3], size: [5, 5, 9], attributes: with(["pads": pads1, "strides": .ints([2, 2, 2])])),  // blocked, stride 2
                ConvCase(c: 2, k: 3, kernel: [3, 3, 3], size: [5, 5, 9], attributes: with(["pads": .ints([2, 2, 2, 2, 2, 2]), "dilations": .ints([2, 2, 2])])),  // general
                ConvCase(c: 3, k: 3, kernel: [3, 3, 3], size: [3, 3, 5], attributes: with(["pads": pads1]), group: 3),         // depthwise
            ], seed: 60 + UInt64(i))
            try checkConv([
                ConvCase(c: 3, k: 5, kernel: [2, 2, 2], size: [2, 3, 9], attributes: with(["strides": .ints([2, 2, 2])])),    // k2s2
                ConvCase(c: 2, k: 3, kernel: [3, 3, 3], size: [2, 3, 5],
                         attributes: with(["strides": .ints([2, 2, 2]), "pads": pads1, "output_padding": .ints([1, 1, 1])])),  // general
            ], transposed: true, seed: 70 + UInt64(i))
        }
    }

    // MARK: - Pooling

    func testPooling() throws {
        struct Case { var op: OpType; var c: Int; var size: [Int]; var attributes: [String: AttributeValue] }
        let cases: [Case] = [
            Case(op: .maxPool, c: 3, size: [4, 6, 10], attributes: ["kernel_shape": .ints([2, 2, 2]), "strides": .ints([2, 2, 2])]),
            Case(op: .maxPool, c: 2, size: [5, 7, 11], attributes: ["kernel_shape": .ints([3, 3, 3]), "strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            Case(op: .maxPool, c: 1, size: [5, 7, 9], attributes: ["kernel_shape": .ints([2, 2, 2]), "strides": .ints([2, 2, 2]), "ceil_mode": .int(1)]),
            Case(op: .maxPool, c: 2, size: [6, 7, 10], attributes: ["kernel_shape": .ints([3, 3, 3]), "strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1]), "ceil_mode": .int(1)]),
            Case(op: .maxPool, c: 3, size: [5, 6, 17], attributes: ["kernel_shape": .ints([3, 3, 3]), "dilations": .ints([2, 2, 2]), "pads": .ints([2, 2, 2, 2, 2, 2])]),
            Case(op: .maxPool, c: 2, size: [4, 5, 9], attributes: ["kernel_shape": .ints([1, 3, 2]), "strides": .ints([1, 2, 3]), "pads": .ints([0, 1, 1, 0, 2, 0])]),
            Case(op: .averagePool, c: 3, size: [4, 6, 10], attributes: ["kernel_shape": .ints([2, 2, 2]), "strides": .ints([2, 2, 2])]),
            Case(op: .averagePool, c: 2, size: [5, 7, 11], attributes: ["kernel_shape": .ints([3, 3, 3]), "strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            Case(op: .averagePool, c: 2, size: [5, 7, 11], attributes: ["kernel_shape": .ints([3, 3, 3]), "strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1]), "count_include_pad": .int(1)]),
            Case(op: .averagePool, c: 1, size: [5, 7, 9], attributes: ["kernel_shape": .ints([2, 2, 2]), "strides": .ints([2, 2, 2]), "ceil_mode": .int(1)]),
            Case(op: .averagePool, c: 2, size: [6, 8, 10], attributes: ["kernel_shape": .ints([3, 3, 3]), "strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1]), "ceil_mode": .int(1), "count_include_pad": .int(1)]),
            Case(op: .averagePool, c: 2, size: [6, 8, 10], attributes: ["kernel_shape": .ints([3, 3, 3]), "strides": .ints([2, 2, 2]), "pads": .ints([1, 1, 1, 1, 1, 1]), "ceil_mode": .int(1)]),
            Case(op: .averagePool, c: 3, size: [4, 5, 7], attributes: ["kernel_shape": .ints([3, 3, 3]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            Case(op: .averagePool, c: 2, size: [4, 5, 7], attributes: ["kernel_shape": .ints([3, 3, 3]), "pads": .ints([0, 1, 2, 2, 0, 1]), "count_include_pad": .int(1)]),
            Case(op: .averagePool, c: 2, size: [4, 5, 7], attributes: ["kernel_shape": .ints([3, 3, 3]), "pads": .ints([0, 1, 2, 2, 0, 1])]),
        ]
        for (i, c) in cases.enumerated() {
            try checkSingle(c.op, channels: c.c, size: c.size, attributes: c.attributes, seed: 100 + UInt64(i),
                            "case \(i): \(c.op.rawValue) size \(c.size) \(c.attributes)")
        }
    }

    // MARK: - Normalization

    func testInstanceAndGroupNormalization() throws {
        var rng = SeededRandom(seed: 7)
        struct Case { var op: OpType; var c: Int; var size: [Int]; var attributes: [String: AttributeValue] }
        let cases: [Case] = [
            Case(op: .instanceNormalization, c: 5, size: [4, 5, 17], attributes: [:]),
            Case(op: .instanceNormalization, c: 1, size: [3, 3, 1], attributes: ["epsilon": .float(1e-3)]),
            Case(op: .instanceNormalization, c: 1, size: [1, 1, 1], attributes: [:]),
            Case(op: .instanceNormalization, c: 16, size: [3, 4, 5], attributes: ["activation": .string("leaky_relu"), "activation_alpha": .float(0.01)]),
            Case(op: .instanceNormalization, c: 3, size: [5, 6, 33], attributes: ["activation": .string("relu")]),
            Case(op: .instanceNormalization, c: 3, size: [2, 3, 4], attributes: ["activation": .string("sigmoid")]),
            Case(op: .instanceNormalization, c: 3, size: [2, 3, 4], attributes: ["activation": .string("tanh")]),
            Case(op: .groupNormalization, c: 6, size: [3, 4, 17], attributes: ["num_groups": .int(3)]),
            Case(op: .groupNormalization, c: 6, size: [3, 4, 5], attributes: ["num_groups": .int(1), "activation": .string("leaky_relu"), "activation_alpha": .float(0.2)]),
            Case(op: .groupNormalization, c: 5, size: [3, 4, 5], attributes: ["num_groups": .int(5)]),
            Case(op: .groupNormalization, c: 16, size: [2, 3, 9], attributes: ["num_groups": .int(4), "epsilon": .float(1e-2), "activation": .string("relu")]),
            // More voxels per channel than one CPU work-item's chunk (4096).
            Case(op: .instanceNormalization, c: 3, size: [9, 10, 50], attributes: [:]),
            Case(op: .groupNormalization, c: 4, size: [9, 10, 50], attributes: ["num_groups": .int(2), "activation": .string("tanh")]),
        ]
        for (i, c) in cases.enumerated() {
            let weights = ["s": rng.tensor([c.c], in: 0.5...2), "b": rng.tensor([c.c])]
            let x = rng.tensor([1, c.c] + c.size, in: 2...5)   // non-zero mean
            let g = graph([Node(name: "norm", op: c.op, inputs: ["x", "s", "b"], outputs: ["y"], attributes: c.attributes)], channels: c.c)
            try check(g, weights: weights, input: x, "case \(i): \(c.op.rawValue) C=\(c.c) size \(c.size) \(c.attributes)")
        }
    }

    func testBatchNormalizationUnfolded() throws {
        // BN reading the graph input (nothing to fold into) runs as a per-channel affine kernel.
        var rng = SeededRandom(seed: 8)
        for (i, c) in [1, 3, 16].enumerated() {
            let weights = ["g": rng.tensor([c], in: 0.5...2), "b": rng.tensor([c]), "m": rng.tensor([c]), "v": rng.tensor([c], in: 0.1...2)]
            let g = graph([Node(name: "bn", op: .batchNormalization, inputs: ["x", "g", "b", "m", "v"], outputs: ["y"],
                                attributes: i == 1 ? ["epsilon": .float(1e-3)] : [:])], channels: c)
            try check(g, weights: weights, input: rng.tensor([1, c, 3, 4, 17]), "BatchNormalization C=\(c)")
        }
    }

    /// A whole-volume instance normalization with a large mean (as raw CT or MRI intensities):
    /// float accumulation must not lose the variance.
    func testInstanceNormalizationLargeVolumeLargeMean() throws {
        var rng = SeededRandom(seed: 9)
        let n = 96
        let x = Tensor(shape: [1, 1, n, n, n], data: (0..<(n * n * n)).map { _ in Float(rng.normal(mean: 1000, std: 1)) })
        let weights = ["s": Tensor(shape: [1], data: [1]), "b": Tensor(shape: [1], data: [0])]
        let g = graph([Node(name: "in", op: .instanceNormalization, inputs: ["x", "s", "b"], outputs: ["y"])], channels: 1)
        let network = try Network(graph: g, weights: weights, context: Self.context)
        let y = try network(x)
        let ref = try ReferenceInterpreter.run(graph: g, weights: weights, input: x)["y"]!
        var worst = 0.0
        for i in 0..<ref.count { worst = max(worst, abs(Double(y.data[i]) - ref.data[i])) }
        XCTAssertLessThanOrEqual(worst, 1e-3, "max abs error of the normalized output")
    }

    // MARK: - Elementwise

    func testUnaryActivations() throws {
        let cases: [(OpType, [String: AttributeValue])] = [
            (.relu, [:]), (.leakyRelu, [:]), (.leakyRelu, ["alpha": .float(0.3)]), (.sigmoid, [:]), (.tanh, [:]), (.identity, [:]),
        ]
        for (i, (op, attributes)) in cases.enumerated() {
            // 3 x 5 x 7 x 41 = 4305 values: more than one CPU work-item's chunk of 4096.
            try checkSingle(op, channels: 3, size: [5, 7, 41], attributes: attributes, seed: 200 + UInt64(i), range: -20...20, "\(op.rawValue) \(attributes)")
            try checkSingle(op, channels: 1, size: [1, 1, 1], attributes: attributes, seed: 210 + UInt64(i), "\(op.rawValue) on one value")
        }
    }

    func testPRelu() throws {
        var rng = SeededRandom(seed: 10)
        let c = 5
        let slopes: [Tensor] = [
            rng.tensor([1], in: 0...0.5),
            rng.tensor([c, 1, 1, 1], in: 0...0.5),
            rng.tensor([1, c, 1, 1, 1], in: -0.5...0.5),
            rng.tensor([], in: 0...0.5),
        ]
        for slope in slopes {
            try checkSingle(.prelu, channels: c, size: [3, 4, 17], weights: ["s": slope], weightInputs: ["s"], seed: 11, "PRelu slope \(slope.shape)")
        }
        try checkSingle(.prelu, channels: 1, size: [2, 3, 5], weights: ["s": rng.tensor([1, 1, 1, 1], in: 0...1)], weightInputs: ["s"],
                        seed: 12, "PRelu one channel")
        // One slope per channel over more values than one CPU work-item's chunk (4096).
        try checkSingle(.prelu, channels: 3, size: [5, 7, 41], weights: ["s": rng.tensor([3, 1, 1, 1], in: 0...1)], weightInputs: ["s"],
                        seed: 13, range: -3...3, "PRelu per channel, large")
        // A slope of the input's full shape (numpy broadcasting allows it; fixed-size graph).
        var x = SeededRandom(seed: 14)
        try check(graph([Node(name: "op", op: .prelu, inputs: ["x", "s"], outputs: ["y"])], channels: 2, fixedSpatial: [2, 3, 5]),
                  weights: ["s": rng.tensor([1, 2, 2, 3, 5], in: 0...1)], input: x.tensor([1, 2, 2, 3, 5]), "PRelu with a full-shape slope")
    }

    func testAddAndMul() throws {
        var rng = SeededRandom(seed: 13)
        let c = 3
        for op in [OpType.add, .mul] {
            // Two activations of the same shape (the second from a Sigmoid of the input).
            try check(graph([Node(name: "s", op: .sigmoid, inputs: ["x"], outputs: ["s"]),
                             Node(name: "op", op: op, inputs: ["x", "s"], outputs: ["y"])], channels: c),
                      input: rng.tensor([1, c, 3, 4, 17]), "\(op.rawValue) same shape")
            try check(graph([Node(name: "op", op: op, inputs: ["x", "x"], outputs: ["y"])], channels: c),
                      input: rng.tensor([1, c, 2, 3, 5]), "\(op.rawValue) of x with itself")
            // A weight operand, second or first, per channel or scalar, in every shape numpy allows.
            let operands: [Tensor] = [
                rng.tensor([1, c, 1, 1, 1]), rng.tensor([c, 1, 1, 1]), rng.tensor([1]), rng.tensor([]), rng.tensor([1, 1, 1, 1, 1]),
            ]
            for w in operands {
                for first in [false, true] {
                    let inputs = first ? ["w", "x"] : ["x", "w"]
                    try check(graph([Node(name: "op", op: op, inputs: inputs, outputs: ["y"])], channels: c), weights: ["w": w],
                              input: rng.tensor([1, c, 3, 4, 17]), "\(op.rawValue) with weight \(w.shape) as operand \(first ? 0 : 1)")
                }
            }
            // Per channel over more values than one CPU work-item's chunk (4096).
            try check(graph([Node(name: "op", op: op, inputs: ["x", "w"], outputs: ["y"])], channels: c), weights: ["w": rng.tensor([c, 1, 1, 1])],
                      input: rng.tensor([1, c, 5, 7, 41]), "\(op.rawValue) per channel, large")
            // A weight of the full shape (fixed-size graph).
            try check(graph([Node(name: "op", op: op, inputs: ["x", "w"], outputs: ["y"])], channels: c, fixedSpatial: [2, 3, 5]),
                      weights: ["w": rng.tensor([1, c, 2, 3, 5])], input: rng.tensor([1, c, 2, 3, 5]), "\(op.rawValue) with a full-shape weight")
            // In place: the first operand is an intermediate read by nothing else.
            try check(graph([Node(name: "t", op: .tanh, inputs: ["x"], outputs: ["t"]),
                             Node(name: "op", op: op, inputs: ["t", "w"], outputs: ["y"])], channels: c),
                      weights: ["w": rng.tensor([1, c, 1, 1, 1])], input: rng.tensor([1, c, 3, 3, 3]), "\(op.rawValue) in place")
            // A per-channel activation (global average pool) broadcast against the input, either order.
            for first in [false, true] {
                let inputs = first ? ["p", "x"] : ["x", "p"]
                try check(graph([Node(name: "pool", op: .averagePool, inputs: ["x"], outputs: ["p"], attributes: ["kernel_shape": .ints([3, 4, 5])]),
                                 Node(name: "op", op: op, inputs: inputs, outputs: ["y"])], channels: c, fixedSpatial: [3, 4, 5]),
                          input: rng.tensor([1, c, 3, 4, 5]), "\(op.rawValue) with a per-channel activation as operand \(first ? 0 : 1)")
            }
        }
        for (i, act) in ["relu", "leaky_relu", "sigmoid", "tanh"].enumerated() {
            try check(graph([Node(name: "s", op: .sigmoid, inputs: ["x"], outputs: ["s"]),
                             Node(name: "add", op: .add, inputs: ["x", "s"], outputs: ["y"],
                                  attributes: ["activation": .string(act), "activation_alpha": .float(0.1 * Double(i + 1))])], channels: c),
                      input: rng.tensor([1, c, 3, 4, 17], in: -3...3), "Add with fused \(act)")
        }
    }

    // MARK: - Layout and reductions

    func testConcat() throws {
        var rng = SeededRandom(seed: 14)
        let g = graph([
            Node(name: "s", op: .sigmoid, inputs: ["x"], outputs: ["s"]),
            Node(name: "slice", op: .slice, inputs: ["x"], outputs: ["c1"], attributes: ["starts": .ints([1]), "ends": .ints([2]), "axes": .ints([1])]),
            Node(name: "cat", op: .concat, inputs: ["x", "s", "c1", "x"], outputs: ["y"], attributes: ["axis": .int(1)]),
        ], channels: 3)
        try check(g, input: rng.tensor([1, 3, 3, 4, 17]), "Concat of four")
        let g2 = graph([Node(name: "t", op: .tanh, inputs: ["x"], outputs: ["t"]),
                        Node(name: "cat", op: .concat, inputs: ["t", "x"], outputs: ["y"])], channels: 1)
        try check(g2, input: rng.tensor([1, 1, 2, 3, 5]), "Concat of two, default axis")
    }

    func testResizeNearest() throws {
        let transforms = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
        let roundings = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
        var seed: UInt64 = 300
        for t in transforms {
            for r in roundings {
                let base: [String: AttributeValue] = ["mode": .string("nearest"), "coordinate_transformation_mode": .string(t), "nearest_mode": .string(r)]
                // Up by 2, 1.5 (exact ties at .5 for half_pixel) and 3; down by 2; to fixed sizes.
                try checkSingle(.resize, channels: 2, size: [3, 4, 5], attributes: base.merging(["scales": .numbers([2, 1.5, 3])]) { $1 },
                                seed: seed, "nearest \(t) \(r) scales 2, 1.5, 3")
                try checkSingle(.resize, channels: 1, size: [4, 6, 10], attributes: base.merging(["scales": .numbers([0.5, 0.5, 0.5])]) { $1 },
                                seed: seed + 1, "nearest \(t) \(r) scales 0.5")
                try checkSingle(.resize, channels: 1, size: [3, 4, 5], attributes: base.merging(["sizes": .ints([6, 3, 15])]) { $1 },
                                seed: seed + 2, "nearest \(t) \(r) sizes 6, 3, 15")
                seed += 3
            }
        }
        // Default attributes: nearest, half_pixel, round_prefer_floor.
        try checkSingle(.resize, channels: 3, size: [2, 3, 17], attributes: ["scales": .numbers([2, 2, 2])], seed: 399, "nearest defaults")
    }

    func testResizeLinear() throws {
        let transforms = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
        for (i, t) in transforms.enumerated() {
            let base: [String: AttributeValue] = ["mode": .string("linear"), "coordinate_transformation_mode": .string(t)]
            let s = 400 + UInt64(10 * i)
            try checkSingle(.resize, channels: 2, size: [3, 4, 5], attributes: base.merging(["scales": .numbers([2, 1.5, 3])]) { $1 }, seed: s, "linear \(t) up")
            try checkSingle(.resize, channels: 2, size: [4, 6, 17], attributes: base.merging(["scales": .numbers([0.5, 0.5, 0.6])]) { $1 }, seed: s + 1, "linear \(t) down")
            try checkSingle(.resize, channels: 1, size: [3, 4, 5], attributes: base.merging(["sizes": .ints([5, 7, 1])]) { $1 }, seed: s + 2, "linear \(t) sizes")
            try checkSingle(.resize, channels: 1, size: [1, 4, 5], attributes: base.merging(["sizes": .ints([3, 1, 9])]) { $1 }, seed: s + 3, "linear \(t) from and to size 1")
            // Output size from a reference input: pool down, then resize back up to the input's size.
            var rng = SeededRandom(seed: s + 4)
            for size in [[4, 6, 10], [5, 7, 11]] {
                let g = graph([Node(name: "pool", op: .maxPool, inputs: ["x"], outputs: ["p"], attributes: ["kernel_shape": .ints([2, 2, 2]), "strides": .ints([2, 2, 2])]),
                               Node(name: "up", op: .resize, inputs: ["p", "x"], outputs: ["y"], attributes: base)], channels: 2)
                try check(g, input: rng.tensor([1, 2] + size), "linear \(t) to the size of a reference input \(size)")
            }
        }
    }

    func testSoftmaxAndArgMax() throws {
        var rng = SeededRandom(seed: 15)
        for c in [1, 2, 5, 16] {
            try check(graph([Node(name: "sm", op: .softmax, inputs: ["x"], outputs: ["y"], attributes: c == 2 ? ["axis": .int(1)] : [:])], channels: c),
                      input: rng.tensor([1, c, 3, 4, 17], in: -10...10), "Softmax C=\(c)")
            // Small integers: many exact ties, which must resolve to the first channel.
            try check(graph([Node(name: "am", op: .argMax, inputs: ["x"], outputs: ["y"], attributes: c == 2 ? ["axis": .int(1), "keepdims": .int(1)] : [:])], channels: c),
                      input: rng.integerTensor([1, c, 3, 4, 17], in: 0...3), "ArgMax C=\(c)", relL2: 0, maxAbs: 0)
        }
        // Softmax feeding ArgMax, both outputs.
        let g = graph([Node(name: "sm", op: .softmax, inputs: ["x"], outputs: ["p"]),
                       Node(name: "am", op: .argMax, inputs: ["p"], outputs: ["l"])], channels: 4, outputs: ["p", "l"])
        try check(g, input: rng.tensor([1, 4, 2, 3, 9], in: -5...5), "Softmax then ArgMax")
    }

    func testPad() throws {
        let cases: [[String: AttributeValue]] = [
            ["pads": .ints([1, 0, 2, 0, 3, 1])],
            ["pads": .ints([1, 0, 2, 0, 3, 1]), "mode": .string("constant"), "value": .float(1.5)],
            ["pads": .ints([1, 2, 1, 2, 1, 4]), "mode": .string("reflect")],
            ["pads": .ints([0, 0, 0, 0, 0, 0]), "mode": .string("reflect")],
            ["pads": .ints([2, 0, 3, 1, 2, 0]), "mode": .string("edge")],
            ["pads": .ints([0, 1, 16, 0, 1, 17]), "mode": .string("edge")],
        ]
        for (i, attributes) in cases.enumerated() {
            try checkSingle(.pad, channels: 2, size: [3, 4, 6], attributes: attributes, seed: 500 + UInt64(i), "Pad \(attributes)")
        }
    }

    func testSlice() throws {
        let cases: [[String: AttributeValue]] = [
            ["starts": .ints([1]), "ends": .ints([3]), "axes": .ints([1])],
            ["starts": .ints([1, 0, 2]), "ends": .ints([4, 5, 17]), "axes": .ints([2, 3, 4]), "steps": .ints([2, 3, 4])],
            ["starts": .ints([-3, -4]), "ends": .ints([-1, 1 << 30]), "axes": .ints([4, 2])],
            ["starts": .ints([-100, 1]), "ends": .ints([100, -1]), "axes": .ints([-1, -2]), "steps": .ints([5, 1])],
            ["starts": .ints([0, 2, 1, 0]), "ends": .ints([4, 3, 4, 1]), "axes": .ints([1, 2, 3, 4]), "steps": .ints([2, 1, 2, 1])],
            ["starts": .ints([4]), "ends": .ints([5]), "axes": .ints([-4])],
        ]
        for (i, attributes) in cases.enumerated() {
            try checkSingle(.slice, channels: 5, size: [4, 5, 17], attributes: attributes, seed: 600 + UInt64(i), "Slice \(attributes)")
        }
    }

    func testIdentity() throws {
        var rng = SeededRandom(seed: 16)
        // As a graph output (kept) and in the middle of a chain (dropped by the optimizer).
        try check(graph([Node(name: "id", op: .identity, inputs: ["x"], outputs: ["y"])], channels: 2), input: rng.tensor([1, 2, 2, 3, 5]), "Identity output")
        let g = graph([Node(name: "s", op: .sigmoid, inputs: ["x"], outputs: ["s"]),
                       Node(name: "id", op: .identity, inputs: ["s"], outputs: ["i"]),
                       Node(name: "t", op: .tanh, inputs: ["i"], outputs: ["y"])], channels: 2)
        let network = try check(g, input: rng.tensor([1, 2, 2, 3, 5], in: -3...3), "Identity inside a chain")
        XCTAssertFalse(network.graph.nodes.contains { $0.op == .identity })
        // The graph input itself as an output, next to a computed one.
        try check(graph([Node(name: "s", op: .sigmoid, inputs: ["x"], outputs: ["y"])], channels: 2, outputs: ["x", "y"]),
                  input: rng.tensor([1, 2, 2, 3, 5]), "graph input as an output")
        // An Identity that produces a graph output from a value that is also a graph output.
        try check(graph([Node(name: "s", op: .sigmoid, inputs: ["x"], outputs: ["s"]),
                         Node(name: "id", op: .identity, inputs: ["s"], outputs: ["y"])], channels: 2, outputs: ["s", "y"]),
                  input: rng.tensor([1, 2, 2, 3, 5]), "Identity of a graph output")
    }

    // MARK: - Graph optimizer

    func testBatchNormFoldingIntoConv() throws {
        var rng = SeededRandom(seed: 17)
        for (i, (bias, c, k, group)) in [(true, 3, 5, 1), (false, 1, 16, 1), (true, 4, 9, 1), (true, 5, 5, 5)].enumerated() {
            var weights = ["w": rng.tensor([k, c / group, 3, 3, 3]), "g": rng.tensor([k], in: 0.5...2), "beta": rng.tensor([k]),
                           "m": rng.tensor([k]), "v": rng.tensor([k], in: 0.1...2)]
            var convInputs = ["x", "w"]
            if bias { weights["b"] = rng.tensor([k]); convInputs.append("b") }
            let g = graph([Node(name: "conv", op: .conv, inputs: convInputs, outputs: ["c"],
                                attributes: ["pads": .ints([1, 1, 1, 1, 1, 1]), "group": .int(group)]),
                           Node(name: "bn", op: .batchNormalization, inputs: ["c", "g", "beta", "m", "v"], outputs: ["y"],
                                attributes: i == 2 ? ["epsilon": .float(1e-3)] : [:])], channels: c)
            let network = try check(g, weights: weights, input: rng.tensor([1, c, 3, 4, 17]), "Conv + BatchNormalization case \(i)")
            XCTAssertEqual(network.graph.nodes.map(\.op), [.conv], "BatchNormalization should fold into the Conv")
        }
        // Conv -> BN -> Relu: fold, then fuse.
        let k = 4
        let weights = ["w": rng.tensor([k, 2, 3, 3, 3]), "g": rng.tensor([k], in: 0.5...2), "beta": rng.tensor([k]),
                       "m": rng.tensor([k]), "v": rng.tensor([k], in: 0.1...2)]
        let g = graph([Node(name: "conv", op: .conv, inputs: ["x", "w"], outputs: ["c"], attributes: ["strides": .ints([2, 2, 2])]),
                       Node(name: "bn", op: .batchNormalization, inputs: ["c", "g", "beta", "m", "v"], outputs: ["n"]),
                       Node(name: "relu", op: .relu, inputs: ["n"], outputs: ["y"])], channels: 2)
        let network = try check(g, weights: weights, input: rng.tensor([1, 2, 5, 6, 17]), "Conv + BatchNormalization + Relu")
        XCTAssertEqual(network.graph.nodes.map(\.op), [.conv])
        // The conv output is also a graph output: no folding, both outputs right.
        let g2 = graph([Node(name: "conv", op: .conv, inputs: ["x", "w"], outputs: ["c"]),
                        Node(name: "bn", op: .batchNormalization, inputs: ["c", "g", "beta", "m", "v"], outputs: ["y"])], channels: 2, outputs: ["c", "y"])
        let n2 = try check(g2, weights: weights, input: rng.tensor([1, 2, 3, 4, 9]), "Conv + BatchNormalization, conv output kept")
        XCTAssertEqual(n2.graph.nodes.count, 2)
    }

    func testActivationFusion() throws {
        var rng = SeededRandom(seed: 18)
        let c = 3, k = 5
        let convW = ["w": rng.tensor([k, c, 3, 3, 3]), "b": rng.tensor([k])]
        let cases: [(String, [Node], [String: Tensor], Int)] = [
            ("Conv then Relu", [Node(name: "conv", op: .conv, inputs: ["x", "w", "b"], outputs: ["c"], attributes: ["pads": .ints([1, 1, 1, 1, 1, 1])]),
                                Node(name: "act", op: .relu, inputs: ["c"], outputs: ["y"])], convW, c),
            ("Conv then Sigmoid", [Node(name: "conv", op: .conv, inputs: ["x", "w", "b"], outputs: ["c"]),
                                   Node(name: "act", op: .sigmoid, inputs: ["c"], outputs: ["y"])], convW, c),
            ("ConvTranspose then Tanh", [Node(name: "up", op: .convTranspose, inputs: ["x", "wt"], outputs: ["c"], attributes: ["strides": .ints([2, 2, 2])]),
                                         Node(name: "act", op: .tanh, inputs: ["c"], outputs: ["y"])], ["wt": rng.tensor([c, k, 2, 2, 2])], c),
            ("InstanceNormalization then LeakyRelu", [Node(name: "in", op: .instanceNormalization, inputs: ["x", "s", "b"], outputs: ["n"]),
                                                      Node(name: "act", op: .leakyRelu, inputs: ["n"], outputs: ["y"], attributes: ["alpha": .float(0.2)])],
             ["s": rng.tensor([c], in: 0.5...2), "b": rng.tensor([c])], c),
            ("InstanceNormalization then LeakyRelu default alpha", [Node(name: "in", op: .instanceNormalization, inputs: ["x", "s", "b"], outputs: ["n"]),
                                                                    Node(name: "act", op: .leakyRelu, inputs: ["n"], outputs: ["y"])],
             ["s": rng.tensor([c], in: 0.5...2), "b": rng.tensor([c])], c),
            ("GroupNormalization then Relu", [Node(name: "gn", op: .groupNormalization, inputs: ["x", "s", "b"], outputs: ["n"], attributes: ["num_groups": .int(3)]),
                                              Node(name: "act", op: .relu, inputs: ["n"], outputs: ["y"])],
             ["s": rng.tensor([6], in: 0.5...2), "b": rng.tensor([6])], 6),
            ("Add then Relu", [Node(name: "s", op: .sigmoid, inputs: ["x"], outputs: ["s"]),
                               Node(name: "add", op: .add, inputs: ["x", "s"], outputs: ["a"]),
                               Node(name: "act", op: .relu, inputs: ["a"], outputs: ["y"])], [:], c),
        ]
        for (label, nodes, weights, channels) in cases {
            let network = try check(graph(nodes, channels: channels), weights: weights, input: rng.tensor([1, channels, 3, 4, 17], in: -2...2), label)
            XCTAssertEqual(network.graph.nodes.count, nodes.count - 1, "\(label): the activation should be fused")
            XCTAssertNotNil(network.graph.nodes.last?.attributes["activation"], label)
        }
        // An activation whose input has a second reader must not be fused.
        let g = graph([Node(name: "conv", op: .conv, inputs: ["x", "w", "b"], outputs: ["c"]),
                       Node(name: "act", op: .relu, inputs: ["c"], outputs: ["r"]),
                       Node(name: "add", op: .add, inputs: ["c", "r"], outputs: ["y"])], channels: c)
        let network = try check(g, weights: convW, input: rng.tensor([1, c, 3, 4, 9]), "Conv read by Relu and Add")
        XCTAssertEqual(network.graph.nodes.count, 3)
    }

    // MARK: - The oracle itself

    /// The reference interpreter against published values (ONNX operator examples, the ONNX
    /// Runtime AveragePool fix, numpy.pad), as 2-D images in a 1 x H x W volume; the engine too.
    func testReferenceInterpreterKnownAnswers() throws {
        func image(_ rows: [[Float]]) -> Tensor { Tensor(shape: [1, 1, 1, rows.count, rows[0].count], data: rows.flatMap { $0 }) }
        func expect(_ nodes: [Node], weights: [String: Tensor] = [:], _ x: Tensor, _ expected: [[Float]], channels: Int = 1, _ label: String,
                    file: StaticString = #filePath, line: UInt = #line) throws {
            let g = graph(nodes, channels: x.shape[1])
            let ref = try ReferenceInterpreter.run(graph: g, weights: weights, input: x)["y"]!
            let want = expected.flatMap { $0 }.map(Double.init)
            XCTAssertEqual(ref.count, want.count * channels, "\(label): size", file: file, line: line)
            for c in 0..<channels {
                for (i, v) in want.enumerated() where abs(ref.data[c * want.count + i] - v) > 1e-3 {
                    XCTFail("\(label): reference[\(c), \(i)] = \(ref.data[c * want.count + i]), published \(v)", file: file, line: line)
                    break
                }
            }
            try check(g, weights: weights, input: x, label, file: file, line: line)
        }
        let square = image([[1, 2], [3, 4]])
        try expect([Node(name: "r", op: .resize, inputs: ["x"], outputs: ["y"],
                         attributes: ["mode": .string("linear"), "scales": .numbers([1, 2, 2])])], square,
                   [[1, 1.25, 1.75, 2], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3, 3.25, 3.75, 4]], "resize_upsample_scales_linear")
        try expect([Node(name: "r", op: .resize, inputs: ["x"], outputs: ["y"],
                         attributes: ["mode": .string("linear"), "coordinate_transformation_mode": .string("align_corners"), "scales": .numbers([1, 2, 2])])], square,
                   [[1, 1.33333, 1.66667, 2], [1.66667, 2, 2.33333, 2.66667], [2.33333, 2.66667, 3, 3.33333], [3, 3.33333, 3.66667, 4]],
                   "resize_upsample_scales_linear_align_corners")
        try expect([Node(name: "r", op: .resize, inputs: ["x"], outputs: ["y"], attributes: ["mode": .string("nearest"), "scales": .numbers([1, 0.6, 0.6])])],
                   image([[1, 2, 3, 4], [5, 6, 7, 8]]), [[1, 3]], "resize_downsample_scales_nearest")
        try expect([Node(name: "r", op: .resize, inputs: ["x"], outputs: ["y"], attributes: ["mode": .string("nearest"), "scales": .numbers([1, 2, 3])])],
                   square, [[1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4], [3, 3, 3, 4, 4, 4]], "resize_upsample_scales_nearest")
        try expect([Node(name: "p", op: .averagePool, inputs: ["x"], outputs: ["y"],
                         attributes: ["kernel_shape": .ints([1, 2, 2]), "pads": .ints([0, 0, 0, 0, 1, 1]), "count_include_pad": .int(1)])],
                   image([[1, 1], [1, 1]]), [[1, 0.5], [0.5, 0.25]], "AveragePool count_include_pad, end pads only")
        try expect([Node(name: "p", op: .pad, inputs: ["x"], outputs: ["y"], attributes: ["pads": .ints([0, 0, 2, 0, 0, 1]), "mode": .string("reflect")])],
                   image([[1, 2, 3]]), [[3, 2, 1, 2, 3, 2]], "numpy.pad reflect")
        try expect([Node(name: "p", op: .pad, inputs: ["x"], outputs: ["y"], attributes: ["pads": .ints([0, 0, 2, 0, 0, 1]), "mode": .string("edge")])],
                   image([[1, 2, 3]]), [[1, 1, 1, 2, 3, 3]], "numpy.pad edge")
        let ones = Tensor(shape: [1, 2, 1, 3, 3], data: [Float](repeating: 1, count: 18))
        let nine = image([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
        try expect([Node(name: "t", op: .convTranspose, inputs: ["x", "w"], outputs: ["y"])], weights: ["w": ones], nine,
                   [[0, 1, 3, 3, 2], [3, 8, 15, 12, 7], [9, 21, 36, 27, 15], [9, 20, 33, 24, 13], [6, 13, 21, 15, 8]], channels: 2, "ONNX ConvTranspose")
        try expect([Node(name: "t", op: .convTranspose, inputs: ["x", "w"], outputs: ["y"],
                         attributes: ["strides": .ints([1, 3, 2]), "pads": .ints([0, 1, 2, 0, 1, 2])])], weights: ["w": ones], nine,
                   [[1, 1, 3], [1, 1, 3], [7, 4, 9], [7, 4, 9], [7, 4, 9], [13, 7, 15], [13, 7, 15]], channels: 2, "ONNX convtranspose_pads")
        try expect([Node(name: "c", op: .conv, inputs: ["x", "w"], outputs: ["y"], attributes: ["pads": .ints([0, 1, 1, 0, 1, 1])])],
                   weights: ["w": Tensor(shape: [1, 1, 1, 3, 3], data: [Float](repeating: 1, count: 9))],
                   image([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19], [20, 21, 22, 23, 24]]),
                   [[12, 21, 27, 33, 24], [33, 54, 63, 72, 51], [63, 99, 108, 117, 81], [93, 144, 153, 162, 111], [72, 111, 117, 123, 84]],
                   "ONNX conv_with_padding")
    }

    // MARK: - Whole graphs, memory, errors

    /// A small U-Net: encoder, downsampling, upsampling, skip concatenation, softmax and argmax.
    func testSmallUNetAndPeakMemory() throws {
        var rng = SeededRandom(seed: 19)
        let weights: [String: Tensor] = [
            "e.w": rng.tensor([4, 1, 3, 3, 3]), "e.b": rng.tensor([4]), "e.s": rng.tensor([4], in: 0.5...2), "e.nb": rng.tensor([4]),
            "d.w": rng.tensor([8, 4, 3, 3, 3]), "d.b": rng.tensor([8]),
            "d.g": rng.tensor([8], in: 0.5...2), "d.beta": rng.tensor([8]), "d.m": rng.tensor([8]), "d.v": rng.tensor([8], in: 0.1...2),
            "u.w": rng.tensor([8, 4, 2, 2, 2]), "u.b": rng.tensor([4]),
            "h.w": rng.tensor([3, 8, 1, 1, 1]), "h.b": rng.tensor([3]),
        ]
        let nodes = [
            Node(name: "enc.conv", op: .conv, inputs: ["x", "e.w", "e.b"], outputs: ["e0"], attributes: ["pads": .ints([1, 1, 1, 1, 1, 1])]),
            Node(name: "enc.norm", op: .instanceNormalization, inputs: ["e0", "e.s", "e.nb"], outputs: ["e1"]),
            Node(name: "enc.act", op: .leakyRelu, inputs: ["e1"], outputs: ["e2"]),
            Node(name: "down.conv", op: .conv, inputs: ["e2", "d.w", "d.b"], outputs: ["d0"],
                 attributes: ["pads": .ints([1, 1, 1, 1, 1, 1]), "strides": .ints([2, 2, 2])]),
            Node(name: "down.bn", op: .batchNormalization, inputs: ["d0", "d.g", "d.beta", "d.m", "d.v"], outputs: ["d1"]),
            Node(name: "down.act", op: .relu, inputs: ["d1"], outputs: ["d2"]),
            Node(name: "up", op: .convTranspose, inputs: ["d2", "u.w", "u.b"], outputs: ["u0"], attributes: ["strides": .ints([2, 2, 2])]),
            Node(name: "skip", op: .concat, inputs: ["u0", "e2"], outputs: ["s0"]),
            Node(name: "head", op: .conv, inputs: ["s0", "h.w", "h.b"], outputs: ["logits"]),
            Node(name: "prob", op: .softmax, inputs: ["logits"], outputs: ["p"]),
            Node(name: "label", op: .argMax, inputs: ["p"], outputs: ["l"]),
        ]
        var g = graph(nodes, channels: 1, outputs: ["p", "l"])
        g.sizeMultiple = [2, 2, 2]
        let input = rng.tensor([1, 1, 4, 6, 18])
        XCTAssertEqual(Self.context.memory.liveBytes, 0, "another network is still alive")
        let network = try check(g, weights: weights, input: input, "small U-Net")
        XCTAssertLessThan(network.graph.nodes.count, nodes.count, "BN folding and activation fusion should shrink the graph")
        // Twice more, another size: the peak stays exact and nothing leaks between runs.
        let buffers = LiveObjects.shared.buffers
        for size in [[2, 4, 34], [4, 6, 18]] {
            let result = try network.run(rng.tensor([1, 1] + size))
            XCTAssertEqual(result.peakDeviceBytes, result.plannedPeakBytes, "peak for input \(size)")
        }
        XCTAssertEqual(LiveObjects.shared.buffers, buffers, "device buffers leaked across runs")
    }

    /// Building or running `graph` must throw a CascadeSegError whose message names `node`.
    func assertFailsNaming(_ node: String, _ graph: Graph, weights: [String: Tensor], input: Tensor, _ label: String,
                           file: StaticString = #filePath, line: UInt = #line) {
        do {
            let network = try Network(graph: graph, weights: weights, context: Self.context)
            _ = try network.run(input)
            XCTFail("\(label): no error", file: file, line: line)
        } catch let error as CascadeSegError {
            XCTAssertTrue("\(error)".contains("'\(node)'"), "\(label): message does not name node '\(node)': \(error)", file: file, line: line)
        } catch {
            XCTFail("\(label): not a CascadeSegError: \(error)", file: file, line: line)
        }
    }

    func testShapeAndAttributeErrorsNameTheNode() {
        var rng = SeededRandom(seed: 20)
        let x = rng.tensor([1, 2, 3, 4, 5])
        let w3 = ["w": rng.tensor([4, 3, 3, 3, 3])]
        let w2 = ["w": rng.tensor([4, 2, 3, 3, 3])]
        func conv(_ attributes: [String: AttributeValue], name: String = "enc.conv") -> Node {
            Node(name: name, op: .conv, inputs: ["x", "w"], outputs: ["y"], attributes: attributes)
        }
        assertFailsNaming("enc.conv", graph([conv([:])], channels: 2), weights: w3, input: x, "conv weight for 3 channels on 2")
        // The mismatch one node later, after a conv that is fine.
        assertFailsNaming("second", graph([Node(name: "first", op: .conv, inputs: ["x", "w"], outputs: ["a"]),
                                           Node(name: "second", op: .conv, inputs: ["a", "w"], outputs: ["y"])], channels: 2),
                          weights: w2, input: rng.tensor([1, 2, 7, 7, 7]), "second conv reads 4 channels with a 2-channel weight")
        assertFailsNaming("enc.conv", graph([conv(["strides": .ints([1, 1])])], channels: 2), weights: w2, input: x, "strides with two values")
        assertFailsNaming("enc.conv", graph([conv(["pads": .numbers([1, 1, 1, 1, 1, 1.5])])], channels: 2), weights: w2, input: x, "fractional pads")
        assertFailsNaming("enc.conv", graph([conv(["group": .int(3)])], channels: 2), weights: w2, input: x, "group not dividing")
        assertFailsNaming("enc.conv", graph([conv(["activation": .string("gelu")])], channels: 2), weights: w2, input: x, "unknown activation")
        assertFailsNaming("enc.conv", graph([conv(["kernel_shape": .ints([5, 5, 5])])], channels: 2), weights: w2, input: x, "kernel_shape mismatch")
        assertFailsNaming("big", graph([conv([:], name: "big")], channels: 2), weights: w2, input: rng.tensor([1, 2, 2, 4, 5]), "input smaller than the kernel")
        assertFailsNaming("norm", graph([Node(name: "norm", op: .instanceNormalization, inputs: ["x", "s", "b"], outputs: ["y"])], channels: 2),
                          weights: ["s": rng.tensor([3]), "b": rng.tensor([3])], input: x, "norm parameters for 3 channels on 2")
        assertFailsNaming("gn", graph([Node(name: "gn", op: .groupNormalization, inputs: ["x", "s", "b"], outputs: ["y"], attributes: ["num_groups": .int(3)])], channels: 2),
                          weights: ["s": rng.tensor([2]), "b": rng.tensor([2])], input: x, "num_groups not dividing")
        assertFailsNaming("rs", graph([Node(name: "rs", op: .resize, inputs: ["x"], outputs: ["y"], attributes: ["mode": .string("cubic"), "scales": .numbers([2, 2, 2])])], channels: 2),
                          weights: [:], input: x, "Resize mode cubic")
        assertFailsNaming("pad", graph([Node(name: "pad", op: .pad, inputs: ["x"], outputs: ["y"], attributes: ["pads": .ints([1, 1, 1]), "mode": .string("edge")])], channels: 2),
                          weights: [:], input: x, "Pad with three pads")
        assertFailsNaming("add", graph([Node(name: "add", op: .add, inputs: ["x", "w"], outputs: ["y"])], channels: 2),
                          weights: ["w": rng.tensor([1, 3, 1, 1, 1])], input: x, "Add operand that does not broadcast")
        assertFailsNaming("sl", graph([Node(name: "sl", op: .slice, inputs: ["x"], outputs: ["y"], attributes: ["starts": .ints([0]), "ends": .ints([1]), "axes": .ints([1]), "steps": .ints([-1])])], channels: 2),
                          weights: [:], input: x, "Slice with a negative step")
        assertFailsNaming("pool", graph([Node(name: "pool", op: .maxPool, inputs: ["x"], outputs: ["y"], attributes: ["kernel_shape": .ints([2, 2])])], channels: 2),
                          weights: [:], input: x, "MaxPool with a 2-D kernel")
    }
}
