import Foundation
import XCTest
@testable import CascadeSeg

/// The shipped models load and work on the engine: `brain-deepgrey` segments the Colin27 T1
/// (Debian's mricron-data, installed by `make test`) close to the AAL atlas, and its single-stage
/// baseline is a one-stage model with the same labels. A guard against a broken model file or a
/// change in the pipeline, kernels or converter that the random-weight fixtures would not show:
/// Colin27 is the subject the model was trained on (augmented copies), so the bar below is a
/// regression bound, not an accuracy claim (held-out numbers: ModelZoo/README.md).
final class ModelZooTests: XCTestCase {
    /// The repository's ModelZoo folder (the models are not test resources: they ship as they are).
    static var zoo: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ModelZoo")
    }
    static let templates = "/usr/share/mricron/templates"
    /// The model's labels 1...16 in AAL numbering (ModelZoo/README.md).
    static let aalIDs = [37, 38, 41, 42, 71, 72, 73, 74, 75, 76, 77, 78, 109, 116, 79, 80]

    func template(_ name: String) throws -> NiftiImage {
        let path = Self.templates + "/" + name
        guard FileManager.default.fileExists(atPath: path) else {
            throw CascadeSegError.invalidInput("\(path) is missing: install Debian's mricron-data (`make data-deps`; `make test` does)")
        }
        return try NiftiImage(contentsOf: path)
    }

    func testDeepGreyCascadeOnColin27() throws {
        let image = try template("ch2.nii.gz"), atlas = try template("aal.nii.gz")
        let model = try ModelFile(contentsOf: Self.zoo.appendingPathComponent("brain-deepgrey.cseg").path)
        XCTAssertEqual(model.metadata.labels.map(\.id).sorted(), Array(0...16))
        let result = try Segmenter(model: model, device: try Segmenter.device("cpu")).segment(image)
        XCTAssertEqual(result.mode, .cascade)
        XCTAssertEqual(result.labels.count, image.voxels.count)

        var toModel = [Int: Float]()
        for (i, id) in Self.aalIDs.enumerated() { toModel[id] = Float(i + 1) }
        let reference = try NiftiImage(voxels: atlas.voxels.map { toModel[Int($0)] ?? 0 }, geometry: atlas.geometry)
        let prediction = try NiftiImage(voxels: result.labels.map(Float.init), geometry: image.geometry)
        let evaluation = try SegmentationEvaluation(prediction: prediction, reference: reference, labels: Array(1...16))
        let dice = evaluation.labels.map(\.dice)
        // The released model gives 0.891 mean and 0.826 at the least (`cascadeseg evaluate`); the bounds
        // leave room for float rounding across devices, not for a lost structure.
        XCTAssertGreaterThan(evaluation.meanDice, 0.80, "per label: \(dice)")
        XCTAssertTrue(dice.allSatisfy { $0 >= 0.7 }, "per label: \(dice)")
    }

    func testBaselineIsOneStageWithTheCascadeLabels() throws {
        let cascade = try ModelFile(contentsOf: Self.zoo.appendingPathComponent("brain-deepgrey.cseg").path)
        let baseline = try ModelFile(contentsOf: Self.zoo.appendingPathComponent("brain-deepgrey-baseline.cseg").path)
        XCTAssertEqual(baseline.metadata.stages.count, 1)
        XCTAssertNil(baseline.metadata.cascade)
        XCTAssertEqual(baseline.metadata.labels.map(\.id), cascade.metadata.labels.map(\.id))
        XCTAssertEqual(baseline.metadata.labels.map(\.name), cascade.metadata.labels.map(\.name))
        XCTAssertEqual(baseline.metadata.input.channels, cascade.metadata.input.channels)
        // Loads on the device (shapes and weights consistent) and runs a small input.
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let network = try Network(model: baseline, stage: 1, context: context)
        let run = try network.run(Tensor(zeros: [1, 1, 16, 16, 16]))
        let output = try XCTUnwrap(run.outputs.values.first)
        XCTAssertEqual(run.outputs.count, 1)
        XCTAssertEqual(output.shape, [1, 17, 16, 16, 16])
        XCTAssertTrue(output.data.allSatisfy(\.isFinite))
    }
}
