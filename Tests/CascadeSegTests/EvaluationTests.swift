import Foundation
import XCTest
@testable import CascadeSeg

/// Segmentation metrics (docs/METRICS.md): the distance transform against brute force, the
/// surface definition, Dice/IoU by hand, HD95 against MONAI's numbers (fixtures made by
/// tools/make_metric_fixtures.py), the empty-label rules, and NIfTI files end to end.
final class EvaluationTests: XCTestCase {
    static var fixtures: URL {
        Bundle.module.resourceURL!.appendingPathComponent("Fixtures").appendingPathComponent("metrics")
    }

    // MARK: - Distance transform

    /// min over features of (sx dx)^2 + (sy dy)^2 + (sz dz)^2, by trying every pair.
    func bruteForceSquaredDistances(_ features: [Bool], _ g: MetricGrid) -> [Double] {
        var points: [(Int, Int, Int)] = []
        for z in 0..<g.nz { for y in 0..<g.ny { for x in 0..<g.nx where features[x + g.nx * (y + g.ny * z)] { points.append((x, y, z)) } } }
        var out = [Double](repeating: .infinity, count: g.voxelCount)
        for z in 0..<g.nz {
            for y in 0..<g.ny {
                for x in 0..<g.nx {
                    var best = Double.infinity
                    for (px, py, pz) in points {
                        let dx = g.spacing.x * Double(x - px), dy = g.spacing.y * Double(y - py), dz = g.spacing.z * Double(z - pz)
                        best = min(best, dx * dx + dy * dy + dz * dz)
                    }
                    out[x + g.nx * (y + g.ny * z)] = best
                }
            }
        }
        return out
    }

    func testDistanceTransformMatchesBruteForceWithAnisotropicSpacing() {
        var random = SeededRandom(seed: 31)
        let shapes = [(7, 5, 6), (9, 4, 3), (1, 8, 5), (6, 1, 1), (5, 6, 1), (4, 4, 9), (11, 7, 5)]
        var checked = 0
        for (nx, ny, nz) in shapes {
            for density in [0.01, 0.05, 0.3, 0.8] {
                let spacing = (x: 0.3 + 2.7 * random.unit(), y: 0.3 + 2.7 * random.unit(), z: 0.3 + 2.7 * random.unit())
                let grid = MetricGrid(nx: nx, ny: ny, nz: nz, spacing: spacing)
                var mask = (0..<grid.voxelCount).map { _ in random.unit() < density }
                if !mask.contains(true) { mask[Int(random.next() % UInt64(mask.count))] = true }
                let fast = DistanceTransform.squaredDistances(toFeatures: mask, in: grid)
                let slow = bruteForceSquaredDistances(mask, grid)
                for i in fast.indices where abs(fast[i] - slow[i]) > 1e-9 * max(1, slow[i]) {
                    XCTFail("\(grid), density \(density): voxel \(i) has squared distance \(fast[i]), brute force \(slow[i])")
                    break
                }
                let d = DistanceTransform.distances(toFeatures: mask, in: grid)
                XCTAssertEqual(d[0], slow[0].squareRoot(), accuracy: 1e-9)
                checked += 1
            }
        }
        XCTAssertEqual(checked, shapes.count * 4)
    }

    /// A grid large enough for the passes to run in parallel chunks, with few features so that
    /// brute force stays cheap.
    func testDistanceTransformInParallelMatchesBruteForce() {
        var random = SeededRandom(seed: 8)
        let grid = MetricGrid(nx: 48, ny: 40, nz: 36, spacing: (0.8, 1.1, 2.9))
        var mask = [Bool](repeating: false, count: grid.voxelCount)
        for _ in 0..<12 { mask[Int(random.next() % UInt64(mask.count))] = true }
        let fast = DistanceTransform.squaredDistances(toFeatures: mask, in: grid)
        let slow = bruteForceSquaredDistances(mask, grid)
        XCTAssertEqual(fast.indices.filter { abs(fast[$0] - slow[$0]) > 1e-9 * max(1, slow[$0]) }.count, 0)
    }

    func testDistanceTransformOfNothingIsInfiniteAndOfOneVoxelIsExact() {
        let grid = MetricGrid(nx: 4, ny: 3, nz: 2, spacing: (0.5, 2, 3))
        XCTAssertTrue(DistanceTransform.squaredDistances(toFeatures: [Bool](repeating: false, count: 24), in: grid)
            .allSatisfy { $0 == .infinity })
        var one = [Bool](repeating: false, count: 24)
        one[0] = true
        let d = DistanceTransform.distances(toFeatures: one, in: grid)
        XCTAssertEqual(d[0], 0)
        XCTAssertEqual(d[3 + 4 * (2 + 3 * 1)], (1.5 * 1.5 + 4.0 * 4.0 + 3.0 * 3.0).squareRoot(), accuracy: 1e-12)
    }

    /// The one-dimensional pass on general (not just 0/inf) samples, as the y and z passes see them.
    func testLowerEnvelopeOfSampledFunction() {
        var random = SeededRandom(seed: 5)
        for n in [1, 2, 3, 8, 17] {
            let f = (0..<n).map { _ in random.unit() < 0.3 ? Double.infinity : 10 * random.unit() }
            let s = 0.7
            var d = [Double](repeating: 0, count: n), roots = [Int](repeating: 0, count: n), bounds = [Double](repeating: 0, count: n + 1)
            f.withUnsafeBufferPointer { fp in
                DistanceTransform.lowerEnvelope(fp.baseAddress!, count: n, spacing: s, into: &d, roots: &roots, bounds: &bounds)
            }
            for p in 0..<n {
                let expected = (0..<n).map { q in s * s * Double((p - q) * (p - q)) + f[q] }.min()!
                XCTAssertEqual(d[p], expected, accuracy: expected.isFinite ? 1e-12 : 0, "n \(n), p \(p)")
            }
        }
    }

    // MARK: - Surface

    func testSurfaceIsTheMaskLessItsSixNeighbourErosionWithTheBorderOutside() {
        let grid = MetricGrid(nx: 5, ny: 5, nz: 5)
        func mask(_ inside: (Int, Int, Int) -> Bool) -> [Bool] {
            var m = [Bool](repeating: false, count: 125)
            for z in 0..<5 { for y in 0..<5 { for x in 0..<5 { m[x + 5 * (y + 5 * z)] = inside(x, y, z) } } }
            return m
        }
        func count(_ m: [Bool]) -> Int { MaskSurface.voxels(of: m, in: grid).filter { $0 }.count }
        // A 3x3x3 cube inside the image: all but its centre.
        XCTAssertEqual(count(mask { (1...3).contains($0) && (1...3).contains($1) && (1...3).contains($2) }), 26)
        // The whole image: its border voxels (125 - 27).
        XCTAssertEqual(count(mask { _, _, _ in true }), 98)
        // A 3x3x3 cube in a corner: the image border is outside, so again all but its centre.
        let corner = mask { $0 < 3 && $1 < 3 && $2 < 3 }
        XCTAssertEqual(count(corner), 26)
        XCTAssertFalse(MaskSurface.voxels(of: corner, in: grid)[1 + 5 * (1 + 5 * 1)])
        // A plus-shaped cross: the centre's 6 neighbours are all in it, but diagonal ones do not count.
        let cross = mask { x, y, z in [abs(x - 2), abs(y - 2), abs(z - 2)].sorted() == [0, 0, 0] || [abs(x - 2), abs(y - 2), abs(z - 2)].sorted() == [0, 0, 1] }
        let s = MaskSurface.voxels(of: cross, in: grid)
        XCTAssertEqual(s.filter { $0 }.count, 6)
        XCTAssertFalse(s[2 + 5 * (2 + 5 * 2)])
        XCTAssertEqual(count([Bool](repeating: false, count: 125)), 0)
    }

    // MARK: - Overlap metrics by hand

    func testDiceAndIoUOnHandCases() {
        let grid = MetricGrid(nx: 4, ny: 2, nz: 1, spacing: (0.5, 2, 3))   // voxel volume 3 mm^3
        func bits(_ s: String) -> [Bool] { s.map { $0 == "1" } }
        // |P| = 3, |R| = 2, overlap 1: Dice 2/5, IoU 1/4.
        var m = LabelMetrics(label: 7, prediction: bits("11100000"), reference: bits("00110000"), in: grid)
        XCTAssertEqual(m.status, .present)
        XCTAssertEqual(m.dice, 0.4, accuracy: 1e-15)
        XCTAssertEqual(m.iou, 0.25, accuracy: 1e-15)
        XCTAssertEqual(m.predictionVolume, 9, accuracy: 1e-12)
        XCTAssertEqual(m.referenceVolume, 6, accuracy: 1e-12)
        XCTAssertEqual(m.overlapVoxels, 1)
        // Identical masks: 1, 1, HD95 0.
        m = LabelMetrics(label: 1, prediction: bits("01101001"), reference: bits("01101001"), in: grid)
        XCTAssertEqual(m.dice, 1); XCTAssertEqual(m.iou, 1); XCTAssertEqual(m.hd95, 0)
        // Disjoint: 0, 0, finite HD95 (the two voxels are 1.5 mm apart along x).
        m = LabelMetrics(label: 1, prediction: bits("10000000"), reference: bits("00010000"), in: grid)
        XCTAssertEqual(m.dice, 0); XCTAssertEqual(m.iou, 0); XCTAssertEqual(m.hd95, 1.5, accuracy: 1e-12)
        // One empty: 0, 0, +inf; both empty: NaN everywhere.
        m = LabelMetrics(label: 1, prediction: bits("00000000"), reference: bits("00010000"), in: grid)
        XCTAssertEqual(m.status, .predictionEmpty)
        XCTAssertEqual(m.dice, 0); XCTAssertEqual(m.iou, 0); XCTAssertEqual(m.hd95, .infinity)
        m = LabelMetrics(label: 1, prediction: bits("00010000"), reference: bits("00000000"), in: grid)
        XCTAssertEqual(m.status, .referenceEmpty); XCTAssertEqual(m.hd95, .infinity)
        m = LabelMetrics(label: 1, prediction: bits("00000000"), reference: bits("00000000"), in: grid)
        XCTAssertEqual(m.status, .bothEmpty)
        XCTAssertTrue(m.dice.isNaN && m.iou.isNaN && m.hd95.isNaN)
    }

    func testPercentileInterpolatesLinearlyAsNumpy() {
        // np.percentile([4, 1, 3, 2], 95) == 3.85; ([5], 95) == 5; ([0, 10], 50) == 5.
        XCTAssertEqual(Percentile.linear([4, 1, 3, 2], percent: 95), 3.85, accuracy: 1e-12)
        XCTAssertEqual(Percentile.linear([5], percent: 95), 5)
        XCTAssertEqual(Percentile.linear([0, 10], percent: 50), 5)
        XCTAssertEqual(Percentile.linear([1, 2, 3], percent: 100), 3)
        XCTAssertEqual(Percentile.linear([1, 2, 3], percent: 0), 1)
        XCTAssertTrue(Percentile.linear([], percent: 95).isNaN)
        XCTAssertEqual(Percentile.linear([1, .infinity], percent: 95), .infinity)
        XCTAssertEqual(Percentile.linear([1, 2, .infinity], percent: 50), 2)
    }

    /// Max of the two directed percentiles, not the percentile of their union (medpy's hd95).
    func testHD95IsTheLargerDirectedPercentile() {
        // Reference: a 1x1x10 line; prediction: the same line plus one voxel 10 mm to its side.
        let grid = MetricGrid(nx: 11, ny: 1, nz: 10)
        var r = [Bool](repeating: false, count: grid.voxelCount), p = r
        for z in 0..<10 { r[11 * z] = true; p[11 * z] = true }
        p[10 + 11 * 9] = true
        // Prediction to reference: 10 zeros and one 10 -> h = 0.95 * 10 = 9.5 -> 5.
        // Reference to prediction: 10 zeros -> 0. The union (20 zeros, one 10) would give 0.
        XCTAssertEqual(HausdorffDistance.robust(prediction: p, reference: r, in: grid), 5, accuracy: 1e-12)
        XCTAssertEqual(HausdorffDistance.robust(prediction: r, reference: p, in: grid), 5, accuracy: 1e-12)
    }

    // MARK: - Fixtures from MONAI

    struct Case {
        var name: String
        var grid: MetricGrid
        var prediction: [Float], reference: [Float]
        var expected: [[String: Any]]
    }

    func loadCases() throws -> [Case] {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("expected.json"))
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let cases = try XCTUnwrap(root["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 3)
        return try cases.map { c in
            let name = try XCTUnwrap(c["name"] as? String)
            let s = try XCTUnwrap(c["spacing_xyz"] as? [Double])
            let shape = try XCTUnwrap(c["shape_zyx"] as? [Int])
            let grid = MetricGrid(nx: shape[2], ny: shape[1], nz: shape[0], spacing: (s[0], s[1], s[2]))
            let p = try NpyFile.read(Self.fixtures.appendingPathComponent("\(name)_pred.npy").path)
            let r = try NpyFile.read(Self.fixtures.appendingPathComponent("\(name)_ref.npy").path)
            XCTAssertEqual(p.shape, shape)
            XCTAssertEqual(r.shape, shape)
            return Case(name: name, grid: grid, prediction: p.data, reference: r.data,
                        expected: try XCTUnwrap(c["labels"] as? [[String: Any]]))
        }
    }

    func number(_ v: Any?) -> Double {
        switch v {
        case let d as Double: return d
        case let i as Int: return Double(i)
        case let s as String: return s == "inf" ? .infinity : s == "-inf" ? -.infinity : .nan
        default: return .nan
        }
    }

    func assertSame(_ actual: Double, _ expected: Double, relative: Double, _ what: String,
                    file: StaticString = #filePath, line: UInt = #line) {
        if expected.isNaN { XCTAssertTrue(actual.isNaN, "\(what): \(actual), expected NaN", file: file, line: line); return }
        if expected.isInfinite { XCTAssertEqual(actual, expected, what, file: file, line: line); return }
        XCTAssertEqual(actual, expected, accuracy: relative * max(1, abs(expected)), what, file: file, line: line)
    }

    /// Checks an evaluation against a fixture case: Dice, IoU and volumes exactly, HD95 to 1e-9
    /// against the float64 reference implementation and to 1e-5 against MONAI (float32), and
    /// within a voxel's largest spacing of DeepMind surface-distance (another surface definition).
    func check(_ result: SegmentationEvaluation, against c: Case, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.labels.map(\.label), c.expected.map { $0["label"] as! Int }, c.name, file: file, line: line)
        var comparedWithMONAI = 0
        for (m, e) in zip(result.labels, c.expected) {
            let what = "\(c.name) label \(m.label)"
            assertSame(m.dice, number(e["dice"]), relative: 1e-12, "\(what) Dice", file: file, line: line)
            assertSame(m.iou, number(e["iou"]), relative: 1e-12, "\(what) IoU", file: file, line: line)
            assertSame(m.hd95, number(e["hd95_mm"]), relative: 1e-9, "\(what) HD95", file: file, line: line)
            assertSame(m.predictionVolume, number(e["volume_pred_mm3"]), relative: 1e-12, "\(what) volume", file: file, line: line)
            assertSame(m.referenceVolume, number(e["volume_ref_mm3"]), relative: 1e-12, "\(what) volume", file: file, line: line)
            if m.status == .present {
                assertSame(m.hd95, number(e["hd95_monai_mm"]), relative: 1e-5, "\(what) HD95 vs MONAI", file: file, line: line)
                comparedWithMONAI += 1
                if e["hd95_deepmind_mm"] != nil {
                    let s = c.grid.spacing
                    XCTAssertLessThanOrEqual(abs(m.hd95 - number(e["hd95_deepmind_mm"])), max(s.x, s.y, s.z),
                                             "\(what) HD95 vs DeepMind surface-distance", file: file, line: line)
                }
            } else if m.status != .bothEmpty {
                XCTAssertEqual(number(e["hd95_deepmind_mm"]), .infinity, what, file: file, line: line)
            }
        }
        XCTAssertGreaterThan(comparedWithMONAI, 0, c.name, file: file, line: line)
    }

    func testFixturesMatchMONAIAndNumpy() throws {
        let cases = try loadCases()
        for c in cases {
            let labels = c.expected.map { $0["label"] as! Int }
            let result = try SegmentationEvaluation(prediction: c.prediction, reference: c.reference, grid: c.grid, labels: labels)
            check(result, against: c)
            // Default labels: those present in either map, ascending.
            let present = c.expected.filter { number($0["volume_pred_mm3"]) + number($0["volume_ref_mm3"]) > 0 }.map { $0["label"] as! Int }
            let byDefault = try SegmentationEvaluation(prediction: c.prediction, reference: c.reference, grid: c.grid)
            XCTAssertEqual(byDefault.labels.map(\.label), present, c.name)
        }
    }

    /// The anisotropic case has label 3 only in the reference, 5 only in the prediction and 4 in
    /// neither: how the means and counts treat them.
    func testEmptyLabelsInMeansAndCounts() throws {
        let c = try XCTUnwrap(try loadCases().first { $0.name == "aniso_blobs" })
        let r = try SegmentationEvaluation(prediction: c.prediction, reference: c.reference, grid: c.grid, labels: [1, 2, 3, 4, 5])
        XCTAssertEqual(r.emptyLabels, [4])
        XCTAssertEqual(r.predictionEmptyLabels, [3])
        XCTAssertEqual(r.referenceEmptyLabels, [5])
        XCTAssertEqual(r.infiniteHD95Count, 2)
        let one = r.labels[0], two = r.labels[1]
        XCTAssertEqual(r.meanDice, (one.dice + two.dice + 0 + 0) / 4, accuracy: 1e-15)
        XCTAssertEqual(r.meanIoU, (one.iou + two.iou) / 4, accuracy: 1e-15)
        XCTAssertEqual(r.meanHD95, (one.hd95 + two.hd95) / 2, accuracy: 1e-15)
        // Only a label in neither image: every mean is undefined.
        let none = try SegmentationEvaluation(prediction: c.prediction, reference: c.reference, grid: c.grid, labels: [4])
        XCTAssertTrue(none.meanDice.isNaN && none.meanIoU.isNaN && none.meanHD95.isNaN)
        XCTAssertEqual(none.infiniteHD95Count, 0)

        XCTAssertThrowsError(try SegmentationEvaluation(prediction: c.prediction, reference: c.reference, grid: c.grid, labels: [0]))
        XCTAssertThrowsError(try SegmentationEvaluation(prediction: c.prediction, reference: c.reference, grid: c.grid, labels: [2, 2]))
    }

    /// Groups by reference volume with inclusive lower and exclusive upper bounds; labels the
    /// reference lacks belong to no group; the means equal the plain means over the members.
    func testSizeGroupsByReferenceVolume() throws {
        let c = try XCTUnwrap(try loadCases().first { $0.name == "aniso_blobs" })
        let r = try SegmentationEvaluation(prediction: c.prediction, reference: c.reference, grid: c.grid, labels: [1, 2, 3, 4, 5])
        let one = r.labels[0], two = r.labels[1], three = r.labels[2]
        XCTAssertTrue(one.referenceVolume > 0 && two.referenceVolume > 0 && three.referenceVolume > 0)
        // A boundary exactly at the largest of the three volumes: that label is in the upper group.
        let volumes = [one, two, three].map(\.referenceVolume)
        let edge = volumes.max()!
        let groups = [SizeGroup(name: "below", lowerMM3: 0, upperMM3: edge),
                      SizeGroup(name: "at or above", lowerMM3: edge, upperMM3: .infinity)]
        let summary = r.sizeGroups(groups)
        let upper = [one, two, three].filter { $0.referenceVolume >= edge }, lower = [one, two, three].filter { $0.referenceVolume < edge }
        XCTAssertEqual(summary[1].labels, upper.map(\.label))
        XCTAssertEqual(summary[0].labels, lower.map(\.label))
        XCTAssertFalse(summary.flatMap(\.labels).contains(4), "label 4 is in neither map")
        XCTAssertFalse(summary.flatMap(\.labels).contains(5), "label 5 is only predicted")
        for (s, members) in zip(summary, [lower, upper]) {
            let finite = members.map(\.hd95).filter(\.isFinite)
            XCTAssertEqual(s.meanDice, members.map(\.dice).reduce(0, +) / Double(members.count), accuracy: 1e-15)
            XCTAssertEqual(s.meanIoU, members.map(\.iou).reduce(0, +) / Double(members.count), accuracy: 1e-15)
            if finite.isEmpty { XCTAssertTrue(s.meanHD95.isNaN) } else {
                XCTAssertEqual(s.meanHD95, finite.reduce(0, +) / Double(finite.count), accuracy: 1e-15)
            }
            XCTAssertEqual(s.infiniteHD95Count, members.filter { $0.hd95 == .infinity }.count)
        }
        // Label 3 is missed by the prediction: it counts as Dice 0 and one infinite HD95 in its group.
        XCTAssertEqual(three.status, .predictionEmpty)
        XCTAssertEqual(summary.map(\.infiniteHD95Count).reduce(0, +), 1)
        // An empty group has undefined means.
        let none = r.sizeGroups([SizeGroup(name: "huge", lowerMM3: edge * 1000, upperMM3: .infinity)])[0]
        XCTAssertTrue(none.labels.isEmpty && none.meanDice.isNaN && none.meanHD95.isNaN)
        // The brain groups are contiguous and cover every positive volume.
        let brain = SizeGroup.brainStructures
        XCTAssertEqual(brain.first?.lowerMM3, 0)
        XCTAssertEqual(brain.last?.upperMM3, .infinity)
        XCTAssertEqual(Array(brain.dropLast().map(\.upperMM3)), Array(brain.dropFirst().map(\.lowerMM3)))
    }

    // MARK: - NIfTI end to end

    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "evaluation-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func writeLabelMap(_ voxels: [Float], grid: MetricGrid, spacing: (Double, Double, Double)? = nil,
                       origin: Double = -20, name: String) throws -> String {
        let s = spacing ?? (grid.spacing.x, grid.spacing.y, grid.spacing.z)
        let geometry = try NiftiGeometry(nx: grid.nx, ny: grid.ny, nz: grid.nz,
                                         affine: [[-s.0, 0, 0, origin], [0, s.1, 0, 5], [0, 0, s.2, 7]], niftiVersion: 2)
        let image = try NiftiImage(voxels: [Float](repeating: 0, count: grid.voxelCount), geometry: geometry)
        let path = folder + "/" + name
        try NiftiImage.writeLabelMap(voxels.map { Int($0) }, like: image, to: path)
        return path
    }

    func testNiftiFilesEndToEnd() throws {
        for c in try loadCases() {
            let pred = try writeLabelMap(c.prediction, grid: c.grid, name: "\(c.name)_pred.nii.gz")
            let ref = try writeLabelMap(c.reference, grid: c.grid, name: "\(c.name)_ref.nii")
            let labels = c.expected.map { $0["label"] as! Int }
            let result = try SegmentationEvaluation(predictionPath: pred, referencePath: ref, labels: labels)
            XCTAssertEqual(result.warnings, [], c.name)
            XCTAssertEqual(result.grid, c.grid)   // NIfTI-2 keeps the spacing in double precision
            check(result, against: c)

            // JSON, written atomically, parses, and keeps the numbers and the rules for non-finite ones.
            let json = folder + "/\(c.name).json"
            try result.writeJSON(to: json)
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
            let rows = try XCTUnwrap(object["labels"] as? [[String: Any]])
            XCTAssertEqual(rows.count, labels.count)
            for (row, m) in zip(rows, result.labels) {
                XCTAssertEqual(row["label"] as? Int, m.label)
                XCTAssertEqual(row["status"] as? String, m.status.rawValue)
                // (Foundation's JSON parser on Linux may be off in the last bit.)
                if m.hd95.isFinite { XCTAssertEqual(try XCTUnwrap(row["hd95_mm"] as? Double), m.hd95, accuracy: 1e-14) } else { XCTAssertTrue(row["hd95_mm"] is NSNull) }
                if m.dice.isFinite { XCTAssertEqual(try XCTUnwrap(row["dice"] as? Double), m.dice, accuracy: 1e-14) } else { XCTAssertTrue(row["dice"] is NSNull) }
            }
            XCTAssertEqual(object["infinite_hd95_count"] as? Int, result.infiniteHD95Count)
            XCTAssertEqual(object["empty_labels"] as? [Int], result.emptyLabels)
            XCTAssertEqual(try XCTUnwrap(object["mean_dice"] as? Double), result.meanDice, accuracy: 1e-14)
            XCTAssertEqual(try XCTUnwrap(object["mean_hd95_mm"] as? Double), result.meanHD95, accuracy: 1e-14)
            XCTAssertTrue(try String(contentsOfFile: json, encoding: .utf8).contains("\"hd95_mm\": \(result.labels[0].hd95)"))
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.contains("partial") }, [])
        }
    }

    func testNiftiGridMismatchSpacingWarningAndNonLabelVoxels() throws {
        let grid = MetricGrid(nx: 6, ny: 5, nz: 4, spacing: (1, 1.5, 2))
        var labels = [Float](repeating: 0, count: grid.voxelCount)
        for i in 20..<60 { labels[i] = 1 }
        let ref = try writeLabelMap(labels, grid: grid, name: "ref.nii.gz")

        let other = try writeLabelMap([Float](repeating: 0, count: 6 * 5 * 5), grid: MetricGrid(nx: 6, ny: 5, nz: 5), name: "tall.nii.gz")
        XCTAssertThrowsError(try SegmentationEvaluation(predictionPath: other, referencePath: ref)) { error in
            XCTAssertTrue("\(error)".contains("6x5x5") && "\(error)".contains("6x5x4"), "\(error)")
        }

        let spaced = try writeLabelMap(labels, grid: grid, spacing: (1, 1.5, 2.5), name: "spaced.nii.gz")
        let r = try SegmentationEvaluation(predictionPath: spaced, referencePath: ref)
        XCTAssertEqual(r.warnings.count, 1)
        XCTAssertTrue(r.warnings[0].contains("spacing"), r.warnings[0])
        XCTAssertEqual(r.grid.spacing.z, 2)
        XCTAssertEqual(r.labels.map(\.dice), [1])
        XCTAssertEqual(r.labels[0].referenceVolume, 40 * 3)

        let moved = try writeLabelMap(labels, grid: grid, origin: 30, name: "moved.nii.gz")
        XCTAssertEqual(try SegmentationEvaluation(predictionPath: moved, referencePath: ref).warnings.count, 1)

        var fractional = labels
        fractional[7] = 0.5
        let geometry = try NiftiGeometry(nx: 6, ny: 5, nz: 4, affine: [[1, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 2, 0]])
        let probabilities = folder + "/p.nii.gz"
        try NiftiImage(voxels: fractional, geometry: geometry).write(to: probabilities)
        XCTAssertThrowsError(try SegmentationEvaluation(predictionPath: probabilities, referencePath: ref)) { error in
            XCTAssertTrue("\(error)".contains("(1, 1, 0)") && "\(error)".contains("0.5"), "\(error)")
        }
    }
}
