import XCTest
@testable import CascadeSeg

/// Graphs that pass the file reader but cannot run must fail at load with an error, not crash.
final class NetworkLoadErrorTests: XCTestCase {
    func graph(_ nodes: [Node]) -> Graph {
        Graph(name: "g", inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])],
              outputs: [ValueInfo(name: nodes.last!.outputs[0], shape: [])], nodes: nodes)
    }

    func testConvWeightOfWrongRankIsRefused() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let g = graph([Node(name: "bad_conv", op: .conv, inputs: ["x", "w"], outputs: ["y"])])
        XCTAssertThrowsError(try Network(graph: g, weights: ["w": Tensor(shape: [4], data: [1, 2, 3, 4])], context: context)) { error in
            XCTAssertTrue("\(error)".contains("bad_conv"), "\(error)")
        }
    }

    func testEmptyConvFollowedByBatchNormIsRefused() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let g = graph([Node(name: "empty_conv", op: .conv, inputs: ["x", "w"], outputs: ["c"]),
                       Node(name: "bn", op: .batchNormalization, inputs: ["c", "s", "b", "m", "v"], outputs: ["y"])])
        let empty = Tensor(shape: [0], data: [])
        let weights = ["w": Tensor(shape: [0, 1, 1, 1, 1], data: []), "s": empty, "b": empty, "m": empty, "v": empty]
        XCTAssertThrowsError(try Network(graph: g, weights: weights, context: context)) { error in
            XCTAssertTrue(error is CascadeSegError, "\(error)")
        }
    }
}
