import CascadeSeg
import Foundation

/// `cascadeseg segment`: a NIfTI image in, a label map with the image's exact geometry out.
/// The two-stage cascade with ROIs is not built yet; `--single-stage` and `--stage1-only` run
/// one network over the whole volume.
enum SegmentCommand {
    static let usage = "usage: cascadeseg segment MODEL.cseg INPUT.nii.gz -o OUTPUT.nii.gz (--single-stage | --stage1-only) [--overlay O.png] [--report R.json] [--device D] [--quiet]"

    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["output", "device", "overlay", "report"], flags: ["single-stage", "stage1-only", "quiet"])
        guard args.positionals.count == 2 else { throw CascadeSegError.usage(usage) }
        let (modelPath, inputPath) = (args.positionals[0], args.positionals[1])
        let outputPath = try args.require("output")
        let model = try ModelFile(contentsOf: modelPath)
        let stageCount = model.metadata.stages.count
        let stage: Int
        switch (args.has("single-stage"), args.has("stage1-only")) {
        case (true, true): throw CascadeSegError.usage("--single-stage and --stage1-only exclude each other")
        case (true, false): stage = model.metadata.cascade.map { c in model.metadata.stages.firstIndex { $0.graph == c.stage2 }! + 1 } ?? 1
        case (false, true): stage = model.metadata.cascade.map { c in model.metadata.stages.firstIndex { $0.graph == c.stage1 }! + 1 } ?? 1
        case (false, false):
            guard stageCount == 1, model.metadata.cascade == nil else {
                throw CascadeSegError.usage("the two-stage cascade is not implemented yet; choose --single-stage (the ROI network over the whole volume) or --stage1-only")
            }
            stage = 1
        }
        let image = try NiftiImage(contentsOf: inputPath)
        let device = try ComputeDevice.select(args["device"])
        let network = try Network(model: model, stage: stage, context: try ComputeContext.shared(for: device))
        let start = DispatchTime.now()
        let result = try WholeVolumeSegmentation.segment(image, model: model, stageIndex: stage, network: network)
        try NiftiImage.writeLabelMap(result.labels, like: image, to: outputPath)
        if let overlayPath = args["overlay"] {
            let overlay = try OverlayRenderer.render(image: Volume(image), labels: result.labels)
            try AtomicFile.write(try PNGWriter.encode(rgb: overlay.rgb, width: overlay.width, height: overlay.height), to: overlayPath)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        let s = image.spacing
        let voxelMM3 = s.x * s.y * s.z
        var counts: [Int32: Int] = [:]
        for l in result.labels where l != 0 { counts[l, default: 0] += 1 }
        let names = Dictionary(model.metadata.labels.map { (Int32($0.id), $0.name) }, uniquingKeysWith: { a, _ in a })
        let missing = model.metadata.labels.filter { $0.id != 0 && counts[Int32($0.id)] == nil }.map(\.name)
        if let reportPath = args["report"] {
            // The cascade's report keys, for the one stage that ran over the whole volume.
            let report: [String: Any] = [
                "mode": args.has("stage1-only") ? "stage1-only" : "single-stage",
                "wall_seconds": seconds,
                "peak_device_bytes": result.run.peakDeviceBytes,
                "stages": [["stage": stage, "seconds": result.run.seconds, "peak_device_bytes": result.run.peakDeviceBytes,
                            "grid": [result.stageSize.x, result.stageSize.y, result.stageSize.z], "tiles": 1]],
                "rois": [] as [Any],
                "label_volumes_mm3": Dictionary(uniqueKeysWithValues: counts.map { (names[$0.key] ?? "label \($0.key)", Double($0.value) * voxelMM3) }),
                "missed_labels": missing,
            ]
            let json = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
            try AtomicFile.write([UInt8](json), to: reportPath)
        }
        guard !args.has("quiet") else { return }
        print("stage \(stage) over the whole volume on \(device.name): grid \(result.stageSize.x)x\(result.stageSize.y)x\(result.stageSize.z)")
        print(String(format: "time %.2f s, peak device memory %.1f MiB", seconds, Double(result.run.peakDeviceBytes) / 1048576))
        for (label, count) in counts.sorted(by: { $0.key < $1.key }) {
            print(String(format: "  %3d %-24@ %10.1f mm3", label, names[label] ?? "label \(label)", Double(count) * voxelMM3))
        }
        if !missing.isEmpty { print("labels not found: " + missing.joined(separator: ", ")) }
        print("wrote \(outputPath)")
    }
}
