import Foundation
import XCTest
@testable import CascadeSeg

/// The `cascadeseg` binary as a user runs it: exit codes, messages, and no partial outputs.
final class CommandLineTests: XCTestCase {
    var fixtures: URL { FixtureNetworkTests.fixtures }

    typealias Outcome = CascadesegBinary.Outcome

    func cascadeseg(_ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
        try CascadesegBinary.run(arguments, environment: environment)
    }

    func temporaryDirectory() throws -> URL { try CascadesegBinary.temporaryDirectory(for: self) }

    func testRunMatchesPyTorchFixture() throws {
        let dir = try temporaryDirectory()
        let output = dir.appendingPathComponent("y.npy").path
        let r = try cascadeseg(["run", fixtures.appendingPathComponent("unet_in.cseg").path,
                                "--input", fixtures.appendingPathComponent("unet_in_in_16x36x12.npy").path,
                                "--output", output, "--device", "cpu", "--profile"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("peak device memory"), r.stderr)
        XCTAssertTrue(r.stderr.contains("Conv"), "profile should list ops: \(r.stderr)")
        let y = try NpyFile.read(output)
        let expected = try NpyFile.read(fixtures.appendingPathComponent("unet_in_out_16x36x12.npy").path)
        XCTAssertEqual(y.shape, expected.shape)
        let worst = zip(y.data, expected.data).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(worst, 1e-3)
    }

    func testInfoDescribesModel() throws {
        let r = try cascadeseg(["info", fixtures.appendingPathComponent("unet_in.cseg").path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("parameters:   85364"), r.stdout)
        XCTAssertTrue(r.stdout.contains("InstanceNormalization x10"), r.stdout)
    }

    func testNoOpenCLPlatformIsAClearError() throws {
        let empty = try temporaryDirectory()
        let r = try cascadeseg(["devices"], environment: ["OCL_ICD_VENDORS": empty.path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("no OpenCL platform"), r.stderr)
    }

    func testBadInputsFailCleanlyWithoutOutput() throws {
        let dir = try temporaryDirectory()
        let model = fixtures.appendingPathComponent("unet_in.cseg").path
        let good = try AtomicFile.read(fixtures.appendingPathComponent("unet_in_in_16x36x12.npy").path)
        var cases: [(String, [UInt8], String)] = [
            ("truncated.npy", Array(good.prefix(good.count / 2)), "data bytes"),
            ("garbage.npy", Array("hello".utf8), "not a .npy file"),
            ("wrongsize.npy", NpyFile.serialize(Tensor(zeros: [1, 1, 15, 36, 12])), "multiple of"),
            ("wrongchannels.npy", NpyFile.serialize(Tensor(zeros: [1, 2, 16, 36, 12])), "channels"),
            ("rank3.npy", NpyFile.serialize(Tensor(zeros: [16, 36, 12])), "1xCxDxHxW"),
        ]
        var nan = Tensor(zeros: [1, 1, 16, 36, 12])
        nan.data[7] = .nan
        cases.append(("nan.npy", NpyFile.serialize(nan), "NaN"))
        for (name, bytes, message) in cases {
            let input = dir.appendingPathComponent(name).path
            try AtomicFile.write(bytes, to: input)
            let output = dir.appendingPathComponent(name + ".out.npy").path
            let r = try cascadeseg(["run", model, "--input", input, "--output", output, "--device", "cpu"])
            XCTAssertEqual(r.status, 1, "\(name): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(name): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: output), "\(name) left an output")
            XCTAssertEqual(try AtomicFile.read(input), bytes, "\(name): the input was modified")
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("partial") }
        XCTAssertEqual(leftovers, [])
    }

    func testCorruptModelAndUsageErrors() throws {
        let dir = try temporaryDirectory()
        let bytes = try AtomicFile.read(fixtures.appendingPathComponent("unet_in.cseg").path)
        let truncated = dir.appendingPathComponent("truncated.cseg").path
        try AtomicFile.write(Array(bytes.prefix(bytes.count - 100)), to: truncated)
        let r = try cascadeseg(["info", truncated])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("truncated"), r.stderr)
        let usage = try cascadeseg(["run", truncated, "--bogus"])
        XCTAssertEqual(usage.status, 2)
        XCTAssertTrue(usage.stderr.contains("unknown option --bogus"), usage.stderr)
        let missingDevice = try cascadeseg(["run", fixtures.appendingPathComponent("unet_in.cseg").path, "--input",
                                            fixtures.appendingPathComponent("unet_in_in_16x36x12.npy").path,
                                            "--output", dir.appendingPathComponent("o.npy").path, "--device", "no-such-device"])
        XCTAssertEqual(missingDevice.status, 1)
        XCTAssertTrue(missingDevice.stderr.contains("no device name contains"), missingDevice.stderr)
    }

    func testSegmentWritesLabelsWithTheImageGeometry() throws {
        let dir = try temporaryDirectory()
        let model = fixtures.appendingPathComponent("unet_in.cseg").path
        let affine: [[Double]] = [[0.9, 0.1, 0, -10], [-0.1, 0.9, 0, 5], [0, 0, 1.3, 2], [0, 0, 0, 1]]
        var rng = SeededRandom(seed: 8)
        let image = try NiftiImage(voxels: (0..<(13 * 11 * 9)).map { _ in rng.uniform(-1...1) },
                                   geometry: try NiftiGeometry(nx: 13, ny: 11, nz: 9, affine: affine))
        let input = dir.appendingPathComponent("image.nii.gz").path
        try image.write(to: input)
        let output = dir.appendingPathComponent("labels.nii.gz").path
        let overlay = dir.appendingPathComponent("overlay.png").path
        let reportPath = dir.appendingPathComponent("report.json").path
        let r = try cascadeseg(["segment", model, input, "-o", output, "--device", "cpu", "--overlay", overlay, "--report", reportPath])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(try AtomicFile.read(reportPath))) as! [String: Any]
        XCTAssertGreaterThan(report["peak_device_bytes"] as! Int, 0)
        XCTAssertNotNil(report["missed_labels"] as? [String])
        let volumes = report["label_volumes_mm3"] as! [String: Double]
        XCTAssertFalse(volumes.isEmpty)
        XCTAssertEqual(Array(try AtomicFile.read(overlay).prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        XCTAssertTrue(r.stdout.contains("peak device memory"), r.stdout)
        let labels = try NiftiImage(contentsOf: output)
        XCTAssertEqual(labels.geometry, try NiftiImage(contentsOf: input).geometry)
        XCTAssertEqual(labels.datatype, .uint8)

        let before = try AtomicFile.read(input)
        let overInput = try cascadeseg(["segment", model, input, "-o", input, "--device", "cpu"])
        XCTAssertEqual(overInput.status, 1, "writing over the input must be refused")
        XCTAssertEqual(try AtomicFile.read(input), before, "the input was modified")
        let missingOutput = try cascadeseg(["segment", model, input])
        XCTAssertEqual(missingOutput.status, 2)
        XCTAssertTrue(missingOutput.stderr.contains("--output"), missingOutput.stderr)
    }
}
