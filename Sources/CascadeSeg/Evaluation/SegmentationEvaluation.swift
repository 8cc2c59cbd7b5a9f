import Foundation

/// Per-label metrics of a predicted label map against a reference label map on the same grid,
/// and their means: what `cascadeseg evaluate` reports (definitions in docs/METRICS.md).
///
/// Labels are the positive integers of the maps (0 and negative values are background). By
/// default every label present in either map is evaluated. A label missing from both maps (only
/// possible when labels are given) has Dice, IoU and HD95 NaN and is left out of every mean; a
/// label missing from one map has Dice 0, IoU 0 and HD95 +infinity, enters the Dice and IoU
/// means, and is counted in `infiniteHD95Count` instead of the HD95 mean (which is over finite
/// values only).
public struct SegmentationEvaluation: Sendable {
    /// The reference's grid and spacing, on which every metric is computed.
    public var grid: MetricGrid
    /// One entry per evaluated label, in the order asked for (ascending by default).
    public var labels: [LabelMetrics]
    /// Things the caller should see but that do not stop the evaluation (spacing mismatch, ...).
    public var warnings: [String] = []

    /// Mean Dice over the labels present in at least one map (NaN when there is none).
    public var meanDice: Double { Self.mean(labels.filter { $0.status != .bothEmpty }.map(\.dice)) }
    /// Mean IoU over the labels present in at least one map (NaN when there is none).
    public var meanIoU: Double { Self.mean(labels.filter { $0.status != .bothEmpty }.map(\.iou)) }
    /// Mean HD95 in mm over the labels whose HD95 is finite (NaN when there is none).
    public var meanHD95: Double { Self.mean(labels.map(\.hd95).filter(\.isFinite)) }
    /// How many labels have an infinite HD95 (present in exactly one map).
    public var infiniteHD95Count: Int { labels.filter { $0.hd95 == .infinity }.count }
    /// Labels asked for that neither map holds.
    public var emptyLabels: [Int] { labels.filter { $0.status == .bothEmpty }.map(\.label) }
    /// Labels only the reference holds.
    public var predictionEmptyLabels: [Int] { labels.filter { $0.status == .predictionEmpty }.map(\.label) }
    /// Labels only the prediction holds.
    public var referenceEmptyLabels: [Int] { labels.filter { $0.status == .referenceEmpty }.map(\.label) }

    // MARK: - Evaluating

    /// Evaluates two label maps given as voxel values (index x + nx * (y + ny * z)), which must
    /// be integers. `labels` (positive, distinct) defaults to every positive label in either map.
    public init(prediction: [Float], reference: [Float], grid: MetricGrid, labels: [Int]? = nil) throws {
        guard prediction.count == grid.voxelCount, reference.count == grid.voxelCount else {
            throw CascadeSegError.invalidInput("label maps of \(prediction.count) and \(reference.count) voxels do not both fill a \(grid.nx)x\(grid.ny)x\(grid.nz) grid")
        }
        if let labels { try Self.validate(labels) }
        let p = try Self.integerLabels(prediction, grid: grid, what: "prediction")
        let r = try Self.integerLabels(reference, grid: grid, what: "reference")
        let census = LabelCensus(prediction: p, reference: r, grid: grid)
        let wanted = labels ?? census.labels.map(Int.init).sorted()
        self.grid = grid
        self.labels = wanted.map { census.metrics(label: $0, prediction: p, reference: r) }
    }

    /// Evaluates two label-map images. They must have the same grid; the spacing (converted to
    /// mm) is the reference's, with a warning when the prediction's differs by more than 1e-4
    /// relative on any axis, or else when their voxel-to-world transforms differ (voxels are
    /// compared index by index either way).
    public init(prediction: NiftiImage, reference: NiftiImage, labels: [Int]? = nil) throws {
        guard (prediction.nx, prediction.ny, prediction.nz) == (reference.nx, reference.ny, reference.nz) else {
            throw CascadeSegError.invalidInput("the prediction's grid \(prediction.nx)x\(prediction.ny)x\(prediction.nz) differs from the reference's \(reference.nx)x\(reference.ny)x\(reference.nz); resample the prediction onto the reference grid first")
        }
        let spacing = Self.millimetreSpacing(reference.geometry)
        let predicted = Self.millimetreSpacing(prediction.geometry)
        let grid = MetricGrid(nx: reference.nx, ny: reference.ny, nz: reference.nz, spacing: spacing)
        try self.init(prediction: prediction.voxels, reference: reference.voxels, grid: grid, labels: labels)
        let pairs = [(predicted.x, spacing.x), (predicted.y, spacing.y), (predicted.z, spacing.z)]
        if pairs.contains(where: { abs($0.0 - $0.1) > 1e-4 * abs($0.1) }) {
            let shown = { (s: (x: Double, y: Double, z: Double)) in String(format: "%g x %g x %g mm", s.x, s.y, s.z) }
            warnings.append("the prediction's voxel spacing \(shown(predicted)) differs from the reference's \(shown(spacing)); the reference's is used")
        } else if let a = Self.voxelToWorld(prediction.geometry), let b = Self.voxelToWorld(reference.geometry) {
            let scale = 1 + b.joined().map(abs).max()!
            if zip(a.joined(), b.joined()).contains(where: { abs($0 - $1) > 1e-3 * scale }) {
                warnings.append("the prediction's voxel-to-world transform differs from the reference's (another orientation or origin?); voxels are compared index by index")
            }
        }
    }

    /// Reads two `.nii` / `.nii.gz` label maps and evaluates them (see `init(prediction:reference:labels:)`).
    public init(predictionPath: String, referencePath: String, labels: [Int]? = nil) throws {
        let prediction = try NiftiImage(contentsOf: predictionPath)
        let reference = try NiftiImage(contentsOf: referencePath)
        try self.init(prediction: prediction, reference: reference, labels: labels)
    }

    // MARK: - Helpers

    static func mean(_ values: [Double]) -> Double {
        values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
    }

    static func validate(_ labels: [Int]) throws {
        var seen = Set<Int>()
        for label in labels {
            guard label > 0, label <= Int(Int32.max) else {
                throw CascadeSegError.invalidInput("label \(label) cannot be evaluated: labels are positive integers (0 is background)")
            }
            guard seen.insert(label).inserted else { throw CascadeSegError.invalidInput("label \(label) is listed twice") }
        }
    }

    /// The voxel values as Int32 labels; non-integer, non-finite or huge values are errors.
    static func integerLabels(_ values: [Float], grid: MetricGrid, what: String) throws -> [Int32] {
        var bad: Int? = nil
        let labels = [Int32](unsafeUninitializedCapacity: values.count) { out, initialized in
            values.withUnsafeBufferPointer { v in
                for i in v.indices {
                    let x = v[i]
                    guard x.rounded() == x, abs(x) < 2_147_483_520 else { bad = i; break }
                    out[i] = Int32(x)
                }
            }
            initialized = bad == nil ? values.count : 0
        }
        if let bad {
            let x = bad % grid.nx, y = (bad / grid.nx) % grid.ny, z = bad / (grid.nx * grid.ny)
            throw CascadeSegError.invalidInput("the \(what) is not a label map: voxel (\(x), \(y), \(z)) holds \(values[bad]), not an integer label")
        }
        return labels
    }

    /// Voxel spacing in mm from pixdim and the header's spatial unit (metres, mm or microns;
    /// an unknown unit is taken as mm).
    static func millimetreSpacing(_ geometry: NiftiGeometry) -> (x: Double, y: Double, z: Double) {
        let scale: Double
        switch geometry.xyzUnits {
        case 1: scale = 1000     // NIFTI_UNITS_METER
        case 3: scale = 0.001    // NIFTI_UNITS_MICRON
        default: scale = 1       // NIFTI_UNITS_MM or unknown
        }
        let s = geometry.spacing
        return (s.x * scale, s.y * scale, s.z * scale)
    }

    /// The transform a reader would use: the sform when set, else the qform when set.
    static func voxelToWorld(_ g: NiftiGeometry) -> [[Double]]? {
        if g.sformCode > 0 { return g.stoXYZ }
        if g.qformCode > 0 { return g.qtoXYZ }
        return nil
    }
}
