/// The JSON form of a `SegmentationEvaluation`, as `cascadeseg evaluate --json` writes it:
///
///     {"labels": [{"label": 1, "status": "ok", "dice": 0.91, "iou": 0.83, "hd95_mm": 2.5,
///                  "volume_pred_mm3": 1234.5, "volume_ref_mm3": 1200.0,
///                  "voxels_pred": 2469, "voxels_ref": 2400, "voxels_overlap": 2200}, ...],
///      "mean_dice": ..., "mean_iou": ..., "mean_hd95_mm": ..., "infinite_hd95_count": 0,
///      "empty_labels": [], "prediction_empty_labels": [], "reference_empty_labels": [],
///      "spacing_mm": [x, y, z], "grid": [nx, ny, nz], "warnings": []}
///
/// JSON has no NaN or infinity: a non-finite number is written as null, and the label's
/// `status` says why ("both_empty": Dice, IoU, HD95 undefined; "prediction_empty" or
/// "reference_empty": Dice 0, IoU 0, HD95 infinite). `mean_hd95_mm` is over finite values only.
extension SegmentationEvaluation {
    public func json() -> String {
        func number(_ v: Double) -> String { v.isFinite ? "\(v)" : "null" }
        func ints(_ v: [Int]) -> String { "[" + v.map(String.init).joined(separator: ", ") + "]" }
        func string(_ s: String) -> String {
            var out = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case _ where u.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
                default: out.unicodeScalars.append(u)
                }
            }
            return out + "\""
        }
        let rows = labels.map { m in
            "    {\"label\": \(m.label), \"status\": \(string(m.status.rawValue)), \"dice\": \(number(m.dice)), "
                + "\"iou\": \(number(m.iou)), \"hd95_mm\": \(number(m.hd95)), "
                + "\"volume_pred_mm3\": \(number(m.predictionVolume)), \"volume_ref_mm3\": \(number(m.referenceVolume)), "
                + "\"voxels_pred\": \(m.predictionVoxels), \"voxels_ref\": \(m.referenceVoxels), \"voxels_overlap\": \(m.overlapVoxels)}"
        }
        let fields = [
            "\"labels\": [\n" + rows.joined(separator: ",\n") + (rows.isEmpty ? "]" : "\n  ]"),
            "\"mean_dice\": \(number(meanDice))",
            "\"mean_iou\": \(number(meanIoU))",
            "\"mean_hd95_mm\": \(number(meanHD95))",
            "\"infinite_hd95_count\": \(infiniteHD95Count)",
            "\"empty_labels\": \(ints(emptyLabels))",
            "\"prediction_empty_labels\": \(ints(predictionEmptyLabels))",
            "\"reference_empty_labels\": \(ints(referenceEmptyLabels))",
            "\"spacing_mm\": [\(number(grid.spacing.x)), \(number(grid.spacing.y)), \(number(grid.spacing.z))]",
            "\"grid\": \(ints([grid.nx, grid.ny, grid.nz]))",
            "\"warnings\": [" + warnings.map(string).joined(separator: ", ") + "]",
        ]
        return "{\n  " + fields.joined(separator: ",\n  ") + "\n}\n"
    }

    /// Writes `json()` to `path` atomically (`AtomicFile`).
    public func writeJSON(to path: String) throws {
        try AtomicFile.write(Array(json().utf8), to: path)
    }
}
