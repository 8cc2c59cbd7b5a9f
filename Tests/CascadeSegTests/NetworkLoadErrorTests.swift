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

    func testActivationsLargerThanTheDeviceAllowsAreAClearError() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let g = graph([Node(name: "huge_resize", op: .resize, inputs: ["x"], outputs: ["y"],
                            attributes: ["scales": .numbers([64, 64, 64]), "mode": .string("nearest")])])
        let network = try Network(graph: g, weights: [:], context: context)
        let before = context.memory.liveBytes
        XCTAssertThrowsError(try network.run(Tensor(zeros: [1, 1, 32, 32, 32]))) { error in
            guard case CascadeSegError.budget(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("allows at most"), message)
        }
        XCTAssertEqual(context.memory.liveBytes, before, "a failed run must release what it allocated")
    }
}
