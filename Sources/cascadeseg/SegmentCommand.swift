import CascadeSeg
import Foundation

/// `cascadeseg segment MODEL.cseg INPUT.nii.gz -o OUTPUT.nii.gz`: a NIfTI image in, a label map
/// with the image's exact geometry out.
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
/// line. Outputs are encoded in memory and written last, each atomically.
enum SegmentCommand {
    static let usage = """
        usage: cascadeseg segment MODEL.cseg INPUT.nii.gz -o OUTPUT.nii.gz [--single-stage | --stage1-only] [--no-prior]
               [--memory-budget BYTES] [--overlay O.png] [--report R.json] [--device D] [--quiet]
        """

    enum Mode: String { case cascade, singleStage = "single-stage", stage1Only = "stage1-only" }

    /// What any mode produced, in the cascade's terms (one stage and no ROIs outside the cascade).
    struct Outcome {
        var labels: [Int32]
        var stages: [CascadeSegmentation.StageReport]
        var rois: [ROIPlanner.ROI] = []
        var peakDeviceBytes: Int
        var stage1MissedLabels: [Int]? = nil
        var priorLabels: [Int] = []
    }

    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["output", "device", "overlay", "report", "memory-budget"],
                                 flags: ["single-stage", "stage1-only", "no-prior", "quiet"])
        guard args.positionals.count == 2 else { throw CascadeSegError.usage(usage) }
        let (modelPath, inputPath) = (args.positionals[0], args.positionals[1])
        let outputPath = try args.require("output")
        let budget = try args.bytes("memory-budget")
        let quiet = args.has("quiet")
        let model = try ModelFile(contentsOf: modelPath)
        let (mode, stage) = try choose(args, model: model)

        let image = try NiftiImage(contentsOf: inputPath)
        try SegmentationInput.check(image, model: model)

        let device = try ComputeDevice.select(args["device"])
        let context = try ComputeContext.shared(for: device)
        let toStandardError: @Sendable (String) -> Void = { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        let progress: (@Sendable (String) -> Void)? = quiet ? nil : toStandardError
        let start = DispatchTime.now()
        let outcome: Outcome
        switch mode {
        case .cascade:
            let (one, two) = try CascadeSegmentation.stageIndices(of: model)
            let stage1 = try Network(model: model, stage: one, context: context, residentWeights: budget == nil)
            let stage2 = two == one ? stage1 : try Network(model: model, stage: two, context: context, residentWeights: budget == nil)
            let r = try CascadeSegmentation.segment(image, model: model, stage1: stage1, stage2: stage2,
                                                    options: .init(usePriors: !args.has("no-prior"), memoryBudget: budget, progress: progress))
            outcome = Outcome(labels: r.labels, stages: r.stages, rois: r.rois, peakDeviceBytes: r.peakDeviceBytes,
                              stage1MissedLabels: r.stage1MissedLabels, priorLabels: r.priorLabels)
        case .singleStage, .stage1Only:
            let network = try Network(model: model, stage: stage, context: context, residentWeights: budget == nil)
            let r = try WholeVolumeSegmentation.segment(image, model: model, stageIndex: stage, network: network, memoryBudget: budget)
            let s = r.stageSize
            progress?("stage \(stage) over the whole image: grid \(s.x)x\(s.y)x\(s.z)" + (r.run.tiles > 1 ? ", \(r.run.tiles) tiles" : ""))
            outcome = Outcome(labels: r.labels,
                              stages: [.init(stage: stage, seconds: r.stageSeconds, peakDeviceBytes: r.run.peakDeviceBytes, grid: s,
                                             runs: 1, tiles: r.run.tiles)],
                              peakDeviceBytes: r.run.peakDeviceBytes)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9

        // Encode every output before writing any, so a failure leaves no partial set behind.
        let volume = Volume(image)
        let voxelMM3 = volume.spacing.x * volume.spacing.y * volume.spacing.z
        var counts: [Int32: Int] = [:]
        for l in outcome.labels where l != 0 { counts[l, default: 0] += 1 }
        let names = Dictionary(model.metadata.labels.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        func name(_ id: Int) -> String { names[id] ?? "label \(id)" }
        let missed = model.metadata.labels.map(\.id).filter { $0 != 0 && counts[Int32($0)] == nil }.sorted()
        var overlay: [UInt8]? = nil
        if args["overlay"] != nil {
            let drawn = try OverlayRenderer.render(image: volume, labels: outcome.labels, boxes: outcome.rois.map(\.box))
            overlay = try PNGWriter.encode(rgb: drawn.rgb, width: drawn.width, height: drawn.height)
        }
        var report: [UInt8]? = nil
        if args["report"] != nil {
            var json: [String: Any] = [
                "mode": mode.rawValue,
                "wall_seconds": seconds,
                "peak_device_bytes": outcome.peakDeviceBytes,
                "memory_budget_bytes": budget.map { $0 as Any } ?? NSNull(),
                "stages": outcome.stages.map { s -> [String: Any] in
                    ["stage": s.stage, "seconds": s.seconds, "peak_device_bytes": s.peakDeviceBytes, "grid": array(s.grid),
                     "runs": s.runs, "tiles": s.tiles]
                },
                "rois": outcome.rois.map { roiJSON($0, geometry: image.geometry, spacing: volume.spacing) },
                "label_volumes_mm3": Dictionary(counts.map { (name(Int($0.key)), Double($0.value) * voxelMM3) }, uniquingKeysWith: +),
                "missed_labels": missed.map(name),
                "prior_labels": outcome.priorLabels.map(name),
            ]
            if let stage1Missed = outcome.stage1MissedLabels { json["stage1_missed_labels"] = stage1Missed.map(name) }
            report = [UInt8](try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys]))
        }
        try NiftiImage.writeLabelMap(outcome.labels, like: image, to: outputPath)
        if let overlay, let path = args["overlay"] { try AtomicFile.write(overlay, to: path) }
        if let report, let path = args["report"] { try AtomicFile.write(report, to: path) }

        guard !quiet else { return }
        switch mode {
        case .cascade:
            print("cascade on \(device.name): stage 1 grid \(text(outcome.stages[0].grid)), \(outcome.rois.count) ROI(s) for stage 2")
        case .singleStage, .stage1Only:
            print("stage \(stage) over the whole volume on \(device.name): grid \(text(outcome.stages[0].grid))")
        }
        let budgetText = budget.map { String(format: " (budget %.1f MiB)", Double($0) / 1048576) } ?? ""
        print(String(format: "time %.2f s, peak device memory %.1f MiB", seconds, Double(outcome.peakDeviceBytes) / 1048576) + budgetText)
        for (label, count) in counts.sorted(by: { $0.key < $1.key }) {
            let padded = name(Int(label)).padding(toLength: max(24, name(Int(label)).count), withPad: " ", startingAt: 0)
            print(String(format: "  %3d ", label) + padded + String(format: " %10.1f mm3", Double(count) * voxelMM3))
        }
        if let stage1Missed = outcome.stage1MissedLabels, !stage1Missed.isEmpty {
            print("stage 1 did not find: " + stage1Missed.map(name).joined(separator: ", "))
        }
        if !outcome.priorLabels.isEmpty { print("prior boxes used for: " + outcome.priorLabels.map(name).joined(separator: ", ")) }
        if !missed.isEmpty { print("labels not found: " + missed.map(name).joined(separator: ", ")) }
        print("wrote \(outputPath)")
    }

    /// The mode and, outside the cascade, the stage index (1-based) to run.
    static func choose(_ args: Arguments, model: ModelFile) throws -> (Mode, Int) {
        let cascade = model.metadata.cascade
        let indices = cascade == nil ? nil : try CascadeSegmentation.stageIndices(of: model)
        let mode: Mode
        switch (args.has("single-stage"), args.has("stage1-only")) {
        case (true, true): throw CascadeSegError.usage("--single-stage and --stage1-only exclude each other")
        case (true, false): mode = .singleStage
        case (false, true): mode = .stage1Only
        case (false, false):
            let stages = model.metadata.stages.count
            guard cascade != nil || stages == 1 else {
                throw CascadeSegError.usage("the model has \(stages) stages but no cascade section to combine them; choose --single-stage or --stage1-only")
            }
            mode = cascade != nil ? .cascade : .singleStage
        }
        if args.has("no-prior"), mode != .cascade {
            throw CascadeSegError.usage("--no-prior applies to the two-stage cascade only, not to --\(mode.rawValue)"
                                        + (cascade == nil ? " (the model has no cascade section)" : ""))
        }
        switch mode {
        case .cascade: return (mode, 0)
        case .singleStage: return (mode, indices?.stage2 ?? 1)
        case .stage1Only: return (mode, indices?.stage1 ?? 1)
        }
    }

    /// One ROI in the report: its labels (ids), its box in voxels (half-open: `upper` is the
    /// first voxel past the end), in world mm (the centres of its first and last voxels), its
    /// physical size, and the stage-2 grid and network input it was run on.
    static func roiJSON(_ roi: ROIPlanner.ROI, geometry: NiftiGeometry, spacing: SIMD3<Double>) -> [String: Any] {
        let lower = SIMD3<Double>(roi.box.lower), last = SIMD3<Double>(roi.box.upper &- 1)
        return [
            "labels": roi.labels,
            "box_voxels": ["lower": array(roi.box.lower), "upper": array(roi.box.upper)],
            "box_mm": ["lower": array(geometry.worldMM(ofVoxel: lower)), "upper": array(geometry.worldMM(ofVoxel: last))],
            "size_mm": array(SIMD3<Double>(roi.box.size) * spacing),
            "stage2_size": array(roi.stage2Size),
            "input_size": array(roi.inputSize),
        ]
    }

    static func array(_ v: SIMD3<Int>) -> [Int] { [v.x, v.y, v.z] }
    static func array(_ v: SIMD3<Double>) -> [Double] { [v.x, v.y, v.z] }
    static func text(_ v: SIMD3<Int>) -> String { "\(v.x)x\(v.y)x\(v.z)" }
}
