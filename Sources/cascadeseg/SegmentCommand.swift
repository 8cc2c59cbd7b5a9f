import CascadeSeg
import Foundation

/// `cascadeseg segment MODEL.cseg INPUT.nii.gz -o OUTPUT.nii.gz`: a NIfTI image in, a label map
/// with the image's exact geometry out. With `--input-dir DIR --output-dir DIR` instead: every
/// image of a folder (batch mode, `BatchSegmentation`).
///
/// Modes. Without a mode flag a model with a `cascade` section runs the two-stage cascade
/// (`CascadeSegmentation`, docs/PIPELINE.md: stage 1 over the whole image, stage 2 on the ROIs
/// around what it found, results pasted back), and a model of one stage runs that network over
/// the whole image. `--single-stage` runs the cascade's stage-2 network over the whole image
/// (the baseline the cascade saves memory against); `--stage1-only` runs stage 1 alone.
///
/// Options. `--no-prior` ignores the model's prior boxes (cascade only). `--memory-budget BYTES`
/// (a plain integer, or with K, M or G, 1024-based: `512M`) is passed to every network run.
/// `--report R.json` and `--overlay O.png` (slices with the ROI boxes outlined) are extra
/// outputs. Progress goes to stderr and the summary to stdout, both silenced by `--quiet`.
///
/// Everything that can be checked before a device is touched is checked first (arguments, the
/// model, the image file, its voxels against the model), so bad input fails fast with one clear
/// line. Outputs are encoded in memory and written last, each atomically. The work itself is the
/// library's `Segmenter`, and the report its `SegmentationResult.report`.
enum SegmentCommand {
    static let usage = """
        usage: cascadeseg segment MODEL.cseg INPUT.nii.gz -o OUTPUT.nii.gz [--single-stage | --stage1-only] [--no-prior]
               [--memory-budget BYTES] [--overlay O.png] [--report R.json] [--device D] [--quiet]
           or: cascadeseg segment MODEL.cseg --input-dir DIR --output-dir DIR [--shard I/N] [--devices D0,D1,...]
               [--single-stage | --stage1-only] [--no-prior] [--memory-budget BYTES] [--summary S.json] [--quiet]
        """

    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["output", "device", "devices", "overlay", "report", "memory-budget",
                                                "input-dir", "output-dir", "shard", "shard-count", "summary"],
                                 flags: ["single-stage", "stage1-only", "no-prior", "quiet"])
        if args["input-dir"] != nil || args["output-dir"] != nil {
            let failed = try BatchSegmentation.run(args)
            exit(Int32(min(failed, 125)))
        }
        for batchOnly in ["devices", "shard", "shard-count", "summary"] where args[batchOnly] != nil {
            throw CascadeSegError.usage("--\(batchOnly) applies to batch mode (--input-dir DIR --output-dir DIR) only\n\(usage)")
        }
        guard args.positionals.count == 2 else { throw CascadeSegError.usage(usage) }
        let (modelPath, inputPath) = (args.positionals[0], args.positionals[1])
        let outputPath = try args.require("output")
        let quiet = args.has("quiet")
        let model = try ModelFile(contentsOf: modelPath)
        var options = try segmentationOptions(args, model: model)

        let image = try NiftiImage(contentsOf: inputPath)
        try SegmentationInput.check(image, model: model)

        let segmenter = try Segmenter(model: model, device: try ComputeDevice.select(args["device"]))
        if !quiet { options.progress = { line in FileHandle.standardError.write(Data((line + "\n").utf8)) } }
        let result = try segmenter.segment(image, options: options)

        // Encode every output before writing any, so a failure leaves no partial set behind.
        var overlay: [UInt8]? = nil
        if args["overlay"] != nil {
            let drawn = try OverlayRenderer.render(image: Volume(image), labels: result.labels, boxes: result.rois.map(\.box))
            overlay = try PNGWriter.encode(rgb: drawn.rgb, width: drawn.width, height: drawn.height)
        }
        let report = args["report"] != nil ? try result.reportJSON() : nil
        try NiftiImage.writeLabelMap(result.labels, like: image, to: outputPath)
        if let overlay, let path = args["overlay"] { try AtomicFile.write(overlay, to: path) }
        if let report, let path = args["report"] { try AtomicFile.write(report, to: path) }

        guard !quiet else { return }
        switch result.mode {
        case .cascade:
            print("cascade on \(segmenter.device.name): stage 1 grid \(text(result.stages[0].grid)), \(result.rois.count) ROI(s) for stage 2")
        case .singleStage, .stage1Only:
            print("stage \(result.stages[0].stage) over the whole volume on \(segmenter.device.name): grid \(text(result.stages[0].grid))")
        }
        let budgetText = result.memoryBudget.map { String(format: " (budget %.1f MiB)", Double($0) / 1048576) } ?? ""
        print(String(format: "time %.2f s, peak device memory %.1f MiB", result.seconds, Double(result.peakDeviceBytes) / 1048576) + budgetText)
        let name = result.name(ofLabel:)
        for (label, count) in result.labelVoxelCounts.sorted(by: { $0.key < $1.key }) {
            let padded = name(Int(label)).padding(toLength: max(24, name(Int(label)).count), withPad: " ", startingAt: 0)
            print(String(format: "  %3d ", label) + padded + String(format: " %10.1f mm3", Double(count) * result.voxelVolumeMM3))
        }
        if let stage1Missed = result.stage1MissedLabels, !stage1Missed.isEmpty {
            print("stage 1 did not find: " + stage1Missed.map(name).joined(separator: ", "))
        }
        if !result.priorLabels.isEmpty { print("prior boxes used for: " + result.priorLabels.map(name).joined(separator: ", ")) }
        if !result.missedLabels.isEmpty { print("labels not found: " + result.missedLabels.map(name).joined(separator: ", ")) }
        print("wrote \(outputPath)")
    }

    /// The options the flags ask for (mode, priors, budget), checked against the model.
    static func segmentationOptions(_ args: Arguments, model: ModelFile) throws -> SegmentationOptions {
        let mode = try choose(args, model: model)
        return SegmentationOptions(mode: mode, usePriors: !args.has("no-prior"), memoryBudget: try args.bytes("memory-budget"))
    }

    /// The mode the flags choose, or the model's automatic one.
    static func choose(_ args: Arguments, model: ModelFile) throws -> SegmentationMode {
        let cascade = model.metadata.cascade
        let mode: SegmentationMode
        switch (args.has("single-stage"), args.has("stage1-only")) {
        case (true, true): throw CascadeSegError.usage("--single-stage and --stage1-only exclude each other")
        case (true, false): mode = .singleStage
        case (false, true): mode = .stage1Only
        case (false, false): mode = try SegmentationMode.automatic(for: model)
        }
        if args.has("no-prior"), mode != .cascade {
            throw CascadeSegError.usage("--no-prior applies to the two-stage cascade only, not to --\(mode.rawValue)"
                                        + (cascade == nil ? " (the model has no cascade section)" : ""))
        }
        _ = try mode.stageIndex(in: model)
        return mode
    }

    static func text(_ v: SIMD3<Int>) -> String { "\(v.x)x\(v.y)x\(v.z)" }
}
