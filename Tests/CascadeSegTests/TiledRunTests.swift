import Foundation
import XCTest
@testable import CascadeSeg

/// Streamed runs under a memory budget against the same network run whole: the same labels,
/// logits within float rounding, and a measured device peak that never exceeds the budget.
final class TiledRunTests: XCTestCase {
    static var fixtures: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures") }
    var context: ComputeContext!

    override func setUpWithError() throws {
        context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
    }

    /// Runs `network` on `input` whole and under budgets from just below the whole plan down to
    /// the minimum; returns the largest tile count seen.
    @discardableResult
    func checkBudgets(_ network: Network, _ input: Tensor, label: String, tolerance: Float = 1e-5, expectTiles: Bool = true) throws -> Int {
        let whole = try network.run(input)
        let output = network.graph.outputs[0].name
        let reference = whole.outputs[output]!
        let scale = max(1, reference.data.map(abs).max() ?? 0)
        let wholePeak = try network.plan(inputShape: input.shape.count == 4 ? [1] + input.shape : input.shape).peakBytes
        let minimum = try network.minimumMemoryBudget(inputShape: input.shape)
        XCTAssertLessThan(minimum, wholePeak, "\(label): tiling should need less than the whole plan")
        var mostTiles = 1
        for budget in Set([wholePeak - 1, (wholePeak + minimum) / 2, minimum + (wholePeak - minimum) / 8, minimum]).sorted(by: >) {
            let result = try network.run(input, memoryBudget: budget)
            let y = result.outputs[output]!
            XCTAssertEqual(y.shape, reference.shape, "\(label) budget \(budget)")
            XCTAssertLessThanOrEqual(result.peakDeviceBytes, budget, "\(label): measured peak over the budget \(budget)")
            let worst = zip(y.data, reference.data).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst / scale, tolerance, "\(label) budget \(budget): max |difference| \(worst) (scale \(scale))")
            if reference.shape[1] > 1 {
                let differing = zip(argmax(y), argmax(reference)).filter { $0 != $1 }.count
                XCTAssertEqual(differing, 0, "\(label) budget \(budget): \(differing) labels differ")
            }
            mostTiles = max(mostTiles, result.tiles)
        }
        if expectTiles { XCTAssertGreaterThan(mostTiles, 1, "\(label): the smallest budgets should have tiled") }
        XCTAssertTrue(!network.weightsResident, "\(label): a budgeted run should leave no weights on the device")
        return mostTiles
    }

    func argmax(_ t: Tensor) -> [Int32] {
        let (c, n) = (t.shape[1], t.shape[2...].reduce(1, *))
        return (0..<n).map { i in
            var best = t.data[i], k: Int32 = 0
            for ch in 1..<c where t.data[ch * n + i] > best { best = t.data[ch * n + i]; k = Int32(ch) }
            return k
        }
    }

    func testInstanceNormUNetFixtureUnderBudgets() throws {
        let model = try ModelFile(contentsOf: Self.fixtures.appendingPathComponent("unet_in.cseg").path)
        let network = try Network(model: model, context: context)
        for (size, x, _) in try FixturePairs.load("unet_in", in: Self.fixtures) {
            try checkBudgets(network, x, label: "unet_in \(size)")
        }
    }

    func testMixedOpsFixtureUnderBudgets() throws {
        let model = try ModelFile(contentsOf: Self.fixtures.appendingPathComponent("mixed_ops.cseg").path)
        let network = try Network(model: model, context: context)
        for (size, x, _) in try FixturePairs.load("mixed_ops", in: Self.fixtures) {
            // Its Resize, Pad and Slice nodes run whole and set the minimum, so it may not tile.
            try checkBudgets(network, x, label: "mixed_ops \(size)", expectTiles: false)
        }
    }

    /// Random nnU-Net-style U-Nets (strided convs, transposed convs, instance norms, skips) on
    /// random odd-sized inputs.
    func testRandomUNetsUnderBudgets() throws {
        var random = SplitMixRandom(seed: 7)
        for trial in 0..<3 {
            var config = UNetBuilder.Configuration(base: 4 + 2 * trial, stages: 3 + trial % 2, classes: 3 + trial)
            config.seed = UInt64(100 + trial)
            let (graph, weights) = UNetBuilder.plainConvUNet(config)
            let network = try Network(graph: graph, weights: weights, context: context)
            let m = config.sizeMultiple
            let shape = [1, 1] + (0..<3).map { _ in m * Int(random.next() % 3 + 2) }
            var x = Tensor(zeros: shape)
            for i in x.data.indices { x.data[i] = Float(Int(random.next() % 2001) - 1000) / 500 }
            try checkBudgets(network, x, label: "random U-Net \(trial) on \(shape)")
        }
    }

    func testBudgetBelowTheMinimumIsRefusedBeforeAnyWork() throws {
        let model = try ModelFile(contentsOf: Self.fixtures.appendingPathComponent("unet_in.cseg").path)
        let network = try Network(model: model, context: context)
        let x = try FixturePairs.load("unet_in", in: Self.fixtures)[0].input
        let minimum = try network.minimumMemoryBudget(inputShape: x.shape)
        network.releaseDeviceWeights()
        let before = LiveObjects.shared.buffers
        XCTAssertThrowsError(try network.run(x, memoryBudget: minimum - 1)) { error in
            guard case CascadeSegError.budget(let message) = error else { return XCTFail("wrong error \(error)") }
            XCTAssertTrue(message.contains("\(minimum)"), message)
        }
        XCTAssertEqual(LiveObjects.shared.buffers, before, "a refused budget must not leave buffers behind")
        XCTAssertThrowsError(try network.run(x, memoryBudget: 0))
    }

    func testNetworkLoadedWithoutResidentWeightsHoldsNothingAndRunsInBudget() throws {
        let model = try ModelFile(contentsOf: Self.fixtures.appendingPathComponent("unet_in.cseg").path)
        let before = context.memory.liveBytes
        let network = try Network(model: model, context: context, residentWeights: false)
        XCTAssertEqual(context.memory.liveBytes, before, "loading must leave no weights on the device")
        XCTAssertFalse(network.weightsResident)
        let (_, x, expected) = try FixturePairs.load("unet_in", in: Self.fixtures)[0]
        let minimum = try network.minimumMemoryBudget(inputShape: x.shape)
        let result = try network.run(x, memoryBudget: minimum)
        XCTAssertLessThanOrEqual(result.peakDeviceBytes - before, minimum)
        XCTAssertEqual(context.memory.liveBytes, before, "a budgeted run must leave nothing on the device")
        let y = result.outputs[network.graph.outputs[0].name]!
        let worst = zip(y.data, expected.data).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThan(worst, 1e-3, "streamed run against the PyTorch reference")
        // Without a budget, the weights are uploaded for the run and kept.
        _ = try network.run(x)
        XCTAssertTrue(network.weightsResident)
    }

    /// Normalizations where deferring them is not allowed or not simple: on the graph input, one
    /// after another, two reading one convolution, one reaching the output through a Concat,
    /// one feeding a Resize (run whole) and one feeding an elementwise Add with a pending operand.
    func testNormalizationPlacementsUnderBudgets() throws {
        var random = SplitMixRandom(seed: 21)
        func values(_ n: Int, scale: Float = 0.5) -> [Float] { (0..<n).map { _ in Float(Int(random.next() % 2001) - 1000) / 1000 * scale } }
        let c = 4
        var weights: [String: Tensor] = [:]
        func conv(_ name: String, _ input: String, _ output: String, cin: Int, cout: Int, k: Int = 3, stride: Int = 1) -> Node {
            weights["\(name).w"] = Tensor(shape: [cout, cin, k, k, k], data: values(cout * cin * k * k * k))
            weights["\(name).b"] = Tensor(shape: [cout], data: values(cout))
            return Node(name: name, op: .conv, inputs: [input, "\(name).w", "\(name).b"], outputs: [output],
                        attributes: ["kernel_shape": .ints([k, k, k]), "pads": .ints(Array(repeating: k / 2, count: 6)),
                                     "strides": .ints([stride, stride, stride])])
        }
        func norm(_ name: String, _ input: String, _ output: String, channels: Int, groups: Int? = nil) -> Node {
            weights["\(name).s"] = Tensor(shape: [channels], data: values(channels).map { $0 + 1 })
            weights["\(name).b"] = Tensor(shape: [channels], data: values(channels))
            if let groups {
                return Node(name: name, op: .groupNormalization, inputs: [input, "\(name).s", "\(name).b"], outputs: [output],
                            attributes: ["num_groups": .int(groups), "epsilon": .float(1e-5)])
            }
            return Node(name: name, op: .instanceNormalization, inputs: [input, "\(name).s", "\(name).b"], outputs: [output])
        }
        let nodes: [Node] = [
            norm("n0", "x", "a", channels: 1),                                   // on the graph input
            conv("c1", "a", "b", cin: 1, cout: c),
            norm("n1", "b", "b1", channels: c),                                  // deferred
            norm("n2", "b1", "b2", channels: c, groups: 2),                      // reads a deferred norm
            norm("n3", "b", "b3", channels: c),                                  // second reader of c1
            Node(name: "add", op: .add, inputs: ["b2", "b3"], outputs: ["s"]),
            Node(name: "act", op: .leakyRelu, inputs: ["s"], outputs: ["t"], attributes: ["alpha": .float(0.1)]),
            conv("down", "t", "d", cin: c, cout: c, k: 3, stride: 2),
            norm("n4", "d", "d1", channels: c),                                  // deferred, read by a Resize
            Node(name: "up", op: .resize, inputs: ["d1"], outputs: ["u"], attributes: ["mode": .string("linear"), "sizes": .ints([12, 10, 14])]),
            conv("c2", "u", "e", cin: c, cout: c),
            norm("n5", "e", "e1", channels: c),                                  // reaches the output via Concat
            Node(name: "cat", op: .concat, inputs: ["e1", "t"], outputs: ["y"], attributes: ["axis": .int(1)]),
        ]
        let graph = Graph(name: "norms", inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])],
                          outputs: [ValueInfo(name: "y", shape: [])], nodes: nodes)
        let network = try Network(graph: graph, weights: weights, context: context)
        var x = Tensor(zeros: [1, 1, 12, 10, 14])
        x.data = values(x.data.count, scale: 3).map { $0 + 2 }
        try checkBudgets(network, x, label: "normalization placements")
    }
}
