import CascadeSeg
import Foundation

/// `cascadeseg evaluate --pred P.nii.gz --ref R.nii.gz [--labels 1,2,...] [--json OUT.json]`:
/// Dice, IoU, HD95 and volumes per label of a predicted label map against a reference one
/// (definitions in docs/METRICS.md), as a table on standard output and optionally as JSON.
enum EvaluateCommand {
    static let usage = "usage: cascadeseg evaluate --pred P.nii.gz --ref R.nii.gz [--labels 1,2,...] [--json OUT.json]"

    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["pred", "ref", "labels", "json"], flags: [])
        guard args.positionals.isEmpty else {
            throw CascadeSegError.usage("unexpected argument '\(args.positionals[0])'\n\(usage)")
        }
        guard let pred = args["pred"], let ref = args["ref"] else {
            throw CascadeSegError.usage("evaluate needs --pred and --ref\n\(usage)")
        }
        let labels = try args["labels"].map(parseLabels)
        if let path = args["json"] {
            // Fail before the work, not after it: the JSON is written beside its destination.
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue,
                  FileManager.default.isWritableFile(atPath: folder) else {
                throw CascadeSegError.io("cannot write '\(path)': '\(folder)' is not a writable folder")
            }
        }
        let result = try SegmentationEvaluation(predictionPath: pred, referencePath: ref, labels: labels)
        for warning in result.warnings { standardError("cascadeseg: warning: \(warning)") }
        print(table(result), terminator: "")
        if let path = args["json"] { try result.writeJSON(to: path) }
    }

    static func parseLabels(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let labels = try parts.map { part -> Int in
            guard let v = Int(part), v > 0 else {
                throw CascadeSegError.usage("--labels takes positive integers separated by commas, e.g. 1,2,3; got '\(text)'")
            }
            return v
        }
        guard Set(labels).count == labels.count else { throw CascadeSegError.usage("--labels lists a label twice: '\(text)'") }
        return labels
    }

    static func table(_ r: SegmentationEvaluation) -> String {
        func fixed(_ v: Double, _ digits: Int) -> String {
            v.isNaN ? "n/a" : v == .infinity ? "inf" : String(format: "%.\(digits)f", v)
        }
        func row(_ cells: [String]) -> String {
            let widths = [7, 8, 8, 10, 14, 14]
            return zip(cells, widths).map { String(repeating: " ", count: max(0, $1 - $0.count)) + $0 }.joined() + "\n"
        }
        var out = String(format: "grid %dx%dx%d, spacing %g x %g x %g mm (the reference's)\n", r.grid.nx, r.grid.ny, r.grid.nz, r.grid.spacing.x, r.grid.spacing.y, r.grid.spacing.z)
        out += row(["label", "Dice", "IoU", "HD95 mm", "pred mm3", "ref mm3"])
        for m in r.labels {
            let note: String
            switch m.status {
            case .present: note = ""
            case .bothEmpty: note = "  (in neither image)"
            case .predictionEmpty: note = "  (missing from the prediction)"
            case .referenceEmpty: note = "  (missing from the reference)"
            }
            out += row(["\(m.label)", fixed(m.dice, 4), fixed(m.iou, 4), fixed(m.hd95, 2),
                        fixed(m.predictionVolume, 1), fixed(m.referenceVolume, 1)]).dropLast() + note + "\n"
        }
        let counted = r.labels.filter { $0.status != .bothEmpty }.count
        let finite = r.labels.filter { $0.hd95.isFinite }.count
        out += row(["mean", fixed(r.meanDice, 4), fixed(r.meanIoU, 4), fixed(r.meanHD95, 2), "", ""]).dropLast()
            + "  (Dice, IoU over \(counted) label(s); HD95 over \(finite) finite, \(r.infiniteHD95Count) infinite)\n"
        if !r.emptyLabels.isEmpty {
            out += "in neither image (left out of the means): " + r.emptyLabels.map(String.init).joined(separator: ", ") + "\n"
        }
        if !r.predictionEmptyLabels.isEmpty {
            out += "missing from the prediction (Dice 0, HD95 inf): " + r.predictionEmptyLabels.map(String.init).joined(separator: ", ") + "\n"
        }
        if !r.referenceEmptyLabels.isEmpty {
            out += "missing from the reference (Dice 0, HD95 inf): " + r.referenceEmptyLabels.map(String.init).joined(separator: ", ") + "\n"
        }
        return out
    }
}
