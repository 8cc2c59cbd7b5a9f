import Foundation
import XCTest
@testable import CascadeSeg

/// `cascadeseg segment` on inputs it cannot or should not segment: each is refused with one
/// clear line and a non-zero exit, leaves no output file (partial or not) and does not touch
/// the input; the edge cases it does segment (an all-zero image, one smaller than the network's
/// input) give a complete, documented result.
final class SegmentBadInputTests: XCTestCase {
    var dir: URL!
    var model: String!

    override func setUpWithError() throws {
        dir = try CascadesegBinary.temporaryDirectory(for: self)
        model = try write(CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5]), "cascade.cseg")
    }

    func write(_ model: ModelFile, _ name: String) throws -> String {
        let path = dir.appendingPathComponent(name).path
        try model.write(to: path)
        return path
    }

    /// A small image written by this library (NIfTI-1, data at byte 352), for patching.
    func image(_ name: String, size: SIMD3<Int> = SIMD3(8, 7, 6), voxels: [Float]? = nil) throws -> String {
        let path = dir.appendingPathComponent(name).path
        let geometry = try NiftiGeometry(nx: size.x, ny: size.y, nz: size.z, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        let values = voxels ?? (0..<(size.x * size.y * size.z)).map { Float($0 % 5) * 0.2 }
        try NiftiImage(voxels: values, geometry: geometry).write(to: path)
        return path
    }

    /// Overwrites the int16 `dim` entries (byte 40 + 2 i) and float32 `pixdim` entries (byte
    /// 76 + 4 i) of an uncompressed NIfTI-1 file.
    func patch(_ path: String, dim: [Int: Int16] = [:], pixdim: [Int: Float] = [:]) throws {
        var bytes = try AtomicFile.read(path)
        for (i, v) in dim { withUnsafeBytes(of: v) { bytes.replaceSubrange((40 + 2 * i)..<(42 + 2 * i), with: $0) } }
        for (i, v) in pixdim { withUnsafeBytes(of: v) { bytes.replaceSubrange((76 + 4 * i)..<(80 + 4 * i), with: $0) } }
        try AtomicFile.write(bytes, to: path)
    }

    /// Runs `segment` on `input` and checks the refusal: exit 1 (2 for usage errors), every
    /// word on stderr, no output, the input unchanged, nothing left in the folder but inputs.
    func assertRefused(_ input: String, model: String? = nil, extra: [String] = [], status: Int32 = 1, mentioning words: [String],
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let before = try AtomicFile.read(input)
        let contents = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        let output = dir.appendingPathComponent("labels.nii.gz").path
        let report = dir.appendingPathComponent("report.json").path
        let r = try CascadesegBinary.run(["segment", model ?? self.model, input, "-o", output, "--report", report, "--device", "cpu"] + extra)
        let name = (input as NSString).lastPathComponent
        XCTAssertEqual(r.status, status, "\(name): \(r.stderr)", file: file, line: line)
        for word in words { XCTAssertTrue(r.stderr.contains(word), "\(name): '\(word)' not in \(r.stderr)", file: file, line: line) }
        XCTAssertFalse(r.stderr.contains("stage 1:"), "\(name): a network ran before the refusal: \(r.stderr)", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "\(name) left an output", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: report), "\(name) left a report", file: file, line: line)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)), contents, "\(name) left files", file: file, line: line)
        XCTAssertEqual(try AtomicFile.read(input), before, "\(name): the input was modified", file: file, line: line)
    }

    // MARK: - Refused

    func testNotANiftiFile() throws {
        let path = dir.appendingPathComponent("noise.nii.gz").path
        var rng = SeededRandom(seed: 3)
        try AtomicFile.write((0..<600).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, to: path)
        try assertRefused(path, mentioning: ["noise.nii.gz", "not a readable NIfTI"])
    }

    func testTruncatedCompressedFile() throws {
        let whole = try AtomicFile.read(try image("whole.nii.gz", size: SIMD3(20, 20, 20), voxels: Phantom(size: SIMD3(20, 20, 20)).image.voxels))
        let path = dir.appendingPathComponent("half.nii.gz").path
        try AtomicFile.write(Array(whole.prefix(whole.count / 2)), to: path)
        try assertRefused(path, mentioning: ["half.nii.gz", "truncated"])
    }

    func testTwoDimensionalImage() throws {
        let path = try image("flat.nii", size: SIMD3(8, 7, 1))
        try patch(path, dim: [0: 2])
        try assertRefused(path, mentioning: ["2-D", "8x7", "a 3-D volume is needed"])
    }

    func testFourDimensionalImageWithSeveralVolumes() throws {
        let path = try image("series.nii", size: SIMD3(4, 3, 2))
        try patch(path, dim: [0: 4, 4: 3])
        try assertRefused(path, mentioning: ["3 volumes", "4x3x2x3"])
    }

    func testFiveDimensionalImage() throws {
        let path = try image("five.nii", size: SIMD3(4, 3, 2))
        try patch(path, dim: [0: 5, 4: 1, 5: 2])
        try assertRefused(path, mentioning: ["5-D", "4x3x2x1x2"])
    }

    func testNaNAndInfiniteVoxelsAreCountedAndRefusedBeforeAnyNetworkRuns() throws {
        var voxels = Phantom(size: SIMD3(12, 12, 12)).image.voxels
        voxels[3] = .nan; voxels[40] = .infinity; voxels[41] = -.infinity
        // The model normalizes with "none", which would pass the values on unchecked.
        try assertRefused(try image("nan.nii.gz", size: SIMD3(12, 12, 12), voxels: voxels), mentioning: ["3 NaN or infinite voxels"])
    }

    func testZeroAndNegativeSpacing() throws {
        for (name, axis, value) in [("zero", 1, Float(0)), ("negative", 3, Float(-1.5))] {
            let path = try image("\(name)-spacing.nii")
            try patch(path, pixdim: [axis: value])
            try assertRefused(path, mentioning: ["spacing", "positive", "\(value)"])
        }
    }

    func testModelWithMoreThanOneInputChannel() throws {
        let twoChannels = try write(CascadeTestModels.cascade(inputChannels: 2), "two-channels.cseg")
        try assertRefused(try image("one-channel.nii.gz"), model: twoChannels, mentioning: ["expects 2 input channels", "provides 1"])
    }

    func testBadMemoryBudgetsAndFlagCombinationsAreUsageErrors() throws {
        let input = try image("fine.nii.gz")
        for budget in ["0", "-5", "12X", "1.5G", "M", "", "99999999999G"] {
            try assertRefused(input, extra: ["--memory-budget", budget], status: 2, mentioning: ["--memory-budget must be a positive number of bytes"])
        }
        try assertRefused(input, extra: ["--single-stage", "--stage1-only"], status: 2, mentioning: ["exclude each other"])
        try assertRefused(input, extra: ["--single-stage", "--no-prior"], status: 2, mentioning: ["--no-prior applies to the two-stage cascade only"])
    }

    // MARK: - Segmented, as documented

    func testAllZeroImageGivesAllBackgroundAndReportsEveryLabelMissed() throws {
        let input = try image("zeros.nii.gz", size: SIMD3(16, 14, 12), voxels: [Float](repeating: 0, count: 16 * 14 * 12))
        let output = dir.appendingPathComponent("labels.nii.gz").path, reportPath = dir.appendingPathComponent("report.json").path
        let r = try CascadesegBinary.run(["segment", model, input, "-o", output, "--report", reportPath, "--device", "cpu"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("stage 2: no ROIs"), r.stderr)
        XCTAssertTrue(r.stdout.contains("labels not found: sphere_large, sphere_small, tube, shell"), r.stdout)
        XCTAssertEqual(try NiftiImage(contentsOf: output).voxels, [Float](repeating: 0, count: 16 * 14 * 12))
        let report = try JSONSerialization.jsonObject(with: Data(try AtomicFile.read(reportPath))) as! [String: Any]
        XCTAssertEqual(report["missed_labels"] as? [String], ["sphere_large", "sphere_small", "tube", "shell"])
        XCTAssertEqual(report["stage1_missed_labels"] as? [String], ["sphere_large", "sphere_small", "tube", "shell"])
        XCTAssertEqual((report["rois"] as? [Any])?.count, 0)
        XCTAssertEqual((report["label_volumes_mm3"] as? [String: Double])?.count, 0)
    }

    func testImageSmallerThanTheNetworkInputIsSegmented() throws {
        // 3x3x3 voxels: the one ROI is the whole image, padded to the 16-voxel minimum input.
        let input = try image("tiny.nii.gz", size: SIMD3(3, 3, 3), voxels: [Float](repeating: 0.9, count: 27))
        let output = dir.appendingPathComponent("labels.nii.gz").path, reportPath = dir.appendingPathComponent("report.json").path
        let r = try CascadesegBinary.run(["segment", model, input, "-o", output, "--report", reportPath, "--device", "cpu"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try NiftiImage(contentsOf: output).voxels, [Float](repeating: 1, count: 27))
        let report = try JSONSerialization.jsonObject(with: Data(try AtomicFile.read(reportPath))) as! [String: Any]
        let roi = (report["rois"] as! [[String: Any]])[0]
        XCTAssertEqual(roi["input_size"] as? [Int], [16, 16, 16])
        XCTAssertEqual(roi["stage2_size"] as? [Int], [3, 3, 3])
    }
}
