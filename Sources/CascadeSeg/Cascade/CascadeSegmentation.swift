import Foundation

/// The two-stage cascade (docs/PIPELINE.md, "The two-stage cascade"): stage 1 finds each
/// structure on a coarse copy of the whole image, stage 2 segments only the regions around what
/// it found, at the stage-2 spacing, and the regions' results are pasted into one label map.
///
/// 1. Normalize the image once (`SegmentationInput`).
/// 2. Stage 1 over the whole image (`WholeVolumeSegmentation.segmentStage`).
/// 3. One box per 26-connected component of each label of the stage-1 map.
/// 4. Prior boxes for the labels stage 1 missed or found too little of (unless disabled).
/// 5. ROIs planned by `ROIPlanner` from those boxes.
/// 6. Stage 2 on each ROI: crop, resample to the stage-2 size, pad, run, logits back to the box.
/// 7. Paste (`ROIPaste`).
/// 8. Labels missed by stage 1 and by the whole cascade, reported rather than dropped.
///
/// Every device-independent step is a building block of its own; this type only orders them
/// and measures.
public enum CascadeSegmentation {
    public struct Options: Sendable {
        /// Use the model's prior boxes for labels stage 1 misses (step 4).
        public var usePriors: Bool = true
        /// Bytes of device memory, passed to every `Network.run`.
        public var memoryBudget: Int? = nil
        /// Called with one line per step (stage 1's grid, each stage-2 ROI), for a progress display.
        public var progress: (@Sendable (String) -> Void)? = nil
        /// Checked before stage 1 and before each stage-2 ROI; once cancelled, the segmentation
        /// throws `CascadeSegError.cancelled` at the next check.
        public var cancellation: CancellationToken? = nil

        public init(usePriors: Bool = true, memoryBudget: Int? = nil, progress: (@Sendable (String) -> Void)? = nil,
                    cancellation: CancellationToken? = nil) {
            self.usePriors = usePriors
            self.memoryBudget = memoryBudget
            self.progress = progress
            self.cancellation = cancellation
        }
    }

    /// What one stage cost.
    public struct StageReport: Sendable, Equatable {
        /// The stage's index in the model's `stages` (1-based).
        public var stage: Int
        /// Wall time of the stage: its resampling, network runs, arg-max or pasting
        /// (normalization and ROI planning are outside both stages).
        public var seconds: Double
        /// Highest device memory of any of its runs, weights included.
        public var peakDeviceBytes: Int
        /// Stage 1: the grid it ran on. Stage 2: the input size of its largest ROI (zero when
        /// there was none).
        public var grid: SIMD3<Int>
        /// Network launches (stage 2: one per ROI).
        public var runs: Int
        /// Most spatial tiles of any of its runs (1 when every run fitted whole).
        public var tiles: Int

        public init(stage: Int, seconds: Double, peakDeviceBytes: Int, grid: SIMD3<Int>, runs: Int, tiles: Int) {
            self.stage = stage; self.seconds = seconds; self.peakDeviceBytes = peakDeviceBytes
            self.grid = grid; self.runs = runs; self.tiles = tiles
        }
    }

    public struct Result: Sendable {
        /// Labels on the image grid, index x + nx * (y + ny * z).
        public var labels: [Int32]
        /// Stage 1's labels on the stage-1 grid (`stage1Size`).
        public var stage1Labels: [Int32]
        public var stage1Size: SIMD3<Int>
        /// The stage-2 ROIs, in plan (and paste) order.
        public var rois: [ROIPlanner.ROI]
        /// Non-background labels of the table that stage 1 did not find.
        public var stage1MissedLabels: [Int]
        /// Labels whose prior box was used (stage 1 missed them or found too little).
        public var priorLabels: [Int]
        /// Non-background labels of the table absent from `labels`.
        public var missedLabels: [Int]
        public var stages: [StageReport]
        /// Highest device memory over the whole segmentation, weights included.
        public var peakDeviceBytes: Int
    }

    /// The 1-based indices in `model.metadata.stages` of the cascade's two graphs.
    public static func stageIndices(of model: ModelFile) throws -> (stage1: Int, stage2: Int) {
        guard let cascade = model.metadata.cascade else { throw noCascade(model) }
        let stages = model.metadata.stages
        guard let one = stages.firstIndex(where: { $0.graph == cascade.stage1 }),
              let two = stages.firstIndex(where: { $0.graph == cascade.stage2 }) else {
            throw CascadeSegError.invalidModel("the cascade names graphs '\(cascade.stage1)' and '\(cascade.stage2)', which must both be stages")
        }
        return (one + 1, two + 1)
    }

    /// Segments `image` with the model's cascade; `stage1` and `stage2` are the networks of the
    /// cascade's two graphs (the same `Network` twice when both name one graph).
    public static func segment(_ image: NiftiImage, model: ModelFile, stage1: Network, stage2: Network,
                               options: Options = .init()) throws -> Result {
        guard let cascade = model.metadata.cascade else { throw noCascade(model) }
        let (index1, index2) = try stageIndices(of: model)
        for (network, graph, n) in [(stage1, cascade.stage1, 1), (stage2, cascade.stage2, 2)] where network.graph.name != graph {
            throw CascadeSegError.usage("the stage-\(n) network runs graph '\(network.graph.name)', but the cascade's stage \(n) is '\(graph)'")
        }
        let say = options.progress ?? { _ in }
        let budget = options.memoryBudget
        let labelTable = model.metadata.labels.map(\.id).filter { $0 != 0 }.sorted()
        // Both networks are loaded by now: what the context holds is the floor of every peak.
        var peak = max(stage1.context.memory.liveBytes, stage2.context.memory.liveBytes)

        // 1. Normalize once, on the image grid.
        let normalized = try SegmentationInput.normalized(image, model: model)
        let imageSize = normalized.size

        // 2. Stage 1 over the whole image.
        try options.cancellation?.check("before stage 1")
        let s1 = try WholeVolumeSegmentation.segmentStage(normalized, model: model, stageIndex: index1, network: stage1, memoryBudget: budget)
        peak = max(peak, s1.run.peakDeviceBytes)
        let stage1Report = StageReport(stage: index1, seconds: s1.seconds, peakDeviceBytes: s1.run.peakDeviceBytes, grid: s1.size,
                                       runs: 1, tiles: s1.run.tiles)
        say("stage 1: grid \(text(s1.size)) at \(text(s1.spacing)) mm (image \(text(imageSize))), \(String(format: "%.2f", s1.seconds)) s"
            + (s1.run.tiles > 1 ? ", \(s1.run.tiles) tiles" : ""))

        // 3. One box per connected component of each label.
        let components = ConnectedComponents.label(labelMap: s1.labels, size: s1.size)
        let stage1Boxes = ROIPlanner.boxes(of: components)
        var stage1Voxels = [Int: Int]()
        for c in components.components { stage1Voxels[c.label, default: 0] += c.voxelCount }
        let stage1Missed = labelTable.filter { stage1Voxels[$0] == nil }

        // 4. Priors for the labels stage 1 missed, or found less of than min_volume_mm3.
        var priorBoxes = [ROIPlanner.LabeledBox]()
        if options.usePriors, let priors = cascade.priors, !priors.isEmpty,
           let foreground = ROIPlanner.foregroundBox(of: Volume(image)) {
            let stage1VoxelMM3 = s1.spacing.x * s1.spacing.y * s1.spacing.z
            for prior in priors {
                let found = Double(stage1Voxels[prior.label] ?? 0) * stage1VoxelMM3
                guard found == 0 || found < (prior.minVolumeMM3 ?? 0) else { continue }
                priorBoxes.append(.init(label: prior.label,
                                        box: ROIPlanner.priorBox(fractions: prior.box, foregroundBox: foreground, imageSize: imageSize)))
            }
        }
        let priorLabels = Array(Set(priorBoxes.map(\.label))).sorted()
        if !stage1Missed.isEmpty { say("stage 1 missed labels \(stage1Missed)") }
        if !priorLabels.isEmpty { say("prior boxes for labels \(priorLabels)") }

        // 5. ROIs.
        let planner = try ROIPlanner(cascade: cascade, imageSize: imageSize, imageSpacing: normalized.spacing, stage1Size: s1.size,
                                     stage2SpacingMM: model.metadata.stages[index2 - 1].spacingMM, sizeMultiple: stage2.graph.sizeMultiple)
        let rois = planner.plan(stage1Boxes: stage1Boxes, imageBoxes: priorBoxes)
        if let budget {
            // Refuse a budget no ROI tiling can meet before stage 2 starts, naming what it needs.
            let held = stage2.context.memory.liveBytes - (stage2.weightsResident ? stage2.weightBytes : 0)
            for roi in rois {
                let needed = held + (try stage2.minimumMemoryBudget(inputShape: [1, model.metadata.input.channels,
                                                                                 roi.inputSize.z, roi.inputSize.y, roi.inputSize.x]))
                guard needed <= budget else {
                    throw CascadeSegError.budget("a memory budget of \(budget) bytes is below the \(needed) bytes stage 2 needs for the ROI of labels \(roi.labels) (input \(text(roi.inputSize))) at its smallest tiles; give at least \(needed) bytes")
                }
            }
        }

        // 6, 7. Stage 2 on each ROI, pasted in plan order.
        let start2 = DispatchTime.now()
        var paste = ROIPaste(size: imageSize)
        var peak2 = 0, tiles2 = 1, largest = SIMD3<Int>.zero
        for (i, roi) in rois.enumerated() {
            try options.cancellation?.check("before stage-2 ROI \(i + 1) of \(rois.count)")
            var input = normalized.cropped(to: roi.box)
            if roi.stage2Size != roi.box.size { input = Resampler.resample(input, toSize: roi.stage2Size) }
            let output = try StageRun.run(input, paddedTo: roi.inputSize, network: stage2, memoryBudget: budget)
            let labelOfChannel = try ClassLogits.labelOfChannel(model.metadata.labels, channels: output.logits.channels)
            paste.paste(output.logits.resampled(to: roi.box.size), at: roi.box, labels: roi.labels, labelOfChannel: labelOfChannel)
            peak2 = max(peak2, output.run.peakDeviceBytes)
            tiles2 = max(tiles2, output.run.tiles)
            if product(roi.inputSize) > product(largest) { largest = roi.inputSize }
            say("stage 2: ROI \(i + 1)/\(rois.count) labels \(roi.labels) input \(text(roi.inputSize))"
                + (output.run.tiles > 1 ? ", \(output.run.tiles) tiles" : ""))
        }
        if rois.isEmpty { say("stage 2: no ROIs (stage 1 found no structure and no prior applied)") }
        peak = max(peak, peak2)
        let stage2Report = StageReport(stage: index2, seconds: start2.secondsElapsed,
                                       peakDeviceBytes: peak2, grid: largest, runs: rois.count, tiles: tiles2)

        // 8. What is missing, reported.
        let present = Set(paste.labels)
        let missed = labelTable.filter { !present.contains(Int32($0)) }
        return Result(labels: paste.labels, stage1Labels: s1.labels, stage1Size: s1.size, rois: rois,
                      stage1MissedLabels: stage1Missed, priorLabels: priorLabels, missedLabels: missed,
                      stages: [stage1Report, stage2Report], peakDeviceBytes: peak)
    }

    // MARK: - Internals

    static func noCascade(_ model: ModelFile) -> CascadeSegError {
        .invalidModel("model '\(model.metadata.name)' has no `cascade` section, so it has no two-stage cascade; segment it with one network over the whole image (WholeVolumeSegmentation, `segment --single-stage`)")
    }

    static func product(_ v: SIMD3<Int>) -> Int { v.x * v.y * v.z }
    static func text(_ v: SIMD3<Int>) -> String { "\(v.x)x\(v.y)x\(v.z)" }
    static func text(_ v: SIMD3<Double>) -> String { String(format: "%.2fx%.2fx%.2f", v.x, v.y, v.z) }
}
