import Foundation
import XCTest
@testable import CascadeSeg

/// Whole networks made in PyTorch (tools/make_fixtures.py), run here and compared with the
/// PyTorch float32 outputs stored next to them.
final class FixtureNetworkTests: XCTestCase {
    static var fixtures: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures") }

    func check(_ name: String, maxRelativeL2: Double = 1e-4, maxAbs: Float = 1e-3, exact: Bool = false) throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let model = try ModelFile(contentsOf: Self.fixtures.appendingPathComponent("\(name).cseg").path)
        let network = try Network(model: model, context: context)
        let pairs = try FixturePairs.load(name, in: Self.fixtures)
        XCTAssertGreaterThanOrEqual(pairs.count, 2, "fixtures for \(name) are missing")
        for (size, x, expected) in pairs {
            let result = try network.run(x)
            let y = result.outputs[network.graph.outputs[0].name]!
            XCTAssertEqual(y.shape, expected.shape, "\(name) \(size)")
            guard y.shape == expected.shape else { continue }
            let (relativeL2, maxErr) = differences(y.data, expected.data)
            if exact {
                XCTAssertEqual(y.data, expected.data, "\(name) \(size): labels differ")
            } else {
                XCTAssertLessThanOrEqual(relativeL2, maxRelativeL2, "\(name) \(size)")
                XCTAssertLessThanOrEqual(maxErr, maxAbs, "\(name) \(size)")
            }
            XCTAssertLessThanOrEqual(result.peakDeviceBytes - (context.memory.liveBytes - network.weightBytes), result.plannedPeakBytes)
        }
    }

    func testNnUNetLikeUNetMatchesPyTorch() throws { try check("unet_in") }

    func testUpsampledHalfOfEachConcatIsWrittenInPlace() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let model = try ModelFile(contentsOf: Self.fixtures.appendingPathComponent("unet_in.cseg").path)
        let network = try Network(model: model, context: context)
        let plan = try network.plan(inputShape: [1, 1, 16, 36, 12])
        let concats = network.graph.nodes.filter { $0.op == .concat }
        XCTAssertEqual(concats.count, 2)
        for concat in concats {
            // The ConvTranspose output (first input) lands in the Concat's storage; the skip does not.
            XCTAssertTrue(plan.concatenatedInPlace.contains(concat.inputs[0]), "\(concat.name)")
            XCTAssertFalse(plan.concatenatedInPlace.contains(concat.inputs[1]), "\(concat.name)")
            XCTAssertEqual(plan.storageOf[concat.inputs[0]], plan.storageOf[concat.outputs[0]])
        }
    }
    func testMixedOperatorNetworkMatchesPyTorch() throws { try check("mixed_ops") }
    func testArgMaxNetworkGivesPyTorchLabels() throws { try check("tiny_argmax", exact: true) }
}

/// The GPU configuration (work-groups of many items, interleaved norm sums) must compute the
/// same results; it runs here on the CPU device so that its code paths are tested everywhere.
final class GPUTuningOnCPUTests: XCTestCase {
    func testFixtureNetworksWithGPUTuning() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        for name in ["unet_in", "mixed_ops"] {
            let model = try ModelFile(contentsOf: FixtureNetworkTests.fixtures.appendingPathComponent("\(name).cseg").path)
            let network = try Network(graph: try model.stageGraph(1), weights: model.weights, context: context, tuning: .gpu)
            let pairs = try FixturePairs.load(name, in: FixtureNetworkTests.fixtures)
            XCTAssertGreaterThanOrEqual(pairs.count, 2, "fixtures for \(name) are missing")
            for (size, x, expected) in pairs {
                let y = try network(x)
                XCTAssertEqual(y.shape, expected.shape)
                let worst = zip(y.data, expected.data).map { abs($0 - $1) }.max() ?? .infinity
                XCTAssertLessThan(worst, 1e-3, "\(name) \(size)")
            }
        }
    }
}
