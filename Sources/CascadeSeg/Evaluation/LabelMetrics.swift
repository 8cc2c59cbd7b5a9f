/// Overlap and surface-distance metrics of one label: a predicted mask against a reference mask.
public struct LabelMetrics: Sendable {
    /// Which of the two masks hold voxels.
    public enum Status: String, Sendable {
        /// Both masks hold voxels: every metric is finite.
        case present = "ok"
        /// Neither mask holds a voxel: Dice, IoU and HD95 are NaN (undefined), left out of means.
        case bothEmpty = "both_empty"
        /// Only the reference holds voxels: Dice 0, IoU 0, HD95 +infinity.
        case predictionEmpty = "prediction_empty"
        /// Only the prediction holds voxels: Dice 0, IoU 0, HD95 +infinity.
        case referenceEmpty = "reference_empty"
    }

    public var label: Int
    public var status: Status
    /// 2 |P and R| / (|P| + |R|).
    public var dice: Double
    /// Jaccard index |P and R| / |P or R|.
    public var iou: Double
    /// Symmetric 95th-percentile Hausdorff distance in mm (`HausdorffDistance.robust`).
    public var hd95: Double
    public var predictionVoxels: Int
    public var referenceVoxels: Int
    public var overlapVoxels: Int
    /// Volumes in mm^3: voxel counts times the voxel volume.
    public var predictionVolume: Double
    public var referenceVolume: Double

    /// Metrics of label `label` from its two binary masks on `grid`.
    public init(label: Int, prediction: [Bool], reference: [Bool], in grid: MetricGrid) {
        precondition(prediction.count == grid.voxelCount && reference.count == grid.voxelCount)
        var p = 0, r = 0, both = 0
        for i in prediction.indices {
            let a = prediction[i], b = reference[i]
            if a { p += 1 }
            if b { r += 1 }
            if a && b { both += 1 }
        }
        let hd95 = p > 0 && r > 0 ? HausdorffDistance.robust(prediction: prediction, reference: reference, in: grid) : 0
        self.init(label: label, predictionVoxels: p, referenceVoxels: r, overlapVoxels: both, hd95: hd95,
                  voxelVolume: grid.voxelVolume)
    }

    /// Metrics from counts and the HD95 of the masks (ignored unless both masks hold voxels).
    public init(label: Int, predictionVoxels p: Int, referenceVoxels r: Int, overlapVoxels both: Int,
                hd95: Double, voxelVolume: Double) {
        precondition(both >= 0 && both <= min(p, r))
        self.label = label
        predictionVoxels = p
        referenceVoxels = r
        overlapVoxels = both
        predictionVolume = Double(p) * voxelVolume
        referenceVolume = Double(r) * voxelVolume
        switch (p > 0, r > 0) {
        case (false, false):
            status = .bothEmpty
            dice = .nan; iou = .nan; self.hd95 = .nan
        case (false, true), (true, false):
            status = p == 0 ? .predictionEmpty : .referenceEmpty
            dice = 0; iou = 0; self.hd95 = .infinity
        case (true, true):
            status = .present
            dice = 2 * Double(both) / Double(p + r)
            iou = Double(both) / Double(p + r - both)
            self.hd95 = hd95
        }
    }
}
