import Foundation
import XCTest
@testable import CascadeSeg

/// The two-stage cascade against an independent reference (tools/reference_cascade.py, written
/// from docs/PIPELINE.md in numpy and PyTorch) on the phantom fixture in `Fixtures/cascade`
/// (made by tools/make_cascade_fixture.py; see Fixtures/README.md).
///
/// The fixture image is a scaled int16 NIfTI with an oblique sform and anisotropic 1.0 x 1.25 x
/// 1.5 mm voxels; the model's stage 1 runs at 3 mm (anti-aliased shrinking), stage 2 at 0.9 mm
/// (each ROI crop grown, its logits shrunk back), with a label group, a whole-axis ROI padded to
/// the size multiple, merged ROIs, a label stage 1 misses (found through its prior box) and a
/// label whose prior is used because stage 1 found less than its `min_volume_mm3`.
///
/// Three variants of the model run on the same phantom as well: stage 2 coarser than the image
/// on two axes (anti-aliased ROI crops, one merged ROI), percentile normalization, and z-score
/// over all voxels (one ROI covering the whole image, padded on every axis).
///
/// Compared exactly: the stage-1 grid and labels (every stage-1 voxel of the fixture is decided
/// by a logit gap of at least 2e-3; for the variants, the stage-1 voxel count of each label), the
/// ROI list (boxes, labels, stage-2 and input sizes, source boxes, costs) and the missed/prior
/// label lists. Labels on the image grid: every voxel whose reference decision margin is at least
/// 1e-3 must agree; voxels decided by a nearer tie may differ by float rounding, at most 0.05% of
/// the voxels (and at least one is allowed).
final class CascadeReferenceTests: XCTestCase {
    static var folder: URL { FixtureNetworkTests.fixtures.appendingPathComponent("cascade") }
    static let nearTie: Float = 1e-3
    static let tieFraction = 0.0005

    struct Loaded {
        var image: NiftiImage
        var model: ModelFile
        var expected: [String: Any]
    }

    /// The files, read once. Networks are not cached: a live network holds device memory,
    /// which other tests' peak-memory checks would count.
    static var cache: Loaded?

    func load() throws -> Loaded {
        if let loaded = Self.cache { return loaded }
        let image = try NiftiImage(contentsOf: Self.folder.appendingPathComponent("phantom.nii.gz").path)
        let model = try ModelFile(contentsOf: Self.folder.appendingPathComponent("cascade.cseg").path)
        let json = try Data(contentsOf: Self.folder.appendingPathComponent("expected.json"))
        let expected = try XCTUnwrap(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        let loaded = Loaded(image: image, model: model, expected: expected)
        Self.cache = loaded
        return loaded
    }

    /// The cascade's two networks, found by graph name among the model's `stages` (1-based).
    func networks(_ model: ModelFile) throws -> (Network, Network) {
        let cascade = try XCTUnwrap(model.metadata.cascade)
        let names = model.metadata.stages.map(\.graph)
        let i1 = try XCTUnwrap(names.firstIndex(of: cascade.stage1)) + 1
        let i2 = try XCTUnwrap(names.firstIndex(of: cascade.stage2)) + 1
        let indices = try CascadeSegmentation.stageIndices(of: model)
        XCTAssertEqual(indices.stage1, i1)
        XCTAssertEqual(indices.stage2, i2)
        let context = try ComputeContext.shared(for: try ComputeDevice.select(nil))
        return (try Network(model: model, stage: i1, context: context), try Network(model: model, stage: i2, context: context))
    }

    func testFixtureImageIsReadWithItsScaling() throws {
        let image = try load().image
        XCTAssertEqual([image.nx, image.ny, image.nz], [64, 56, 48])
        XCTAssertEqual(image.datatype, .int16)
        XCTAssertEqual(image.spacing.x, 1.0); XCTAssertEqual(image.spacing.y, 1.25); XCTAssertEqual(image.spacing.z, 1.5)
        XCTAssertEqual(image.geometry.sformCode, 1)
        XCTAssertEqual(image.geometry.qformCode, 1)
        // Stored = 2 * value + 400 (scl_slope 0.5, scl_inter -200): outside the body is exactly 0,
        // the body near 100 and every value a multiple of 0.5.
        XCTAssertEqual(image.voxels[0], 0)
        XCTAssertTrue(image.voxels.allSatisfy { ($0 * 2).rounded() == $0 * 2 })
        let centre = image.voxels[32 + 64 * (28 + 56 * 24)]
        XCTAssertTrue(centre > 80 && centre < 300, "centre voxel \(centre)")
    }

    func testCascadeMatchesTheReferenceWithPriors() throws {
        let loaded = try load()
        let (stage1, stage2) = try networks(loaded.model)
        try compare(loaded.model, stage1, stage2, usePriors: true,
                    expected: try XCTUnwrap(loaded.expected["priors"] as? [String: Any]), name: "priors",
                    labels: "expected_labels.nii.gz", margin: "expected_margin.nii.gz", stage1: true)
    }

    func testCascadeMatchesTheReferenceWithoutPriors() throws {
        let loaded = try load()
        let (stage1, stage2) = try networks(loaded.model)
        try compare(loaded.model, stage1, stage2, usePriors: false,
                    expected: try XCTUnwrap(loaded.expected["no_priors"] as? [String: Any]), name: "no priors",
                    labels: "expected_labels_no_prior.nii.gz", margin: "expected_margin_no_prior.nii.gz", stage1: true)
    }

    /// The cascade under device-memory budgets down to the smallest its networks allow: the same
    /// labels as without a budget (and so as the reference), and a measured peak within budget.
    func testCascadeUnderMemoryBudgetsMatchesTheReference() throws {
        let loaded = try load()
        let expected = try XCTUnwrap(loaded.expected["priors"] as? [String: Any])
        let (free1, free2) = try networks(loaded.model)
        let unbounded = try compare(loaded.model, free1, free2, usePriors: true, expected: expected, name: "unbounded",
                                    labels: "expected_labels.nii.gz", margin: "expected_margin.nii.gz", stage1: false)
        // The networks' inputs: the stage-1 grid padded to its multiple, and every ROI's input.
        func input(_ size: SIMD3<Int>, multiple: [Int]) -> [Int] {
            [1, 1] + zip([size.z, size.y, size.x], multiple).map { ($0 + $1 - 1) / $1 * $1 }
        }
        let minimum = max(try free1.minimumMemoryBudget(inputShape: input(unbounded.stage1Size, multiple: free1.graph.sizeMultiple)),
                          try unbounded.rois.map { try free2.minimumMemoryBudget(inputShape: input($0.inputSize, multiple: [1, 1, 1])) }.max() ?? 0)
        let context = free1.context
        let (i1, i2) = try CascadeSegmentation.stageIndices(of: loaded.model)
        free1.releaseDeviceWeights()
        free2.releaseDeviceWeights()
        for budget in [minimum, (minimum + unbounded.peakDeviceBytes) / 2] {
            // Networks holding no weights between runs, so that the budget holds from the start;
            // whatever else the device holds (nothing, unless other tests left something) counts on top.
            let idle = context.memory.liveBytes
            let stage1 = try Network(model: loaded.model, stage: i1, context: context, residentWeights: false)
            let stage2 = try Network(model: loaded.model, stage: i2, context: context, residentWeights: false)
            let result = try compare(loaded.model, stage1, stage2, usePriors: true, expected: expected, name: "budget \(budget)",
                                     labels: "expected_labels.nii.gz", margin: "expected_margin.nii.gz", stage1: false,
                                     memoryBudget: budget + idle)
            XCTAssertEqual(result.labels, unbounded.labels, "budget \(budget): labels differ from the unbounded run")
            XCTAssertLessThanOrEqual(result.peakDeviceBytes, budget + idle, "budget \(budget): measured peak over the budget")
            if budget == minimum {
                XCTAssertGreaterThan(result.stages.map(\.tiles).max() ?? 1, 1, "the smallest budget should tile")
            }
        }
    }

    /// A budget stage 1 fits in but no tiling of some ROI does: refused before stage 2 runs.
    func testBudgetTooSmallForStage2IsRefusedBeforeStage2() throws {
        let loaded = try load()
        let (free1, free2) = try networks(loaded.model)
        let unbounded = try CascadeSegmentation.segment(loaded.image, model: loaded.model, stage1: free1, stage2: free2)
        func padded(_ size: SIMD3<Int>, _ multiple: [Int]) -> [Int] {
            [1, 1] + zip([size.z, size.y, size.x], multiple).map { ($0 + $1 - 1) / $1 * $1 }
        }
        let minimum1 = try free1.minimumMemoryBudget(inputShape: padded(unbounded.stage1Size, free1.graph.sizeMultiple))
        let minimum2 = try unbounded.rois.map { try free2.minimumMemoryBudget(inputShape: padded($0.inputSize, [1, 1, 1])) }.max() ?? 0
        XCTAssertGreaterThan(minimum2, minimum1, "the fixture's stage 2 needs more than its stage 1")
        free1.releaseDeviceWeights()
        free2.releaseDeviceWeights()
        let idle = free1.context.memory.liveBytes
        let (i1, i2) = try CascadeSegmentation.stageIndices(of: loaded.model)
        let stage1 = try Network(model: loaded.model, stage: i1, context: free1.context, residentWeights: false)
        let stage2 = try Network(model: loaded.model, stage: i2, context: free1.context, residentWeights: false)
        let lines = LineCollector()
        XCTAssertThrowsError(try CascadeSegmentation.segment(loaded.image, model: loaded.model, stage1: stage1, stage2: stage2,
                                                             options: .init(memoryBudget: idle + minimum1, progress: { lines.add($0) }))) { error in
            guard case CascadeSegError.budget(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("stage 2 needs") && message.contains("give at least \(idle + minimum2) bytes"), message)
        }
        XCTAssertTrue(lines.all.contains { $0.hasPrefix("stage 1") }, "stage 1 ran: \(lines.all)")
        XCTAssertFalse(lines.all.contains { $0.hasPrefix("stage 2: ROI") }, "no stage-2 run may start: \(lines.all)")
    }

    func testModelVariantsMatchTheReference() throws {
        let loaded = try load()
        let variants = try XCTUnwrap(loaded.expected["variants"] as? [[String: Any]])
        XCTAssertEqual(variants.count, 3)
        for variant in variants {
            let name = try XCTUnwrap(variant["name"] as? String)
            let model = try ModelFile(contentsOf: Self.folder.appendingPathComponent(try XCTUnwrap(variant["model"] as? String)).path)
            let (stage1, stage2) = try networks(model)
            try compare(model, stage1, stage2, usePriors: true, expected: try XCTUnwrap(variant["report"] as? [String: Any]), name: name,
                        labels: try XCTUnwrap(variant["labels"] as? String), margin: try XCTUnwrap(variant["margin"] as? String),
                        stage1: false)
        }
    }

    /// The planner alone on random problems (`planner_cases.json`): grids, spacings, multiples,
    /// minimum sizes, margins, label groups (some sharing a label), launch overheads, stage-1
    /// boxes and image boxes partly outside the image. The plans must be identical, order included.
    func testROIPlannerMatchesTheReferenceOnRandomProblems() throws {
        let data = try Data(contentsOf: Self.folder.appendingPathComponent("planner_cases.json"))
        let cases = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(cases.count, 200)
        func doubles(_ any: Any?) throws -> SIMD3<Double> {
            let v = try XCTUnwrap(any as? [Double])
            return SIMD3(v[0], v[1], v[2])
        }
        func boxes(_ any: Any?) throws -> [ROIPlanner.LabeledBox] {
            try XCTUnwrap(any as? [[Int]]).map {
                ROIPlanner.LabeledBox(label: $0[0], box: VoxelBox(lower: SIMD3($0[1], $0[2], $0[3]), upper: SIMD3($0[4], $0[5], $0[6])))
            }
        }
        func describe(_ r: [Any]) -> String { r.map { "\($0)" }.joined(separator: " ") }
        var merged = 0, wholeAxis = 0, differing = 0
        for (k, c) in cases.enumerated() {
            let planner = try ROIPlanner(imageSize: try xyz(c["image_size"]), imageSpacing: try doubles(c["spacing"]),
                                         stage1Size: try xyz(c["stage1_size"]), stage2Spacing: try doubles(c["stage2_spacing"]),
                                         marginMM: try XCTUnwrap(c["margin_mm"] as? Double), minROISize: try xyz(c["min_roi_size"]),
                                         sizeMultiple: try xyz(c["size_multiple"]), labelGroups: try XCTUnwrap(c["label_groups"] as? [[Int]]),
                                         launchOverheadVoxels: try XCTUnwrap(c["overhead"] as? Int))
            let rois = planner.plan(stage1Boxes: try boxes(c["stage1_boxes"]), imageBoxes: try boxes(c["image_boxes"]))
            let got: [[Any]] = rois.map {
                [$0.box.lower.x, $0.box.lower.y, $0.box.lower.z, $0.box.upper.x, $0.box.upper.y, $0.box.upper.z,
                 $0.stage2Size.x, $0.stage2Size.y, $0.stage2Size.z, $0.inputSize.x, $0.inputSize.y, $0.inputSize.z,
                 $0.cost, $0.labels, $0.sourceBoxes]
            }
            let want = try XCTUnwrap(c["rois"] as? [[Any]])
            let same = got.count == want.count && zip(got, want).allSatisfy { describe($0) == describe($1) }
            if !same {
                differing += 1
                if differing <= 5 {
                    XCTFail("case \(k): planner gives\n  \(got.map(describe))\nreference\n  \(want.map(describe))")
                }
            }
            merged += rois.filter { $0.sourceBoxes.count > 1 }.count
            wholeAxis += rois.filter { $0.inputSize != $0.stage2Size }.count
        }
        XCTAssertEqual(differing, 0, "\(differing) of \(cases.count) plans differ from the reference")
        XCTAssertGreaterThan(merged, 50, "the cases should merge boxes")
        XCTAssertGreaterThan(wholeAxis, 20, "the cases should pad whole-axis ROIs")
    }

    // MARK: - Comparison

    func ints(_ any: Any?, file: StaticString = #filePath, line: UInt = #line) throws -> [Int] {
        try XCTUnwrap(any as? [Int], "expected an integer array, got \(String(describing: any))", file: file, line: line)
    }

    func xyz(_ any: Any?) throws -> SIMD3<Int> {
        let v = try ints(any)
        XCTAssertEqual(v.count, 3)
        return SIMD3(v[0], v[1], v[2])
    }

    func compareStage1(_ result: CascadeSegmentation.Result, key: String) throws {
        let stage1 = try NpyFile.read(Self.folder.appendingPathComponent("expected_stage1.npy").path)
        let stage1Margin = try NpyFile.read(Self.folder.appendingPathComponent("expected_stage1_margin.npy").path)
        let n1 = result.stage1Size
        XCTAssertEqual(stage1.shape, [n1.z, n1.y, n1.x])
        XCTAssertEqual(result.stage1Labels.count, stage1.data.count)
        if result.stage1Labels.count == stage1.data.count {
            var differ: [String] = [], ties = 0
            for i in 0..<stage1.data.count where result.stage1Labels[i] != Int32(stage1.data[i]) {
                if stage1Margin.data[i] >= Self.nearTie {
                    differ.append("(\(i % n1.x), \(i / n1.x % n1.y), \(i / (n1.x * n1.y))): \(result.stage1Labels[i]) vs \(Int(stage1.data[i])) (gap \(stage1Margin.data[i]))")
                } else {
                    ties += 1
                }
            }
            XCTAssertTrue(differ.isEmpty, "\(key): \(differ.count) stage-1 voxels differ from the reference, e.g. \(differ.prefix(8))")
            XCTAssertEqual(ties, 0, "\(key): stage-1 voxels at near ties differ")
        }
    }

    /// Runs the cascade and compares it with one expected report (`expected.json`) and its label
    /// and margin maps; `stage1`: also the stored stage-1 label map (else its label counts).
    @discardableResult
    func compare(_ model: ModelFile, _ network1: Network, _ network2: Network, usePriors: Bool, expected: [String: Any],
                 name key: String, labels labelFile: String, margin marginFile: String, stage1 compareStage1Map: Bool,
                 memoryBudget: Int? = nil) throws -> CascadeSegmentation.Result {
        let image = try load().image
        let result = try CascadeSegmentation.segment(image, model: model, stage1: network1, stage2: network2,
                                                     options: .init(usePriors: usePriors, memoryBudget: memoryBudget))

        // Stage 1: grid and labels.
        XCTAssertEqual(result.stage1Size, try xyz(expected["stage1_size"]), "\(key): stage-1 grid")
        var stage1Counts: [String: Int] = [:]
        for v in result.stage1Labels { stage1Counts[String(v), default: 0] += 1 }
        XCTAssertEqual(stage1Counts, try XCTUnwrap(expected["stage1_label_voxels"] as? [String: Int]), "\(key): stage-1 voxels per label")
        if compareStage1Map { try compareStage1(result, key: key) }

        // The ROI plan, in plan order.
        let rois = try XCTUnwrap(expected["rois"] as? [[String: Any]])
        let got = result.rois.map { "\($0.labels) \($0.box) stage2 \($0.stage2Size) input \($0.inputSize) sources \($0.sourceBoxes) cost \($0.cost)" }
        XCTAssertEqual(result.rois.count, rois.count, "\(key): ROIs \(got)")
        for (i, (roi, want)) in zip(result.rois, rois).enumerated() {
            let context = "\(key) ROI \(i): got \(got[i]), expected \(want)"
            XCTAssertEqual(roi.box.lower, try xyz(want["lower"]), context)
            XCTAssertEqual(roi.box.upper, try xyz(want["upper"]), context)
            XCTAssertEqual(roi.labels, try ints(want["labels"]), context)
            XCTAssertEqual(roi.stage2Size, try xyz(want["stage2_size"]), context)
            XCTAssertEqual(roi.inputSize, try xyz(want["input_size"]), context)
            XCTAssertEqual(roi.sourceBoxes, try ints(want["source_boxes"]), context)
            XCTAssertEqual(roi.cost, want["cost"] as? Int, context)
        }

        XCTAssertEqual(result.stage1MissedLabels, try ints(expected["stage1_missed_labels"]), key)
        XCTAssertEqual(result.priorLabels, try ints(expected["prior_labels"]), key)
        XCTAssertEqual(result.missedLabels, try ints(expected["missed_labels"]), key)

        // Labels on the image grid, voxel by voxel, except near ties.
        let labels = try NiftiImage(contentsOf: Self.folder.appendingPathComponent(labelFile).path)
        let margin = try NiftiImage(contentsOf: Self.folder.appendingPathComponent(marginFile).path)
        let count = image.voxels.count
        XCTAssertEqual(labels.voxels.count, count)
        XCTAssertEqual(margin.voxels.count, count)
        XCTAssertEqual(result.labels.count, count)
        guard labels.voxels.count == count, margin.voxels.count == count, result.labels.count == count else { return result }
        var hard: [String] = [], soft = 0, near = 0
        var confusion: [String: Int] = [:]
        for i in 0..<count {
            if margin.voxels[i] < Self.nearTie { near += 1 }
            let want = Int32(labels.voxels[i]), have = result.labels[i]
            guard want != have else { continue }
            confusion["\(want)->\(have)", default: 0] += 1
            if margin.voxels[i] >= Self.nearTie {
                if hard.count < 10 {
                    hard.append("(\(i % image.nx), \(i / image.nx % image.ny), \(i / (image.nx * image.ny))): \(have) vs \(want) (margin \(margin.voxels[i]))")
                } else {
                    hard.append("")
                }
            } else {
                soft += 1
            }
        }
        XCTAssertTrue(hard.isEmpty, "\(key): \(hard.count) voxels decided with a margin >= \(Self.nearTie) differ from the reference (expected->got \(confusion)), e.g. \(hard.filter { !$0.isEmpty })")
        let allowed = max(1, Int(Double(count) * Self.tieFraction))
        XCTAssertLessThanOrEqual(soft, allowed, "\(key): \(soft) near-tie voxels differ (of \(near) near ties)")

        // The expected files agree with each other (label counts of the JSON report).
        let counts = try XCTUnwrap(expected["label_voxels"] as? [String: Int])
        var reference: [String: Int] = [:]
        for v in labels.voxels { reference[String(Int(v)), default: 0] += 1 }
        XCTAssertEqual(reference, counts, "\(key): \(labelFile) does not match expected.json")
        return result
    }
}

/// Collects progress lines from any thread.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}
