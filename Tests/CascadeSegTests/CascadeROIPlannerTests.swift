import XCTest
@testable import CascadeSeg

/// `ROIPlanner` (docs/PIPELINE.md): hand-made geometry (stage-1 mapping, margins on anisotropic
/// grids, borders, multiples, minimum sizes, stage-2 spacing, groups, merging), priors, and a
/// randomized property test of the plan's guarantees.
final class CascadeROIPlannerTests: XCTestCase {
    typealias Box = ROIPlanner.LabeledBox

    func planner(_ n: SIMD3<Int>, spacing: SIMD3<Double> = SIMD3(1, 1, 1), stage1: SIMD3<Int>? = nil,
                 stage2Spacing: SIMD3<Double>? = nil, margin: Double = 0, minROI: SIMD3<Int> = SIMD3(1, 1, 1),
                 multiple: SIMD3<Int> = SIMD3(1, 1, 1), groups: [[Int]] = [], overhead: Int = 0) throws -> ROIPlanner {
        try ROIPlanner(imageSize: n, imageSpacing: spacing, stage1Size: stage1 ?? n, stage2Spacing: stage2Spacing ?? spacing,
                       marginMM: margin, minROISize: minROI, sizeMultiple: multiple, labelGroups: groups,
                       launchOverheadVoxels: overhead)
    }

    func box(_ lower: SIMD3<Int>, _ upper: SIMD3<Int>) -> VoxelBox { VoxelBox(lower: lower, upper: upper) }
    func cube(_ lo: Int, _ hi: Int) -> VoxelBox { box(SIMD3(repeating: lo), SIMD3(repeating: hi)) }

    func testStage1BoxesMapToTheirFootprintInImageVoxels() throws {
        let p = try planner(SIMD3(30, 31, 7), stage1: SIMD3(10, 10, 7))
        XCTAssertEqual(p.imageBox(fromStage1: box(SIMD3(2, 2, 0), SIMD3(4, 4, 7))), box(SIMD3(6, 6, 0), SIMD3(12, 13, 7)))
        XCTAssertEqual(p.imageBox(fromStage1: box(SIMD3(9, 9, 6), SIMD3(10, 10, 7))), box(SIMD3(27, 27, 6), SIMD3(30, 31, 7)))
        let rois = p.plan(stage1Boxes: [Box(label: 4, box: box(SIMD3(2, 2, 0), SIMD3(4, 4, 7)))])
        XCTAssertEqual(rois.map(\.box), [box(SIMD3(6, 6, 0), SIMD3(12, 13, 7))])
        XCTAssertEqual(rois.map(\.labels), [[4]])
    }

    func testMarginInMillimetresOnAnAnisotropicGrid() throws {
        let p = try planner(SIMD3(100, 100, 40), spacing: SIMD3(0.5, 1, 2.5), margin: 5)
        let roi = p.plan([Box(label: 1, box: box(SIMD3(40, 40, 20), SIMD3(50, 50, 25)))])
        XCTAssertEqual(roi.map(\.box), [box(SIMD3(30, 35, 18), SIMD3(60, 55, 27))])   // 10, 5 and 2 voxels
        XCTAssertEqual(roi[0].stage2Size, SIMD3(30, 20, 9))
        XCTAssertEqual(roi[0].inputSize, SIMD3(30, 20, 9))
        // Division noise does not add a voxel (3 / 0.1 and 3 / 0.3 are not exact); 3.1 / 1 rounds up.
        let q = try planner(SIMD3(200, 200, 200), spacing: SIMD3(0.1, 0.3, 1), margin: 3)
        XCTAssertEqual(q.plan([Box(label: 1, box: cube(100, 101))])[0].box, box(SIMD3(70, 90, 97), SIMD3(131, 111, 104)))
        let r = try planner(SIMD3(200, 200, 200), margin: 3.1)
        XCTAssertEqual(r.plan([Box(label: 1, box: cube(100, 101))])[0].box, cube(96, 105))
    }

    func testClampingAtTheBorders() throws {
        let p = try planner(SIMD3(50, 40, 30), margin: 5)
        let roi = p.plan([Box(label: 2, box: box(SIMD3(0, 2, 27), SIMD3(3, 38, 30)))])[0]
        XCTAssertEqual(roi.box, box(SIMD3(0, 0, 22), SIMD3(8, 40, 30)))
        // Boxes reaching outside the image (e.g. priors) are cut to it; one wholly outside keeps a slab.
        let outside = p.plan([Box(label: 3, box: box(SIMD3(60, 10, 10), SIMD3(70, 12, 12)))])[0]
        XCTAssertEqual(outside.box, box(SIMD3(44, 5, 5), SIMD3(50, 17, 17)))
    }

    func testSizesRoundUpToTheMultipleSymmetricallyAndShiftInside() throws {
        let p = try planner(SIMD3(100, 100, 10), multiple: SIMD3(16, 16, 16))
        let middle = p.plan([Box(label: 1, box: box(SIMD3(40, 2, 0), SIMD3(60, 22, 10)))])[0]
        XCTAssertEqual(middle.box, box(SIMD3(34, 0, 0), SIMD3(66, 32, 10)))   // 20 -> 32: 6 each side; y shifted in
        XCTAssertEqual(middle.stage2Size, SIMD3(32, 32, 10))
        XCTAssertEqual(middle.inputSize, SIMD3(32, 32, 16))                     // z: the image is thinner than 16: pad
        XCTAssertEqual(middle.cost, 32 * 32 * 16)
        let high = p.plan([Box(label: 1, box: box(SIMD3(90, 0, 0), SIMD3(100, 16, 10)))])[0]
        XCTAssertEqual(high.box, box(SIMD3(84, 0, 0), SIMD3(100, 16, 10)))
    }

    func testMinimumROISizeIsInStage2Voxels() throws {
        let p = try planner(SIMD3(100, 100, 100), minROI: SIMD3(48, 20, 1), multiple: SIMD3(16, 16, 16))
        let roi = p.plan([Box(label: 1, box: cube(50, 60))])[0]
        XCTAssertEqual(roi.box, box(SIMD3(31, 39, 47), SIMD3(79, 71, 63)))
        XCTAssertEqual(roi.inputSize, SIMD3(48, 32, 16))
        // Stage 2 at twice the image spacing: sizes are counted in stage-2 voxels.
        let coarse = try planner(SIMD3(100, 50, 100), stage2Spacing: SIMD3(2, 2, 2), minROI: SIMD3(1, 1, 40), multiple: SIMD3(16, 16, 16))
        let c = coarse.plan([Box(label: 1, box: box(SIMD3(30, 5, 30), SIMD3(70, 45, 40)))])[0]
        XCTAssertEqual(c.box, box(SIMD3(18, 0, 0), SIMD3(82, 50, 96)))   // x: 40 -> 20 -> 32 stage-2 = 64 image voxels
        XCTAssertEqual(c.stage2Size, SIMD3(32, 25, 48))                  // y: 64 > 50, whole axis = 25 stage-2 voxels
        XCTAssertEqual(c.inputSize, SIMD3(32, 32, 48))                   // z: min 40 -> 48 stage-2 = 96 image voxels, shifted in
    }

    func testLabelGroupsShareOneROI() throws {
        let p = try planner(SIMD3(100, 100, 100), groups: [[1, 2]])
        let boxes = [Box(label: 1, box: cube(5, 10)), Box(label: 2, box: cube(80, 90)), Box(label: 3, box: box(SIMD3(80, 0, 0), SIMD3(90, 5, 5)))]
        let rois = p.plan(boxes)
        XCTAssertEqual(rois.map(\.labels), [[1, 2], [3]])
        XCTAssertEqual(rois[0].box, cube(5, 90))
        XCTAssertEqual(rois[0].sourceBoxes, [0, 1])
        XCTAssertEqual(try planner(SIMD3(100, 100, 100)).plan(boxes).map(\.labels), [[1], [2], [3]])
        // Groups that share a label are one group.
        XCTAssertEqual(try planner(SIMD3(100, 100, 100), groups: [[1, 2], [2, 3]]).plan(boxes).map(\.labels), [[1, 2, 3]])
    }

    func testMergingPaysForNearbyBoxesButNotForFarOnes() throws {
        let p = try planner(SIMD3(200, 200, 200), multiple: SIMD3(16, 16, 16), overhead: ROIPlanner.defaultLaunchOverheadVoxels)
        let a = Box(label: 1, box: cube(10, 20)), near = Box(label: 2, box: box(SIMD3(22, 10, 10), SIMD3(32, 20, 20)))
        let merged = p.plan([a, near])   // 2 x (16^3 + 32^3) = 73728 > 32x16x16 + 32^3 = 40960
        XCTAssertEqual(merged.count, 1)
        XCTAssertEqual(merged[0].labels, [1, 2])
        XCTAssertEqual(merged[0].box, box(SIMD3(5, 7, 7), SIMD3(37, 23, 23)))
        XCTAssertEqual(merged[0].cost, 32 * 16 * 16 + 32768)
        let far = Box(label: 2, box: cube(100, 110))   // merged: 112^3 voxels
        XCTAssertEqual(p.plan([a, far]).map(\.labels), [[1], [2]])
        // Without a launch overhead, boxes merge only when the union is strictly cheaper.
        let q = try planner(SIMD3(64, 64, 64), multiple: SIMD3(16, 16, 16))
        let left = Box(label: 1, box: box(.zero, SIMD3(16, 16, 16))), right = Box(label: 2, box: box(SIMD3(16, 0, 0), SIMD3(32, 16, 16)))
        XCTAssertEqual(q.plan([left, right]).count, 2)
        let inside = Box(label: 2, box: cube(4, 8))
        XCTAssertEqual(q.plan([left, inside]).map(\.labels), [[1, 2]])
    }

    func testPriorsAndTheForegroundBox() throws {
        var v = Volume(size: SIMD3(6, 5, 4), repeating: 0)
        v[x: 1, y: 2, z: 3] = 5
        v[x: 4, y: 0, z: 1] = 2
        XCTAssertEqual(ROIPlanner.foregroundBox(of: v), box(SIMD3(1, 0, 1), SIMD3(5, 3, 4)))
        XCTAssertEqual(ROIPlanner.foregroundBox(of: v, threshold: 3), box(SIMD3(1, 2, 3), SIMD3(2, 3, 4)))
        XCTAssertNil(ROIPlanner.foregroundBox(of: v, threshold: 10))

        let fg = box(SIMD3(10, 20, 0), SIMD3(110, 70, 40))
        // [z0, y0, x0, z1, y1, x1]
        XCTAssertEqual(ROIPlanner.priorBox(fractions: [0.25, 0, 0.5, 0.5, 1, 0.75], foregroundBox: fg),
                       box(SIMD3(60, 20, 10), SIMD3(85, 70, 20)))
        XCTAssertEqual(ROIPlanner.priorBox(fractions: [0.3, 0.3, 0.3, 0.3, 0.7, 2], foregroundBox: fg, imageSize: SIMD3(120, 80, 40)),
                       box(SIMD3(40, 35, 12), SIMD3(120, 55, 13)))
        XCTAssertEqual(ROIPlanner.priorBox(fractions: [0, 0, 1.5, 1, 1, 2], foregroundBox: fg, imageSize: SIMD3(120, 80, 40)),
                       box(SIMD3(119, 20, 0), SIMD3(120, 70, 40)))
    }

    func testPlannerFromTheModelsCascadeRules() throws {
        let cascade = ModelMetadata.Cascade(stage1: "s1", stage2: "s2", marginMM: 7, minROISize: [8, 16, 32], labelGroups: [[1, 2]])
        let p = try ROIPlanner(cascade: cascade, imageSize: SIMD3(100, 90, 80), imageSpacing: SIMD3(1, 1, 1.5),
                               stage1Size: SIMD3(50, 45, 40), stage2SpacingMM: [3, 2, 1], sizeMultiple: [4, 8, 16])
        XCTAssertEqual(p.minROISize, SIMD3(32, 16, 8))
        XCTAssertEqual(p.stage2Spacing, SIMD3(1, 2, 3))
        XCTAssertEqual(p.sizeMultiple, SIMD3(16, 8, 4))
        XCTAssertEqual(p.labelGroups, [[1, 2]])
        XCTAssertEqual(p.launchOverheadVoxels, 32768)
        XCTAssertThrowsError(try planner(SIMD3(10, 10, 10), multiple: SIMD3(16, 0, 16)))
        XCTAssertThrowsError(try planner(SIMD3(10, 10, 10), margin: -1))
        XCTAssertThrowsError(try planner(SIMD3(10, 10, 10), stage2Spacing: SIMD3(1, .nan, 1)))
    }

    /// Random grids, rules and boxes: every box inside an ROI that serves its label, groups kept
    /// together, ROIs inside the image, sizes multiples (padded only where the image is too
    /// small), and no pair of ROIs left that would be cheaper merged.
    func testRandomPlansKeepTheirGuarantees() throws {
        var rng = SeededRandom(seed: 7)
        var merged = 0, padded = 0, resampled = 0
        func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + Int(rng.next() % UInt64(r.count)) }
        func double(_ r: ClosedRange<Double>) -> Double { r.lowerBound + (r.upperBound - r.lowerBound) * rng.unit() }
        for trial in 0..<150 {
            let n = SIMD3(int(5...120), int(5...120), int(3...80))
            let spacing = SIMD3(double(0.4...3), double(0.4...3), double(0.4...5))
            let stage2 = trial % 3 == 0 ? SIMD3(double(0.5...3), double(0.5...3), double(0.5...3)) : spacing
            let stage1 = SIMD3(max(1, n.x / int(1...4)), max(1, n.y / int(1...4)), max(1, n.z / int(1...3)))
            let multiple = SIMD3([1, 2, 8, 16, 32][int(0...4)], [1, 8, 16][int(0...2)], [1, 4, 16][int(0...2)])
            let groups = trial % 2 == 0 ? [[1, 2], [3, 4, 5]] : trial % 5 == 1 ? [[2, 6]] : []
            let p = try planner(n, spacing: spacing, stage1: stage1, stage2Spacing: stage2, margin: double(0...12),
                                minROI: SIMD3(int(1...40), int(1...40), int(1...20)), multiple: multiple,
                                groups: groups, overhead: [0, 4096, 32768][int(0...2)])
            var boxes = [Box]()
            for _ in 0..<int(1...10) {
                var lower = SIMD3<Int>(), upper = SIMD3<Int>()
                for a in 0..<3 { lower[a] = int(0...(stage1[a] - 1)); upper[a] = min(stage1[a], lower[a] + int(1...max(1, stage1[a] / 3))) }
                boxes.append(Box(label: int(1...6), box: VoxelBox(lower: lower, upper: upper)))
            }
            let priors = trial % 4 == 0 ? [Box(label: 6, box: VoxelBox(lower: n &- 3, upper: n &+ 5))] : []
            let rois = p.plan(stage1Boxes: boxes, imageBoxes: priors)
            let all = boxes.map { Box(label: $0.label, box: p.imageBox(fromStage1: $0.box)) } + priors.map { Box(label: $0.label, box: $0.box.clamped(to: n)) }
            var margin = SIMD3<Int>()
            for a in 0..<3 { margin[a] = Int((p.marginMM / spacing[a] - 1e-9).rounded(.up)) }
            let context = "trial \(trial): \(n) \(p)"

            XCTAssertEqual(rois.flatMap(\.sourceBoxes).sorted(), Array(all.indices), context)
            for (i, b) in all.enumerated() {
                guard let roi = rois.first(where: { $0.sourceBoxes.contains(i) }) else { continue }
                let grown = VoxelBox(lower: b.box.lower &- margin, upper: b.box.upper &+ margin).clamped(to: n)
                XCTAssertTrue(roi.box.contains(grown), "\(context): \(b) grown \(grown) not in \(roi)")
                XCTAssertTrue(roi.labels.contains(b.label), context)
                if i < boxes.count {   // the stage-1 footprint is covered
                    for a in 0..<3 {
                        XCTAssertLessThanOrEqual(Double(b.box.lower[a]), Double(boxes[i].box.lower[a] * n[a]) / Double(stage1[a]))
                        XCTAssertGreaterThanOrEqual(Double(b.box.upper[a]), Double(boxes[i].box.upper[a] * n[a]) / Double(stage1[a]))
                    }
                }
            }
            for group in groups {
                let serving = Set(rois.indices.filter { !Set(rois[$0].labels).isDisjoint(with: group) })
                XCTAssertLessThanOrEqual(serving.count, 1, context)
            }
            for roi in rois {
                if roi.sourceBoxes.count > 1 { merged += 1 }
                if roi.stage2Size != roi.inputSize { padded += 1 }
                if roi.stage2Size != roi.box.size { resampled += 1 }
                XCTAssertFalse(roi.box.isEmpty, context)
                XCTAssertTrue(VoxelBox(size: n).contains(roi.box), context)
                XCTAssertEqual(roi.labels, Set(roi.sourceBoxes.map { all[$0].label }).sorted(), context)
                XCTAssertEqual(roi.cost, roi.inputSize.x * roi.inputSize.y * roi.inputSize.z + p.launchOverheadVoxels)
                for a in 0..<3 {
                    XCTAssertEqual(roi.inputSize[a] % multiple[a], 0, context)
                    XCTAssertGreaterThanOrEqual(roi.inputSize[a], p.minROISize[a], context)
                    XCTAssertLessThanOrEqual(roi.stage2Size[a], roi.inputSize[a], context)
                    if roi.box.size[a] < n[a] { XCTAssertEqual(roi.stage2Size[a], roi.inputSize[a], context) }
                    if stage2 == spacing && roi.box.size[a] < n[a] { XCTAssertEqual(roi.box.size[a], roi.inputSize[a], context) }
                }
            }
            // Greedy termination: no two ROIs left whose merge would pay.
            for i in rois.indices {
                for j in rois.indices where j > i {
                    // Merging the boxes costs at least as much as merging their cores (the cost
                    // grows with the core), which the planner found not to pay.
                    let union = p.fit(rois[i].box.union(rois[j].box))
                    XCTAssertGreaterThanOrEqual(union.cost, rois[i].cost + rois[j].cost, context)
                }
            }
        }
        // The trials reach every branch: merges, padding of thin images, stage-2 resampling.
        XCTAssertGreaterThan(merged, 20)
        XCTAssertGreaterThan(padded, 10)
        XCTAssertGreaterThan(resampled, 10)
    }

    func testBoxesFromComponents() {
        let labeling = ConnectedComponents.label(labelMap: [1, 1, 0, 2, 0, 1, 3, 3, 3] as [Int32], size: SIMD3(9, 1, 1))
        XCTAssertEqual(ROIPlanner.boxes(of: labeling, minimumVoxels: 2, excluding: [3]),
                       [Box(label: 1, box: box(.zero, SIMD3(2, 1, 1)))])
        XCTAssertEqual(ROIPlanner.boxes(of: labeling).map(\.label), [1, 2, 1, 3])
    }
}
