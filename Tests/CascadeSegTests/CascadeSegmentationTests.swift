import Foundation
import XCTest
@testable import CascadeSeg

/// The two-stage cascade on phantoms whose result is known: both stages are nearest-intensity
/// classifiers over the phantom's intensities (`CascadeTestModels`), so stage 2 at the image
/// spacing labels every structure voxel exactly, and what the cascade adds (which regions stage 2
/// sees, which labels each region may set, priors, missed labels) can be checked voxel by voxel.
final class CascadeSegmentationTests: XCTestCase {
    var context: ComputeContext!

    override func setUpWithError() throws {
        context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
    }

    func networks(_ model: ModelFile) throws -> (Network, Network) {
        (try Network(model: model, stage: 1, context: context), try Network(model: model, stage: 2, context: context))
    }

    func cascade(_ image: NiftiImage, _ model: ModelFile, usePriors: Bool = true,
                 progress: (@Sendable (String) -> Void)? = nil) throws -> CascadeSegmentation.Result {
        let (one, two) = try networks(model)
        return try CascadeSegmentation.segment(image, model: model, stage1: one, stage2: two,
                                               options: .init(usePriors: usePriors, progress: progress))
    }

    func point(_ i: Int, _ size: SIMD3<Int>) -> SIMD3<Int> { SIMD3(i % size.x, (i / size.x) % size.y, i / (size.x * size.y)) }

    /// Whether voxel `i` lies in an ROI that lists `label`.
    func covered(_ i: Int, label: Int32, by rois: [ROIPlanner.ROI], size: SIMD3<Int>) -> Bool {
        let p = point(i, size)
        return rois.contains { $0.labels.contains(Int(label)) && $0.box.contains(x: p.x, y: p.y, z: p.z) }
    }

    /// The tight box of a label's voxels, as prior fractions [z0, y0, x0, z1, y1, x1] of the
    /// whole grid (the filled phantom's foreground box), widened by `slack` on each side.
    func priorFractions(of label: Int32, in phantom: Phantom, slack: Double = 0.03) -> [Double] {
        let size = phantom.image.size
        var lo = size, hi = SIMD3<Int>(repeating: -1)
        for i in phantom.labels.indices where phantom.labels[i] == label {
            let p = point(i, size)
            lo = pointwiseMin(lo, p); hi = pointwiseMax(hi, p)
        }
        let n = SIMD3<Double>(size)
        let f0 = SIMD3<Double>(lo) / n - slack, f1 = SIMD3<Double>(hi &+ 1) / n + slack
        return [f0.z, f0.y, f0.x, f1.z, f1.y, f1.x].map { min(1, max(0, $0)) }
    }

    // MARK: - The whole cascade

    func testEveryStructureLiesInAnROIPlannedForIt() throws {
        // Label 5's intensity (3.0) occurs nowhere: both stages miss it, and it is reported.
        let model = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5], extraIntensities: [5: 3.0])
        let (image, phantom) = try CascadeTestModels.phantomImage()
        let lines = LineLog()
        let r = try cascade(image, model, progress: { lines.append($0) })
        let size = phantom.image.size

        XCTAssertEqual(r.stage1Size, SIMD3(32, 32, 32), "48 voxels of 1 mm at 1.5 mm")
        XCTAssertEqual(r.stage1Labels.count, 32 * 32 * 32)
        XCTAssertEqual(r.stage1MissedLabels, [5])
        XCTAssertEqual(r.missedLabels, [5])
        XCTAssertEqual(r.priorLabels, [])
        XCTAssertFalse(r.rois.isEmpty)
        for structure in phantom.structures {
            let voxels = phantom.labels.indices.filter { phantom.labels[$0] == structure.id }
            XCTAssertFalse(voxels.isEmpty)
            let outside = voxels.filter { !covered($0, label: structure.id, by: r.rois, size: size) }
            XCTAssertEqual(outside.count, 0, "\(structure.name): \(outside.count) of \(voxels.count) voxels in no ROI planned for it")
        }
        // The ROIs are a cascade's, not the whole image, and follow the planner's guarantees.
        XCTAssertLessThan(r.rois.map { $0.box.voxelCount }.reduce(0, +), size.x * size.y * size.z / 2)
        for roi in r.rois {
            XCTAssertEqual(VoxelBox(size: size).intersection(roi.box), roi.box)
            XCTAssertEqual(roi.stage2Size, roi.box.size, "stage 2 runs at the image spacing")
            XCTAssertEqual(roi.inputSize.x % 8, 0); XCTAssertEqual(roi.inputSize.y % 8, 0); XCTAssertEqual(roi.inputSize.z % 8, 0)
        }
        // Stage 2 classifies every voxel it sees exactly, so the cascade reproduces the phantom.
        XCTAssertEqual(zip(r.labels, phantom.labels).filter { $0 != $1 }.count, 0)

        XCTAssertEqual(r.stages.map(\.stage), [1, 2])
        XCTAssertEqual(r.stages[0].grid, r.stage1Size)
        XCTAssertEqual(r.stages[0].runs, 1)
        XCTAssertEqual(r.stages[1].runs, r.rois.count)
        let volumes: [Int] = r.rois.map { $0.inputSize.x * $0.inputSize.y * $0.inputSize.z }
        let largest: Int = volumes.indices.max { volumes[$0] < volumes[$1] }!
        XCTAssertEqual(r.stages[1].grid, r.rois[largest].inputSize)
        XCTAssertEqual(r.stages.map(\.tiles), [1, 1])
        XCTAssertGreaterThan(r.stages[0].peakDeviceBytes, 0)
        XCTAssertGreaterThanOrEqual(r.peakDeviceBytes, r.stages.map(\.peakDeviceBytes).max()!)
        XCTAssertTrue(lines.lines.first?.hasPrefix("stage 1: grid 32x32x32") ?? false, "\(lines.lines)")
        XCTAssertEqual(lines.lines.filter { $0.hasPrefix("stage 2: ROI ") }.count, r.rois.count, "\(lines.lines)")
        XCTAssertTrue(lines.lines.contains { $0.hasPrefix("stage 2: ROI 1/\(r.rois.count) labels \(r.rois[0].labels) input ") }, "\(lines.lines)")
    }

    func testCascadeIsSingleStageWhereAnROIListsTheLabelAndBackgroundElsewhere() throws {
        // Stage 1 does not know label 2 (sphere_small), stage 2 does: the single-stage run of
        // stage 2 finds the sphere; the cascade has no ROI for it and must leave it background,
        // even where an ROI planned for other labels covers it.
        let model = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5], stage1Unknown: [2])
        let (image, phantom) = try CascadeTestModels.phantomImage()
        let (one, two) = try networks(model)
        let r = try CascadeSegmentation.segment(image, model: model, stage1: one, stage2: two)
        let single = try WholeVolumeSegmentation.segment(image, model: model, stageIndex: 2, network: two)
        let size = phantom.image.size

        XCTAssertEqual(r.stage1MissedLabels, [2])
        XCTAssertEqual(r.missedLabels, [2])
        XCTAssertFalse(r.rois.contains { $0.labels.contains(2) })
        XCTAssertEqual(single.labels, phantom.labels, "stage 2 over the whole image is exact on the phantom")
        var mismatches = 0, clearedInsideROIs = 0
        for i in r.labels.indices {
            let s = single.labels[i]
            let expected: Int32 = s == 0 || covered(i, label: s, by: r.rois, size: size) ? s : 0
            if r.labels[i] != expected { mismatches += 1 }
            if s == 2, r.rois.contains(where: { let p = point(i, size); return $0.box.contains(x: p.x, y: p.y, z: p.z) }) {
                clearedInsideROIs += 1
            }
        }
        XCTAssertEqual(mismatches, 0)
        XCTAssertGreaterThan(clearedInsideROIs, 0, "the sphere should lie inside an ROI planned for other labels")
        XCTAssertTrue(phantom.labels.indices.filter { phantom.labels[$0] == 2 }.allSatisfy { r.labels[$0] == 0 })
        for label in Int32(1)...4 where label != 2 {
            XCTAssertEqual(r.labels.filter { $0 == label }.count, phantom.labels.filter { $0 == label }.count, "label \(label)")
        }
    }

    func testPriorBoxesStandInForWhatStage1Misses() throws {
        let (image, phantom) = try CascadeTestModels.phantomImage()
        // Stage 1 does not know the tube (3). Label 1 has a prior too, but stage 1 finds it.
        let priors: [ModelMetadata.PriorBox] = [.init(label: 3, box: priorFractions(of: 3, in: phantom)),
                                                .init(label: 1, box: [0, 0, 0, 0.2, 0.2, 0.2])]
        let model = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5], stage1Unknown: [3], priors: priors)
        let with = try cascade(image, model)
        XCTAssertEqual(with.stage1MissedLabels, [3])
        XCTAssertEqual(with.priorLabels, [3])
        XCTAssertEqual(with.missedLabels, [])
        XCTAssertTrue(with.rois.contains { $0.labels.contains(3) })
        XCTAssertEqual(zip(with.labels, phantom.labels).filter { $0 != $1 }.count, 0, "the prior's ROI recovers the whole tube")

        let without = try cascade(image, model, usePriors: false)
        XCTAssertEqual(without.stage1MissedLabels, [3])
        XCTAssertEqual(without.priorLabels, [])
        XCTAssertEqual(without.missedLabels, [3])
        XCTAssertFalse(without.rois.contains { $0.labels.contains(3) })
        XCTAssertFalse(without.labels.contains(3))
    }

    func testTooLittleOfALabelInStage1CallsItsPrior() throws {
        let (image, phantom) = try CascadeTestModels.phantomImage()
        let box = priorFractions(of: 1, in: phantom)
        // Stage 1 finds some of sphere_large (label 1): a few mm3 at 1.5 mm.
        let huge = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5], priors: [.init(label: 1, box: box, minVolumeMM3: 1e6)])
        let r = try cascade(image, huge)
        XCTAssertEqual(r.stage1MissedLabels, [])
        XCTAssertEqual(r.priorLabels, [1], "found, but less than min_volume_mm3")
        let small = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5], priors: [.init(label: 1, box: box, minVolumeMM3: 1)])
        XCTAssertEqual(try cascade(image, small).priorLabels, [], "found more than min_volume_mm3")
    }

    func testStage2AtAFinerSpacingResamplesEachROIAndItsLogits() throws {
        // Stage 2 at 0.5 mm: each crop is upsampled 2x and its logits come back to the box.
        let model = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5], stage2Spacing: [0.5, 0.5, 0.5])
        let (image, phantom) = try CascadeTestModels.phantomImage()
        let r = try cascade(image, model)
        let size = phantom.image.size
        for roi in r.rois { XCTAssertEqual(roi.stage2Size, roi.box.size &* 2, "\(roi)") }
        for i in r.labels.indices where r.labels[i] != 0 {
            XCTAssertTrue(covered(i, label: r.labels[i], by: r.rois, size: size), "voxel \(point(i, size)) labelled outside its ROIs")
        }
        // The isolated structures of distinct intensity survive the round trip almost voxel for
        // voxel; a misplaced or transposed resampling would lose the small sphere.
        for label: Int32 in [2, 4] {
            let truth = phantom.labels.indices.filter { phantom.labels[$0] == label }
            let hit = truth.filter { r.labels[$0] == label }.count
            XCTAssertGreaterThanOrEqual(Double(hit), 0.9 * Double(truth.count), "label \(label): \(hit) of \(truth.count)")
        }
    }

    // MARK: - Edge cases

    func testAllZeroImageFindsNothingAndReportsEveryLabelMissed() throws {
        let model = CascadeTestModels.cascade(priors: [.init(label: 3, box: [0.2, 0.2, 0.2, 0.8, 0.8, 0.8])])
        let geometry = try NiftiGeometry(nx: 20, ny: 18, nz: 16, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        let image = try NiftiImage(voxels: [Float](repeating: 0, count: 20 * 18 * 16), geometry: geometry)
        let r = try cascade(image, model)
        XCTAssertEqual(r.labels, [Int32](repeating: 0, count: 20 * 18 * 16))
        XCTAssertEqual(r.rois, [])
        XCTAssertEqual(r.priorLabels, [], "an image without foreground uses no priors")
        XCTAssertEqual(r.stage1MissedLabels, [1, 2, 3, 4])
        XCTAssertEqual(r.missedLabels, [1, 2, 3, 4])
        XCTAssertEqual(r.stages[1].runs, 0)
        XCTAssertEqual(r.stages[1].grid, .zero)
    }

    func testImageSmallerThanTheNetworkInputIsPadded() throws {
        // 3x3x3 voxels of sphere_large's intensity: stage 1 sees a 2x2x2 grid, stage 2 a 3x3x3
        // ROI (the whole image) padded to the 16-voxel minimum.
        let model = CascadeTestModels.cascade(stage1Spacing: [1.5, 1.5, 1.5])
        let geometry = try NiftiGeometry(nx: 3, ny: 3, nz: 3, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        let image = try NiftiImage(voxels: [Float](repeating: 0.9, count: 27), geometry: geometry)
        let r = try cascade(image, model)
        XCTAssertEqual(r.stage1Size, SIMD3(2, 2, 2))
        XCTAssertEqual(r.rois.count, 1)
        XCTAssertEqual(r.rois.first?.box, VoxelBox(size: SIMD3(3, 3, 3)))
        XCTAssertEqual(r.rois.first?.stage2Size, SIMD3(3, 3, 3))
        XCTAssertEqual(r.rois.first?.inputSize, SIMD3(16, 16, 16))
        XCTAssertEqual(r.labels, [Int32](repeating: 1, count: 27))
        XCTAssertEqual(r.missedLabels, [2, 3, 4])
    }

    func testNonFiniteVoxelsAreRefusedBeforeAnyNetworkRuns() throws {
        let model = CascadeTestModels.cascade()   // normalization "none": nothing else would look
        var (image, _) = try CascadeTestModels.phantomImage(size: SIMD3(16, 16, 16))
        image.voxels[5] = .nan
        image.voxels[77] = -.infinity
        let lines = LineLog()
        XCTAssertThrowsError(try cascade(image, model, progress: { lines.append($0) })) { error in
            XCTAssertTrue("\(error)".contains("2 NaN or infinite voxels"), "\(error)")
        }
        XCTAssertEqual(lines.lines, [], "no stage may have run")
    }

    func testAModelWithoutCascadeOrWithSwappedNetworksIsRefused() throws {
        let model = CascadeTestModels.cascade()
        let (image, _) = try CascadeTestModels.phantomImage(size: SIMD3(16, 16, 16))
        let (one, two) = try networks(model)
        var single = model
        single.metadata.cascade = nil
        XCTAssertThrowsError(try CascadeSegmentation.segment(image, model: single, stage1: one, stage2: two)) { error in
            guard case CascadeSegError.invalidModel(let m) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(m.contains("no `cascade` section"), m)
        }
        XCTAssertThrowsError(try CascadeSegmentation.segment(image, model: model, stage1: two, stage2: one)) { error in
            XCTAssertTrue("\(error)".contains("stage-1 network runs graph 'roi'"), "\(error)")
        }
    }

    // MARK: - The paste rule (step 7), on handcrafted logits

    func testPasteTakesTheMostConfidentROIThatMaySetTheLabel() {
        // A 4x1x1 image; ROI A covers x 0..<3 and may set label 1, ROI B covers x 1..<4 and may
        // set label 2. Channels are labels 0, 1, 2.
        let labelOfChannel: [Int32] = [0, 1, 2]
        func logits(_ perVoxel: [[Float]]) -> ClassLogits {
            // perVoxel[i] = scores of voxel i; stored channel-major.
            let n = perVoxel.count
            return ClassLogits(size: SIMD3(n, 1, 1), channels: 3, values: (0..<3).flatMap { k in (0..<n).map { perVoxel[$0][k] } })
        }
        var paste = ROIPaste(size: SIMD3(4, 1, 1))
        XCTAssertEqual(paste.labels, [0, 0, 0, 0])
        XCTAssertEqual(paste.probabilities, [-1, -1, -1, -1])
        paste.paste(logits([[0, 2, 0],     // x0: label 1
                            [0, 1, 0],     // x1: label 1, p = e / (2 + e) = 0.576
                            [0, 3, 0]]),   // x2: label 1, p = e^3 / (2 + e^3) = 0.909
                    at: VoxelBox(lower: SIMD3(0, 0, 0), upper: SIMD3(3, 1, 1)), labels: [1], labelOfChannel: labelOfChannel)
        XCTAssertEqual(paste.labels, [1, 1, 1, 0])
        XCTAssertEqual(paste.probabilities[1], Float(exp(1.0) / (2 + exp(1.0))), accuracy: 1e-6)
        paste.paste(logits([[0, 0, 2],     // x1: label 2, p = 0.787 > 0.576: B wins
                            [0, 9, 0],     // x2: label 1, not B's to set: A's label 1 stays
                            [0, 0, 1]]),   // x3: label 2, first to set it
                    at: VoxelBox(lower: SIMD3(1, 0, 0), upper: SIMD3(4, 1, 1)), labels: [2], labelOfChannel: labelOfChannel)
        XCTAssertEqual(paste.labels, [1, 2, 1, 2])
        XCTAssertEqual(paste.probabilities[2], Float(exp(3.0) / (2 + exp(3.0))), accuracy: 1e-6, "B's label 1 changed nothing")

        // Background may be set by every ROI.
        paste.paste(logits([[5, 0, 0]]),   // x0: background, p = e^5 / (e^5 + 2) = 0.987 > label 1's 0.787
                    at: VoxelBox(lower: SIMD3(0, 0, 0), upper: SIMD3(1, 1, 1)), labels: [2], labelOfChannel: labelOfChannel)
        XCTAssertEqual(paste.labels, [0, 2, 1, 2])
        XCTAssertEqual(paste.probabilities[0], Float(exp(5.0) / (exp(5.0) + 2)), accuracy: 1e-6)

        // An exact tie between two labels (every other score underflows: p = 1 for both).
        var tie = ROIPaste(size: SIMD3(1, 1, 1))
        let one = VoxelBox(size: SIMD3(1, 1, 1))
        tie.paste(logits([[0, 200, 0]]), at: one, labels: [1], labelOfChannel: labelOfChannel)
        tie.paste(logits([[0, 0, 200]]), at: one, labels: [2], labelOfChannel: labelOfChannel)
        XCTAssertEqual(tie.probabilities, [1])
        XCTAssertEqual(tie.labels, [1], "on a tie the earlier ROI keeps the voxel")
    }

    func testArgMaxTakesTheFirstMaximumAndChannelsMapToLabels() throws {
        let logits = ClassLogits(size: SIMD3(2, 1, 1), channels: 3, values: [1, 0, 1, 2, 0, 2])
        XCTAssertEqual(logits.argMax(labelOfChannel: [0, 4, 9]), [0, 4], "voxel 0: tie of channels 0 and 1 -> 0; voxel 1: tie of 1 and 2 -> 4")
        let table: [ModelMetadata.Label] = [.init(id: 9, name: "c"), .init(id: 0, name: "a"), .init(id: 4, name: "b")]
        XCTAssertEqual(try ClassLogits.labelOfChannel(table, channels: 3), [0, 4, 9], "one entry per channel: sorted ids")
        XCTAssertEqual(try ClassLogits.labelOfChannel(Array(table.prefix(2).reversed()), channels: 12).count, 12)
        XCTAssertThrowsError(try ClassLogits.labelOfChannel(table, channels: 5)) { error in
            XCTAssertTrue("\(error)".contains("id 9"), "\(error)")
        }
        XCTAssertEqual(logits.resampled(to: logits.size), logits)
    }

    func testNetworkOutputsAreCroppedAndChecked() throws {
        // 2 channels on a padded 1x2x3 (D, H, W) grid; the volume is 2x1x1 (x, y, z).
        let output = Tensor(shape: [1, 2, 1, 2, 3], data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        let cropped = try ClassLogits(networkOutput: output, graphName: "g", croppedTo: SIMD3(2, 1, 1))
        XCTAssertEqual(cropped.values, [1, 2, 7, 8])
        XCTAssertEqual(try ClassLogits(networkOutput: output, graphName: "g", croppedTo: SIMD3(3, 2, 1)).values, output.data)
        var broken = output
        broken.data[8] = .nan
        XCTAssertThrowsError(try ClassLogits(networkOutput: broken, graphName: "g", croppedTo: SIMD3(3, 2, 1))) { error in
            XCTAssertTrue("\(error)".contains("1 NaN or infinite logits"), "\(error)")
        }
        XCTAssertNoThrow(try ClassLogits(networkOutput: broken, graphName: "g", croppedTo: SIMD3(2, 1, 1)), "the NaN is in the padding")
        XCTAssertThrowsError(try ClassLogits(networkOutput: Tensor(shape: [1, 1, 1, 2, 3], data: [Float](repeating: 0, count: 6)),
                                             graphName: "argmax", croppedTo: SIMD3(3, 2, 1))) { error in
            XCTAssertTrue("\(error)".contains("K >= 2"), "\(error)")
        }
    }
}

/// Lines a progress callback received (it may be called from any thread).
final class LineLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ line: String) { lock.lock(); stored.append(line); lock.unlock() }
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return stored }
}
