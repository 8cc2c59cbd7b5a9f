import Foundation

/// What one segmentation produced: the label map, the stage-2 regions of interest, what each
/// stage cost, and the labels found, missed and recovered from priors.
///
/// `report` is the JSON object `cascadeseg segment --report` writes; the command-line tool and
/// the library build it with this one implementation.
public struct SegmentationResult: Sendable {
    /// The mode that ran.
    public var mode: SegmentationMode
    /// Label ids on the image grid, index x + nx * (y + ny * z).
    public var labels: [Int32]
    /// The image grid (x, y, z).
    public var size: SIMD3<Int>
    /// The image's geometry (spacing, affine): the labels' geometry.
    public var geometry: NiftiGeometry
    /// The stage-2 ROIs in plan (and paste) order; empty outside the cascade.
    public var rois: [ROIPlanner.ROI]
    /// What each stage cost (one entry outside the cascade).
    public var stages: [CascadeSegmentation.StageReport]
    /// Highest device memory over the whole segmentation, weights included.
    public var peakDeviceBytes: Int
    /// The budget the segmentation ran under, if any.
    public var memoryBudget: Int?
    /// Wall time of the segmentation (normalization, networks, pasting), in seconds.
    public var seconds: Double
    /// Cascade only: non-background labels of the model's table that stage 1 did not find.
    public var stage1MissedLabels: [Int]?
    /// Labels whose prior box was used (cascade only).
    public var priorLabels: [Int]
    /// Non-background labels of the model's table absent from `labels`.
    public var missedLabels: [Int]
    /// Voxels of each non-background label present in `labels`.
    public var labelVoxelCounts: [Int32: Int]
    /// The model's label names by id.
    public var labelNames: [Int: String]

    /// The name of label `id` in the model's table, or "label ID".
    public func name(ofLabel id: Int) -> String { labelNames[id] ?? "label \(id)" }

    /// Volume of one voxel in mm^3 (the image spacing's product).
    public var voxelVolumeMM3: Double {
        let s = geometry.spacing, unit = geometry.millimetresPerUnit
        return s.x * s.y * s.z * unit * unit * unit
    }

    /// The report as a JSON object, the keys `cascadeseg segment --report` writes: `mode`,
    /// `wall_seconds`, `peak_device_bytes`, `memory_budget_bytes` (null without a budget),
    /// `stages` (per stage: `stage`, `seconds`, `peak_device_bytes`, `grid`, `runs`, `tiles`),
    /// `rois` (per ROI: `labels`, `box_voxels` and `box_mm` with `lower`/`upper`, `size_mm`,
    /// `stage2_size`, `input_size`), `label_volumes_mm3` (by label name), `missed_labels`,
    /// `prior_labels` and, for the cascade, `stage1_missed_labels` (label names).
    public var report: [String: Any] {
        let voxel = voxelVolumeMM3
        var json: [String: Any] = [
            "mode": mode.rawValue,
            "wall_seconds": seconds,
            "peak_device_bytes": peakDeviceBytes,
            "memory_budget_bytes": memoryBudget.map { $0 as Any } ?? NSNull(),
            "stages": stages.map { s -> [String: Any] in
                ["stage": s.stage, "seconds": s.seconds, "peak_device_bytes": s.peakDeviceBytes, "grid": Self.array(s.grid),
                 "runs": s.runs, "tiles": s.tiles]
            },
            "rois": rois.map { roiJSON($0) },
            "label_volumes_mm3": Dictionary(labelVoxelCounts.map { (name(ofLabel: Int($0.key)), Double($0.value) * voxel) },
                                            uniquingKeysWith: +),
            "missed_labels": missedLabels.map(name(ofLabel:)),
            "prior_labels": priorLabels.map(name(ofLabel:)),
        ]
        if let stage1MissedLabels { json["stage1_missed_labels"] = stage1MissedLabels.map(name(ofLabel:)) }
        return json
    }

    /// `report` as pretty-printed JSON with sorted keys (UTF-8 bytes).
    public func reportJSON() throws -> [UInt8] {
        [UInt8](try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]))
    }

    /// One ROI in the report: its labels (ids), its box in voxels (half-open: `upper` is the
    /// first voxel past the end), in world mm (the centres of its first and last voxels), its
    /// physical size, and the stage-2 grid and network input it was run on.
    func roiJSON(_ roi: ROIPlanner.ROI) -> [String: Any] {
        let lower = SIMD3<Double>(roi.box.lower), last = SIMD3<Double>(roi.box.upper &- 1)
        let s = geometry.spacing
        let spacing = SIMD3<Double>(s.x, s.y, s.z) * geometry.millimetresPerUnit
        return [
            "labels": roi.labels,
            "box_voxels": ["lower": Self.array(roi.box.lower), "upper": Self.array(roi.box.upper)],
            "box_mm": ["lower": Self.array(geometry.worldMM(ofVoxel: lower)), "upper": Self.array(geometry.worldMM(ofVoxel: last))],
            "size_mm": Self.array(SIMD3<Double>(roi.box.size) * spacing),
            "stage2_size": Self.array(roi.stage2Size),
            "input_size": Self.array(roi.inputSize),
        ]
    }

    static func array(_ v: SIMD3<Int>) -> [Int] { [v.x, v.y, v.z] }
    static func array(_ v: SIMD3<Double>) -> [Double] { [v.x, v.y, v.z] }
}
