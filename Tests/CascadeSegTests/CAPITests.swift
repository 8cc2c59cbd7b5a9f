import Foundation
import XCTest
@testable import CascadeSeg
import CascadeSegC

/// The C API (include/cascadeseg.h), called as C would call it: status codes, the thread-local
/// error message, query-then-fill buffers, in-memory and file segmentation equal to the Swift
/// API's, cancellation through the progress callback; and Examples/c/segment.c compiled with
/// the system's C compiler against libcseg.so and run on the fixture.
final class CAPITests: XCTestCase {
    static var repository: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }

    func testVersionDevicesAndErrors() throws {
        let header = try String(contentsOf: Self.repository.appendingPathComponent("include/cascadeseg.h"), encoding: .utf8)
        XCTAssertTrue(header.contains("#define CSEG_VERSION \"\(String(cString: cseg_version()))\""))

        var count: Int32 = 0
        XCTAssertEqual(cseg_device_count(&count), 0)
        XCTAssertEqual(Int(count), try Segmenter.devices().count)
        var length = 0
        XCTAssertEqual(cseg_device_name(0, nil, 0, &length), 0)
        XCTAssertEqual(length, try Segmenter.devices()[0].name.utf8.count)
        var small = [CChar](repeating: 7, count: length)
        XCTAssertEqual(cseg_device_name(0, &small, small.count, &length), 9, "no room for the NUL")
        XCTAssertTrue(small.allSatisfy { $0 == 7 }, "left untouched")
        var name = [CChar](repeating: 0, count: length + 1)
        XCTAssertEqual(cseg_device_name(0, &name, name.count, &length), 0)
        XCTAssertEqual(String(cString: name), try Segmenter.devices()[0].name)
        XCTAssertEqual(cseg_device_name(count, &name, name.count, &length), 4)

        // Errors: a code, and a message for this thread only.
        var model: OpaquePointer? = nil
        XCTAssertEqual(cseg_model_load("/nonexistent/model.cseg", &model), 7)
        XCTAssertNil(model)
        let message = String(cString: cseg_last_error())
        XCTAssertTrue(message.contains("/nonexistent/model.cseg"), message)
        let other = SegmenterTests.LineLog()
        let done = expectation(description: "thread")
        Thread { other.append(String(cString: cseg_last_error())); done.fulfill() }.start()
        wait(for: [done], timeout: 10)
        XCTAssertEqual(other.all, [""], "another thread has no error")
        XCTAssertEqual(String(cString: cseg_last_error()), message, "this thread keeps its own")
        XCTAssertEqual(cseg_model_load_memory([UInt8](repeating: 1, count: 64), 64, &model), 2)
        XCTAssertEqual(cseg_model_load(nil, &model), 1)
        XCTAssertEqual(cseg_segment_file(nil, "a.nii", "b.nii", nil), 1)
        var options: OpaquePointer? = nil
        XCTAssertEqual(cseg_options_create(&options), 0)
        XCTAssertEqual(cseg_options_set_mode(options, 9), 1)
        XCTAssertEqual(cseg_options_set_memory_budget(options, -1), 1)
        XCTAssertEqual(cseg_options_set_device(options, -2), 1)
        cseg_options_free(options)
        cseg_options_free(nil)
        cseg_model_free(nil)
    }

    func testSegmentVolumeAndFileEqualTheSwiftAPI() throws {
        let baseline = LiveObjects.shared.buffers
        let image = try NiftiImage(contentsOf: SegmenterTests.imagePath)
        let expected = try SegmenterTests.reference()
        let dir = try CascadesegBinary.temporaryDirectory(for: self)
        do {
            var model: OpaquePointer? = nil
            XCTAssertEqual(cseg_model_load(SegmenterTests.modelPath, &model), 0, String(cString: cseg_last_error()))
            defer { cseg_model_free(model) }
            var options: OpaquePointer? = nil
            XCTAssertEqual(cseg_options_create(&options), 0)
            defer { cseg_options_free(options) }
            let cpu = try Segmenter.device("cpu").index
            XCTAssertEqual(cseg_options_set_device(options, Int32(cpu)), 0)

            let dims: [Int64] = [Int64(image.nx), Int64(image.ny), Int64(image.nz)]
            let spacing = [image.spacing.x, image.spacing.y, image.spacing.z]
            let affine = image.geometry.voxelToWorld.flatMap { $0 }
            var labels = [Int32](repeating: -1, count: image.voxels.count)
            XCTAssertEqual(cseg_segment_volume(model, image.voxels, dims, spacing, affine, options, &labels, labels.count - 1), 9)
            XCTAssertTrue(String(cString: cseg_last_error()).contains("\(labels.count) voxels"))
            XCTAssertEqual(cseg_segment_volume(model, image.voxels, dims, spacing, affine, options, &labels, labels.count), 0,
                           String(cString: cseg_last_error()))
            XCTAssertEqual(labels, expected)
            var length = 0
            XCTAssertEqual(cseg_last_report(nil, 0, &length), 0)
            var report = [CChar](repeating: 0, count: length + 1)
            XCTAssertEqual(cseg_last_report(&report, report.count, &length), 0)
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(String(cString: report).utf8)) as? [String: Any])
            XCTAssertEqual(json["mode"] as? String, "cascade")

            // A NULL affine: the spacing defines the grid.
            labels = [Int32](repeating: -1, count: image.voxels.count)
            XCTAssertEqual(cseg_segment_volume(model, image.voxels, dims, spacing, nil, nil, &labels, labels.count), 0)
            XCTAssertEqual(labels, expected)

            // File to file, under a budget.
            XCTAssertEqual(cseg_options_set_memory_budget(options, 24 << 20), 0)
            let output = dir.appendingPathComponent("c.nii.gz").path
            XCTAssertEqual(cseg_segment_file(model, SegmenterTests.imagePath, output, options), 0, String(cString: cseg_last_error()))
            XCTAssertEqual(try NiftiImage(contentsOf: output).voxels, expected.map(Float.init))
            XCTAssertEqual(cseg_segment_file(model, dir.appendingPathComponent("missing.nii.gz").path, output, options), 7)

            // The progress callback cancels by returning non-zero.
            let stopAtROI: @convention(c) (UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Int32 = { line, user in
                user!.assumingMemoryBound(to: Int32.self).pointee += 1
                return String(cString: line!).hasPrefix("stage 2: ROI 1/") ? 1 : 0
            }
            var calls: Int32 = 0
            XCTAssertEqual(cseg_options_set_progress(options, stopAtROI, &calls), 0)
            XCTAssertEqual(cseg_segment_volume(model, image.voxels, dims, spacing, affine, options, &labels, labels.count), 8)
            XCTAssertTrue(String(cString: cseg_last_error()).hasPrefix("cancelled: "), String(cString: cseg_last_error()))
            XCTAssertGreaterThan(calls, 0)
        }
        XCTAssertEqual(LiveObjects.shared.buffers, baseline)
    }

    /// Examples/c/segment.c, compiled and linked against libcseg.so as a C user would, gives the
    /// command-line tool's label map byte for byte. (`make example` does the same outside the tests.)
    func testCExampleMatchesTheCommandLineTool() throws {
        let buildDir = CascadesegBinary.url.deletingLastPathComponent()
        let library = buildDir.appendingPathComponent("libcseg.so")
        guard FileManager.default.fileExists(atPath: library.path) else {
            throw XCTSkip("libcseg.so is not built next to the tests (\(library.path)); run `swift build --build-tests`")
        }
        guard let compiler = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("no C compiler")
        }
        let dir = try CascadesegBinary.temporaryDirectory(for: self)
        let binary = dir.appendingPathComponent("segment").path
        let root = Self.repository
        let compile = try Self.run(compiler, ["-std=c11", "-Wall", "-Wextra", "-Werror", "-I", root.appendingPathComponent("include").path,
                                              root.appendingPathComponent("Examples/c/segment.c").path, "-L", buildDir.path, "-lcseg",
                                              "-Wl,-rpath,\(buildDir.path)", "-o", binary])
        XCTAssertEqual(compile.status, 0, compile.output)
        let cOut = dir.appendingPathComponent("c.nii.gz").path, cliOut = dir.appendingPathComponent("cli.nii.gz").path
        let cpu = try Segmenter.device("cpu").index
        let c = try Self.run(binary, [SegmenterTests.modelPath, SegmenterTests.imagePath, cOut, "--device", "\(cpu)"])
        XCTAssertEqual(c.status, 0, c.output)
        XCTAssertTrue(c.output.contains("stage 2: ROI 1/"), c.output)
        let cli = try CascadesegBinary.run(["segment", SegmenterTests.modelPath, SegmenterTests.imagePath, "-o", cliOut, "--device", "cpu", "--quiet"])
        XCTAssertEqual(cli.status, 0, cli.stderr)
        XCTAssertEqual(try NiftiImage(contentsOf: cOut).voxels, try NiftiImage(contentsOf: cliOut).voxels)
        XCTAssertEqual(try NiftiImage(contentsOf: cOut).geometry, try NiftiImage(contentsOf: cliOut).geometry)
        let bad = try Self.run(binary, ["/nonexistent.cseg", SegmenterTests.imagePath, cOut])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.output.contains("loading the model failed (status 7)"), bad.output)
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
