import Foundation

/// One stage network over a whole image: normalize as the model says, resample to the stage's
/// spacing, zero-pad to the network's size multiple, run, take the arg-max over classes, crop the
/// padding and resample the labels (nearest) back to the image grid. This is the single-stage
/// baseline of the cascade (`segment --single-stage`), its `--stage1-only` mode, and, through
/// `segmentStage`, stage 1 of the cascade itself. The whole stage grid is one network input.
public enum WholeVolumeSegmentation {
    public struct Result: Sendable {
        /// Label ids on the image grid, index x + nx * (y + ny * z).
        public var labels: [Int32]
        /// Label ids on the grid the network ran on (`stageSize`), before going back to the image.
        public var stageLabels: [Int32]
        /// Grid the network ran on (x, y, z), before padding.
        public var stageSize: SIMD3<Int>
        public var stageSpacing: SIMD3<Double>
        /// Wall time of the stage step (resampling, the run, the arg-max), normalization and the
        /// way back to the image grid excluded.
        public var stageSeconds: Double
        public var run: RunResult
    }

    /// One stage on an already normalized image: its labels on the stage grid.
    public struct StageResult: Sendable {
        /// Label ids on the stage grid, index x + nx * (y + ny * z).
        public var labels: [Int32]
        /// The stage grid (x, y, z), before padding.
        public var size: SIMD3<Int>
        /// Its spacing in mm: the stage's `spacing_mm` up to the rounding of the grid size
        /// (the resampler keeps the image's physical extent), or the image's own spacing.
        public var spacing: SIMD3<Double>
        /// Wall time of the step: resampling, the run and the arg-max.
        public var seconds: Double
        public var run: RunResult
    }

    /// `network` must be the model's graph for `stageIndex` (1-based) loaded on a device.
    /// `memoryBudget` (bytes) is passed to `Network.run`.
    public static func segment(_ image: NiftiImage, model: ModelFile, stageIndex: Int, network: Network,
                               memoryBudget: Int? = nil) throws -> Result {
        try checkStage(stageIndex, of: model)
        let normalized = try SegmentationInput.normalized(image, model: model)
        let stage = try segmentStage(normalized, model: model, stageIndex: stageIndex, network: network, memoryBudget: memoryBudget)
        let imageSize = normalized.size
        let labels = stage.size == imageSize ? stage.labels : Resampler.resampleLabelsToShape(stage.labels, from: stage.size, to: imageSize)
        return Result(labels: labels, stageLabels: stage.labels, stageSize: stage.size, stageSpacing: stage.spacing,
                      stageSeconds: stage.seconds, run: stage.run)
    }

    /// The stage step on the normalized image (`SegmentationInput.normalized`): resample to the
    /// stage spacing when it differs from the image's by more than 1e-6 (relative; trilinear,
    /// anti-aliased where the grid shrinks), zero-pad at the far end to the graph's size multiple,
    /// run, and take the arg-max (first maximum) on the unpadded stage grid.
    public static func segmentStage(_ normalized: Volume, model: ModelFile, stageIndex: Int, network: Network,
                                    memoryBudget: Int? = nil) throws -> StageResult {
        try checkStage(stageIndex, of: model)
        let graphName = model.metadata.stages[stageIndex - 1].graph
        guard network.graph.name == graphName else {
            throw CascadeSegError.usage("the network runs graph '\(network.graph.name)', but stage \(stageIndex) of the model is graph '\(graphName)'")
        }
        let start = DispatchTime.now()
        var volume = normalized
        let target = SIMD3<Double>(zyx: model.metadata.stages[stageIndex - 1].spacingMM)
        let relative = (volume.spacing - target) / target
        if max(abs(relative.x), abs(relative.y), abs(relative.z)) > 1e-6 {
            volume = Resampler.resample(volume, toSpacing: target)
        }
        let padded = StageRun.padded(volume.size, toMultipleOf: SIMD3(zyx: network.graph.sizeMultiple))
        let output = try StageRun.run(volume, paddedTo: padded, network: network, memoryBudget: memoryBudget)
        let labelOfChannel = try ClassLogits.labelOfChannel(model.metadata.labels, channels: output.logits.channels)
        let labels = output.logits.argMax(labelOfChannel: labelOfChannel)
        let seconds = start.secondsElapsed
        return StageResult(labels: labels, size: volume.size, spacing: volume.spacing, seconds: seconds, run: output.run)
    }

    static func checkStage(_ stageIndex: Int, of model: ModelFile) throws {
        let count = model.metadata.stages.count
        guard stageIndex >= 1, stageIndex <= count else {
            throw CascadeSegError.usage("the model has \(count) stage(s); stage \(stageIndex) does not exist")
        }
    }
}
