import Foundation
import XCTest
@testable import CascadeSeg

/// `cascadeseg segment` running the cascade as a user would: the label map, the report's keys and
/// values, the overlay's ROI boxes, the mode flags, `--memory-budget` and `--quiet`.
final class SegmentCommandTests: XCTestCase {
    var dir: URL!
    var phantom: Phantom!
    var input: String!
    var model: String!
    /// An oblique-free but shifted and flipped affine, so world coordinates differ from indices.
    let affine: [[Double]] = [[-1, 0, 0, 30], [0, 1, 0, -12], [0, 0, 1, 7.5], [0, 0, 0, 1]]

    override func setUpWithError() throws {
        dir = try CascadesegBinary.temporaryDirectory(for: self)
        let size = SIMD3(48, 48, 48)
        phantom = try CascadeTestModels.phantomImage(size: size).phantom
        let geometry = try NiftiGeometry(nx: size.x, ny: size.y, nz: size.z, affine: affine)
        input = dir.appendingPathComponent("phantom.nii.gz").path
        try NiftiImage(voxels: phantom.image.voxels, geometry: geometry).write(to: input)
        // Stage 1 does not know the tube; its prior box covers it.
        var lo = size, hi = SIMD3<Int>(repeating: -1)
        for i in phantom.labels.indices where phantom.labels[i] == 3 {
            let p = SIMD3(i % size.x, (i / size.x) % size.y, i / (size.x * size.y))
            lo = pointwiseMin(lo, p); hi = pointwiseMax(hi, p)
        }
        let f0 = SIMD3<Double>(lo) / 48 - 0.03, f1 = SIMD3<Double>(hi &+ 1) / 48 + 0.03
        let cascade = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5], stage1Unknown: [3],
                                                priors: [.init(label: 3, box: [f0.z, f0.y, f0.x, f1.z, f1.y, f1.x])])
        model = dir.appendingPathComponent("cascade.cseg").path
        try cascade.write(to: model)
    }

    func segment(_ extra: [String], report: Bool = true) throws -> (CascadesegBinary.Outcome, [String: Any]?, String) {
        let output = dir.appendingPathComponent("labels-\(UUID().uuidString).nii.gz").path
        let reportPath = dir.appendingPathComponent("report-\(UUID().uuidString).json").path
        let r = try CascadesegBinary.run(["segment", model, input, "-o", output, "--device", "cpu"] + (report ? ["--report", reportPath] : []) + extra)
        let json = report && r.status == 0 ? try JSONSerialization.jsonObject(with: Data(try AtomicFile.read(reportPath))) as? [String: Any] : nil
        return (r, json, output)
    }

    func testCascadeWritesLabelsReportAndOverlay() throws {
        let overlay = dir.appendingPathComponent("overlay.png").path
        let (r, json, output) = try segment(["--overlay", overlay, "--memory-budget", "2G"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try XCTUnwrap(json)

        // The labels: stage 2 is exact on the phantom, the prior recovers the tube.
        let labels = try NiftiImage(contentsOf: output)
        XCTAssertEqual(labels.voxels.map { Int32($0) }, phantom.labels)
        XCTAssertEqual(labels.geometry, try NiftiImage(contentsOf: input).geometry)

        // Progress on stderr, the summary on stdout.
        XCTAssertTrue(r.stderr.contains("stage 1: grid 32x32x32"), r.stderr)
        XCTAssertTrue(r.stderr.contains("stage 2: ROI 1/"), r.stderr)
        XCTAssertTrue(r.stdout.contains("peak device memory"), r.stdout)
        XCTAssertTrue(r.stdout.contains("prior boxes used for: tube"), r.stdout)

        XCTAssertEqual(report["mode"] as? String, "cascade")
        XCTAssertEqual(report["memory_budget_bytes"] as? Int, 2 << 30)
        XCTAssertGreaterThan(report["wall_seconds"] as? Double ?? 0, 0)
        let peak = try XCTUnwrap(report["peak_device_bytes"] as? Int)
        let stages = try XCTUnwrap(report["stages"] as? [[String: Any]])
        XCTAssertEqual(stages.map { $0["stage"] as? Int }, [1, 2])
        XCTAssertEqual(stages[0]["grid"] as? [Int], [32, 32, 32])
        XCTAssertEqual(stages[0]["runs"] as? Int, 1)
        for stage in stages {
            XCTAssertEqual(stage["tiles"] as? Int, 1)
            XCTAssertNotNil(stage["seconds"] as? Double)
            XCTAssertLessThanOrEqual(stage["peak_device_bytes"] as? Int ?? .max, peak)
        }
        XCTAssertEqual(report["stage1_missed_labels"] as? [String], ["tube"])
        XCTAssertEqual(report["prior_labels"] as? [String], ["tube"])
        XCTAssertEqual(report["missed_labels"] as? [String], [])
        let volumes = try XCTUnwrap(report["label_volumes_mm3"] as? [String: Double])
        for s in phantom.structures {
            XCTAssertEqual(volumes[s.name], Double(phantom.labels.filter { $0 == s.id }.count), "\(s.name) at 1 mm3 per voxel")
        }

        let rois = try XCTUnwrap(report["rois"] as? [[String: Any]])
        XCTAssertEqual(stages[1]["runs"] as? Int, rois.count)
        XCTAssertTrue(rois.contains { ($0["labels"] as? [Int])?.contains(3) ?? false })
        var boxes = [VoxelBox]()
        for roi in rois {
            let voxels = try XCTUnwrap(roi["box_voxels"] as? [String: [Int]])
            let lower = try XCTUnwrap(voxels["lower"]), upper = try XCTUnwrap(voxels["upper"])
            boxes.append(VoxelBox(lower: SIMD3(lower[0], lower[1], lower[2]), upper: SIMD3(upper[0], upper[1], upper[2])))
            // World coordinates of the first and last voxel centres, by the affine.
            let mm = try XCTUnwrap(roi["box_mm"] as? [String: [Double]])
            let last = upper.map { $0 - 1 }
            func world(_ v: [Int]) -> [Double] { (0..<3).map { r in (0..<3).map { affine[r][$0] * Double(v[$0]) }.reduce(affine[r][3], +) } }
            XCTAssertEqual(mm["lower"], world(lower))
            XCTAssertEqual(mm["upper"], world(last))
            XCTAssertEqual(roi["size_mm"] as? [Double], (0..<3).map { Double(upper[$0] - lower[$0]) })
            XCTAssertEqual(roi["stage2_size"] as? [Int], (0..<3).map { upper[$0] - lower[$0] })
            XCTAssertEqual((roi["input_size"] as? [Int]).map { $0.allSatisfy { $0 % 8 == 0 } }, true)
        }

        // The overlay outlines the ROI boxes in yellow, and only those: rendering the same
        // labels without boxes has no yellow pixel.
        let png = try PNGTestDecoder.decode(try AtomicFile.read(overlay))
        func yellow(_ rgb: [UInt8]) -> Int { stride(from: 0, to: rgb.count, by: 3).filter { rgb[$0] == 255 && rgb[$0 + 1] == 255 && rgb[$0 + 2] == 0 }.count }
        XCTAssertGreaterThan(yellow(png.rgb), 0)
        let plain = try OverlayRenderer.render(image: phantom.image, labels: phantom.labels)
        XCTAssertEqual(yellow(plain.rgb), 0)
        let boxed = try OverlayRenderer.render(image: phantom.image, labels: phantom.labels, boxes: boxes)
        XCTAssertEqual(boxed.rgb, png.rgb, "the overlay is the labels with the report's ROI boxes")
    }

    func testNoPriorLeavesWhatStage1MissedMissing() throws {
        let (r, json, _) = try segment(["--no-prior", "--memory-budget", "64M"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try XCTUnwrap(json)
        XCTAssertEqual(report["prior_labels"] as? [String], [])
        XCTAssertEqual(report["missed_labels"] as? [String], ["tube"])
        XCTAssertEqual(report["memory_budget_bytes"] as? Int, 64 << 20)
        XCTAssertTrue(r.stdout.contains("labels not found: tube"), r.stdout)
    }

    func testSingleStageModesReportOneStageAndNoROIs() throws {
        for (flag, stage) in [("--single-stage", 2), ("--stage1-only", 1)] {
            let (r, json, output) = try segment([flag])
            XCTAssertEqual(r.status, 0, r.stderr)
            let report = try XCTUnwrap(json)
            XCTAssertEqual(report["mode"] as? String, String(flag.dropFirst(2)))
            XCTAssertTrue(report["memory_budget_bytes"] is NSNull)
            XCTAssertEqual((report["rois"] as? [Any])?.count, 0)
            XCTAssertEqual(report["prior_labels"] as? [String], [])
            let stages = try XCTUnwrap(report["stages"] as? [[String: Any]])
            XCTAssertEqual(stages.map { $0["stage"] as? Int }, [stage])
            let labels = try NiftiImage(contentsOf: output).voxels.map { Int32($0) }
            if stage == 2 {
                XCTAssertEqual(labels, phantom.labels, "stage 2 over the whole image is exact")
            } else {
                XCTAssertEqual(report["missed_labels"] as? [String], ["tube"], "stage 1 does not know the tube")
            }
        }
    }

    func testQuietPrintsNothing() throws {
        let (r, _, output) = try segment(["--quiet", "--memory-budget", "1073741824"], report: false)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "")
        XCTAssertEqual(r.stderr, "")
        XCTAssertTrue(FileManager.default.fileExists(atPath: output))
    }

    /// Small budgets: the same labels as without a budget, tiles in the report, the peak within
    /// the budget; a budget below the smallest tile is refused before any work, naming the minimum.
    func testMemoryBudgetsKeepTheLabelsAndRefuseTheImpossible() throws {
        let (free, _, freeOutput) = try segment(["--single-stage"])
        XCTAssertEqual(free.status, 0, free.stderr)
        let reference = try NiftiImage(contentsOf: freeOutput).voxels
        let (refused, _, refusedOutput) = try segment(["--single-stage", "--memory-budget", "1K"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("give at least"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: refusedOutput), "a refused budget writes nothing")
        // The least the single-stage run accepts is in the message: run at exactly that.
        let minimum = try XCTUnwrap(refused.stderr.components(separatedBy: "give at least ").last?
            .components(separatedBy: " bytes").first.flatMap { Int($0) }, refused.stderr)
        for (mode, budget) in [("--single-stage", minimum), ("--single-stage", 2 * minimum)] {
            let (r, json, output) = try segment([mode, "--memory-budget", "\(budget)"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let report = try XCTUnwrap(json)
            XCTAssertLessThanOrEqual(try XCTUnwrap(report["peak_device_bytes"] as? Int), budget)
            XCTAssertEqual(try NiftiImage(contentsOf: output).voxels, reference, "budget \(budget): labels differ")
            let stages = try XCTUnwrap(report["stages"] as? [[String: Any]])
            if budget == minimum { XCTAssertGreaterThan(stages[0]["tiles"] as? Int ?? 0, 1, "the minimum budget should tile") }
        }
    }
}
