import Foundation
import XCTest
@testable import CascadeSeg

/// `convert --stage1 --stage2 --config`: two ONNX networks and a config become one cascade model
/// whose stages run exactly as the networks converted alone.
final class CascadeConversionTests: XCTestCase {
    var onnx: URL { FixtureNetworkTests.fixtures.appendingPathComponent("onnx") }

    let config = CascadeConfig(
        name: "test-cascade", license: "CC0-1.0",
        labels: [.init(id: 0, name: "background"), .init(id: 1, name: "a"), .init(id: 2, name: "b")],
        normalization: .init(kind: "zscore", foreground: "nonzero"),
        stage1: .init(spacingMM: [3, 3, 3]), stage2: .init(spacingMM: [1, 1, 1]),
        roi: .init(marginMM: 4, minROISize: [16, 16, 16], labelGroups: [[1, 2]]),
        priors: [.init(label: 2, box: [0.1, 0.2, 0.3, 0.6, 0.7, 0.8])])

    func testTwoNetworksBecomeOneCascadeModel() throws {
        let single = try OnnxConverter.convert(contentsOf: onnx.appendingPathComponent("plain_unet.onnx").path).model
        // The same network as both stages: weight names collide and must be kept apart.
        let other = try OnnxConverter.convert(contentsOf: onnx.appendingPathComponent("plain_unet.onnx").path).model
        let model = try CascadeAssembler.assemble(stage1: other, stage2: single, config: config)
        let back = try ModelFile(bytes: try model.serialized())
        XCTAssertEqual(back.graphs.map(\.name), ["stage1", "stage2"])
        XCTAssertEqual(back.metadata.stages.map(\.spacingMM), [[3, 3, 3], [1, 1, 1]])
        XCTAssertEqual(back.metadata.cascade?.labelGroups, [[1, 2]])
        XCTAssertEqual(back.metadata.cascade?.priors?.first?.label, 2)
        XCTAssertEqual(back.parameterCount, single.parameterCount + other.parameterCount)

        // Stage 2 of the cascade computes what the network converted alone computes.
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let x = try NpyFile.read(onnx.appendingPathComponent("plain_unet_in_8x12x16.npy").path)
        let alone = try Network(model: single, context: context)(x)
        let staged = try Network(model: back, stage: 2, context: context)(x)
        XCTAssertEqual(alone.shape, staged.shape)
        XCTAssertEqual(alone.data, staged.data)
    }

    func testNetworksReadingDifferentChannelCountsAreRefused() throws {
        let single = try OnnxConverter.convert(contentsOf: onnx.appendingPathComponent("plain_unet.onnx").path).model
        let twoChannels = try OnnxConverter.convert(contentsOf: onnx.appendingPathComponent("bn_interp.onnx").path).model
        XCTAssertEqual(twoChannels.graphs[0].inputChannels, 2)
        XCTAssertThrowsError(try CascadeAssembler.assemble(stage1: twoChannels, stage2: single, config: config)) { error in
            XCTAssertTrue("\(error)".contains("input channels"), "\(error)")
        }
    }

    func testLabelTableMustMatchTheOutputChannels() throws {
        let single = try OnnxConverter.convert(contentsOf: onnx.appendingPathComponent("plain_unet.onnx").path).model
        var threeLabels = config
        threeLabels.labels.removeLast()
        XCTAssertThrowsError(try CascadeAssembler.assemble(stage1: single, stage2: single, config: threeLabels)) { error in
            XCTAssertTrue("\(error)".contains("outputs 3 classes but the config lists 2 labels"), "\(error)")
        }
    }

    func testConfigErrorsNameTheProblem() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("c.json").path
        try AtomicFile.write(Array(#"{"name": "x", "labels": [], "normalization": {"kind": "none"}, "stage1": {"spacing_mm": [3,3,3]}}"#.utf8), to: path)
        XCTAssertThrowsError(try CascadeConfig(contentsOf: path)) { error in
            XCTAssertTrue("\(error)".contains("stage2"), "\(error)")
        }
        let encoded = try JSONEncoder().encode(config)
        try AtomicFile.write([UInt8](encoded), to: path)
        XCTAssertEqual(try CascadeConfig(contentsOf: path), config)
    }
}
