import XCTest
@testable import CascadeSeg

/// The convolution kernels are compiled with per-device block sizes; every configuration the
/// autotuner may pick must give the same results as the reference.
final class ConvTuningTests: XCTestCase {
    func testEveryBlockConfigurationMatchesReference() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        var rng = SeededRandom(seed: 99)
        let cases: [(c: Int, k: Int, kernel: [Int], size: [Int], attributes: [String: AttributeValue], transposed: Bool)] = [
            (5, 11, [3, 3, 3], [4, 5, 37], ["pads": .ints([1, 1, 1, 1, 1, 1])], false),
            (3, 6, [3, 3, 3], [5, 4, 23], ["pads": .ints([1, 1, 1, 1, 1, 1]), "strides": .ints([2, 2, 2])], false),
            (4, 7, [1, 1, 1], [3, 3, 29], [:], false),
            (6, 5, [2, 2, 2], [3, 2, 19], ["strides": .ints([2, 2, 2])], true),
        ]
        var tunings: [DeviceTuning] = []
        // (vector width, channels per item, vectors per item, x blocks per item, channel chunk)
        for (xv, kb, xn, tx, cc) in [(4, 4, 1, 1, 1 << 20), (8, 8, 1, 4, 2), (8, 4, 2, 3, 1 << 20), (8, 6, 1, 1, 3), (8, 6, 2, 8, 8),
                                     (16, 8, 2, 2, 4), (16, 3, 1, 8, 1)] {
            var t = DeviceTuning.defaults(for: context.device)
            t.convXV = xv; t.convKB = kb; t.convXN = xn; t.convTileBlocks = tx; t.convChannelChunk = cc
            tunings.append(t)
        }
        for cc in cases {
            let wShape = cc.transposed ? [cc.c, cc.k] + cc.kernel : [cc.k, cc.c] + cc.kernel
            let weights = ["w": rng.tensor(wShape), "b": rng.tensor([cc.k])]
            let graph = Graph(name: "t", inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(cc.c), .symbol("D"), .symbol("H"), .symbol("W")])],
                              outputs: [ValueInfo(name: "y", shape: [])],
                              nodes: [Node(name: "conv", op: cc.transposed ? .convTranspose : .conv, inputs: ["x", "w", "b"], outputs: ["y"],
                                           attributes: cc.attributes)])
            let x = rng.tensor([1, cc.c] + cc.size)
            let reference = try ReferenceInterpreter.run(graph: graph, weights: weights, input: x)["y"]!
            for tuning in tunings {
                let y = try Network(graph: graph, weights: weights, context: context, tuning: tuning)(x)
                XCTAssertEqual(y.shape, reference.shape)
                let worst = zip(y.data, reference.data).map { abs(Double($0) - $1) }.max() ?? .infinity
                XCTAssertLessThan(worst, 1e-4, "\(tuning) on \(cc)")
            }
        }
    }
}
