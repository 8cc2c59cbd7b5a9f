import Foundation
import XCTest
@testable import CascadeSeg

/// The embedding API (`Segmenter`): files and in-memory volumes, the report shared with the
/// command-line tool, progress, cancellation, one stage, model bytes, thread safety, and that
/// nothing stays allocated on the device once a segmenter is gone.
final class SegmenterTests: XCTestCase {
    static var folder: URL { FixtureNetworkTests.fixtures.appendingPathComponent("cascade") }
    static var modelPath: String { folder.appendingPathComponent("cascade.cseg").path }
    static var imagePath: String { folder.appendingPathComponent("phantom.nii.gz").path }

    /// The labels of the fixture, through `Segmenter` on the CPU device.
    static func reference() throws -> [Int32] {
        try Segmenter(modelPath: modelPath, device: "cpu").segment(file: imagePath).labels
    }

    func testFileLabelsAndReportEqualTheCommandLineTool() throws {
        let dir = try CascadesegBinary.temporaryDirectory(for: self)
        let output = dir.appendingPathComponent("api.nii.gz").path, cliOutput = dir.appendingPathComponent("cli.nii.gz").path
        let reportPath = dir.appendingPathComponent("cli.json").path
        let segmenter = try Segmenter(modelPath: Self.modelPath, device: "cpu")
        let result = try segmenter.segment(file: Self.imagePath, writingLabelsTo: output)

        let cli = try CascadesegBinary.run(["segment", Self.modelPath, Self.imagePath, "-o", cliOutput, "--report", reportPath, "--device", "cpu", "--quiet"])
        XCTAssertEqual(cli.status, 0, cli.stderr)
        XCTAssertEqual(try NiftiImage(contentsOf: output).voxels, try NiftiImage(contentsOf: cliOutput).voxels)
        XCTAssertEqual(try NiftiImage(contentsOf: output).geometry, try NiftiImage(contentsOf: Self.imagePath).geometry)
        XCTAssertEqual(result.labels.map(Float.init), try NiftiImage(contentsOf: cliOutput).voxels)

        // One report builder: the same keys, and the same values where no clock is involved.
        let cliReport = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try AtomicFile.read(reportPath))) as? [String: Any])
        let apiReport = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try result.reportJSON())) as? [String: Any])
        XCTAssertEqual(Set(apiReport.keys), Set(cliReport.keys))
        XCTAssertEqual(Set(apiReport.keys), ["mode", "wall_seconds", "peak_device_bytes", "memory_budget_bytes", "stages", "rois",
                                             "label_volumes_mm3", "missed_labels", "prior_labels", "stage1_missed_labels"])
        for key in ["mode", "rois", "label_volumes_mm3", "missed_labels", "prior_labels", "stage1_missed_labels", "memory_budget_bytes"] {
            XCTAssertEqual(apiReport[key] as? NSObject, cliReport[key] as? NSObject, key)
        }
        XCTAssertEqual(result.mode, .cascade)
        XCTAssertFalse(result.rois.isEmpty)
        XCTAssertEqual(result.stages.map(\.stage), [1, 2])
        XCTAssertGreaterThan(result.peakDeviceBytes, 0)
        XCTAssertEqual(result.missedLabels, [])
    }

    func testInMemoryVolumeGivesTheFileLabels() throws {
        let image = try NiftiImage(contentsOf: Self.imagePath)
        let segmenter = try Segmenter(model: try ModelFile(contentsOf: Self.modelPath), device: try Segmenter.device("cpu"))
        let fromFile = try segmenter.segment(image)
        let s = image.spacing
        let fromMemory = try segmenter.segment(voxels: image.voxels, size: SIMD3(image.nx, image.ny, image.nz),
                                               spacing: SIMD3(s.x, s.y, s.z), affine: image.geometry.voxelToWorld)
        XCTAssertEqual(fromMemory.labels, fromFile.labels)
        XCTAssertEqual(fromMemory.rois, fromFile.rois)
        // Without an affine the spacing alone defines the grid; the cascade depends on nothing else.
        let noAffine = try segmenter.segment(voxels: image.voxels, size: SIMD3(image.nx, image.ny, image.nz), spacing: SIMD3(s.x, s.y, s.z))
        XCTAssertEqual(noAffine.labels, fromFile.labels)

        XCTAssertThrowsError(try segmenter.segment(voxels: [1, 2, 3], size: SIMD3(2, 2, 2), spacing: SIMD3(1, 1, 1))) {
            guard case .invalidInput = $0 as? CascadeSegError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try segmenter.segment(voxels: image.voxels, size: SIMD3(image.nx, image.ny, image.nz), spacing: SIMD3(1, 0, 1))) {
            guard case .invalidInput = $0 as? CascadeSegError else { return XCTFail("\($0)") }
        }
    }

    func testModesBudgetOneStageAndModelBytes() throws {
        let bytes = try AtomicFile.read(Self.modelPath)
        let segmenter = try Segmenter(modelBytes: bytes, device: "cpu")
        let image = try NiftiImage(contentsOf: Self.imagePath)
        let whole = try segmenter.segment(image)
        let budgeted = try segmenter.segment(image, options: .init(memoryBudget: 24 << 20))
        XCTAssertEqual(budgeted.labels, whole.labels)
        XCTAssertLessThanOrEqual(budgeted.peakDeviceBytes, 24 << 20)
        XCTAssertEqual(budgeted.memoryBudget, 24 << 20)
        XCTAssertThrowsError(try segmenter.segment(image, options: .init(memoryBudget: 1024))) {
            guard case .budget = $0 as? CascadeSegError else { return XCTFail("\($0)") }
        }

        let stage1 = try segmenter.segment(image, options: .init(mode: .stage1Only))
        XCTAssertEqual(stage1.mode, .stage1Only)
        XCTAssertEqual(stage1.stages.map(\.stage), [1])
        XCTAssertNil(stage1.stage1MissedLabels)
        XCTAssertEqual(stage1.labels.count, whole.labels.count)
        XCTAssertEqual(try segmenter.segment(image, options: .init(mode: .singleStage)).stages.map(\.stage), [2])

        let run = try segmenter.run(stage: 1, input: Tensor(zeros: [1, 1, 8, 8, 8]))
        let logits = try XCTUnwrap(run.outputs.values.first)
        XCTAssertEqual(Array(logits.shape[2...]), [8, 8, 8])
        XCTAssertThrowsError(try segmenter.run(stage: 3, input: Tensor(zeros: [1, 1, 8, 8, 8])))
        XCTAssertThrowsError(try Segmenter(modelBytes: Array(bytes.prefix(100)))) {
            guard case .invalidModel = $0 as? CascadeSegError else { return XCTFail("\($0)") }
        }
        XCTAssertFalse(try Segmenter.devices().isEmpty)
    }

    func testProgressAndCancellation() throws {
        let segmenter = try Segmenter(modelPath: Self.modelPath, device: "cpu")
        let image = try NiftiImage(contentsOf: Self.imagePath)
        let lines = LineLog()
        _ = try segmenter.segment(image, options: .init(progress: { lines.append($0) }))
        XCTAssertTrue(lines.all.first?.hasPrefix("stage 1: grid") ?? false, "\(lines.all)")
        XCTAssertTrue(lines.all.contains { $0.hasPrefix("stage 2: ROI 1/") }, "\(lines.all)")

        // Cancelled while stage 2 runs: it stops before the next ROI, and nothing stays allocated.
        segmenter.releaseDeviceMemory()
        let baseline = LiveObjects.shared.buffers
        let token = CancellationToken()
        let seen = LineLog()
        XCTAssertThrowsError(try segmenter.segment(image, options: .init(progress: { line in
            seen.append(line)
            if line.hasPrefix("stage 2: ROI 1/") { token.cancel() }
        }, cancellation: token))) { error in
            guard case .cancelled(let message) = error as? CascadeSegError else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("before stage-2 ROI 2"), message)
            XCTAssertTrue("\(error)".hasPrefix("cancelled: "), "\(error)")
        }
        XCTAssertFalse(seen.all.contains { $0.hasPrefix("stage 2: ROI 2/") }, "\(seen.all)")
        segmenter.releaseDeviceMemory()
        XCTAssertEqual(LiveObjects.shared.buffers, baseline)

        // A token cancelled up front stops before any network runs.
        XCTAssertThrowsError(try segmenter.segment(image, options: .init(cancellation: { let t = CancellationToken(); t.cancel(); return t }()))) {
            guard case .cancelled = $0 as? CascadeSegError else { return XCTFail("\($0)") }
        }
    }

    func testNothingLeaksAfterSegmenting() throws {
        let baseline = LiveObjects.shared.buffers
        let before = try ComputeContext.shared(for: try ComputeDevice.select("cpu")).memory.liveBytes
        do {
            let segmenter = try Segmenter(modelPath: Self.modelPath, device: "cpu")
            let image = try NiftiImage(contentsOf: Self.imagePath)
            _ = try segmenter.segment(image)
            XCTAssertGreaterThan(LiveObjects.shared.buffers, baseline, "resident weights while the segmenter lives")
            _ = try segmenter.segment(image, options: .init(memoryBudget: 24 << 20))
            _ = try segmenter.segment(image, options: .init(mode: .singleStage))
            XCTAssertThrowsError(try segmenter.segment(image, options: .init(memoryBudget: 1024)))
        }
        XCTAssertEqual(LiveObjects.shared.buffers, baseline)
        XCTAssertEqual(try ComputeContext.shared(for: try ComputeDevice.select("cpu")).memory.liveBytes, before)
    }

    /// Two models on one device, each segmenting from its own thread at the same time, and one
    /// model called from two threads at once: the same labels as one at a time, no leak.
    func testConcurrentSegmentersOnOneDevice() throws {
        let device = try Segmenter.device("cpu")
        let image = try NiftiImage(contentsOf: Self.imagePath)
        let baseline = LiveObjects.shared.buffers
        do {
            let a = try Segmenter(model: try ModelFile(contentsOf: Self.modelPath), device: device)
            let b = try Segmenter(model: try ModelFile(contentsOf: Self.folder.appendingPathComponent("cascade_percentile.cseg").path),
                                  device: device)
            let expectedA = try a.segment(image).labels, expectedB = try b.segment(image).labels
            XCTAssertNotEqual(expectedA, expectedB, "two different models, so a mix-up would show")

            let results = LabelsLog()
            let jobs: [(String, Segmenter, SegmentationOptions)] = [
                ("a", a, .init()), ("b", b, .init()), ("b", b, .init(memoryBudget: 96 << 20)), ("a", a, .init(memoryBudget: 96 << 20)),
                ("a", a, .init()), ("b", b, .init()),
            ]
            DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
                let (name, segmenter, options) = jobs[i]
                do { results.append(name, try segmenter.segment(image, options: options).labels) } catch { results.fail("\(name): \(error)") }
            }
            XCTAssertEqual(results.failures, [])
            XCTAssertEqual(results.all.count, jobs.count)
            for (name, labels) in results.all { XCTAssertTrue(labels == (name == "a" ? expectedA : expectedB), "model \(name) gave other labels") }
        }
        XCTAssertEqual(LiveObjects.shared.buffers, baseline)
    }

    final class LineLog: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var all: [String] { lock.withLock { lines } }
    }

    final class LabelsLog: @unchecked Sendable {
        private let lock = NSLock()
        private var results: [(String, [Int32])] = []
        private var errors: [String] = []
        func append(_ name: String, _ labels: [Int32]) { lock.withLock { results.append((name, labels)) } }
        func fail(_ message: String) { lock.withLock { errors.append(message) } }
        var all: [(String, [Int32])] { lock.withLock { results } }
        var failures: [String] { lock.withLock { errors } }
    }
}
