/// Which networks of a model a segmentation runs.
public enum SegmentationMode: String, Sendable, CaseIterable {
    /// The two-stage cascade: stage 1 over a coarse copy of the whole image, stage 2 on the
    /// regions of interest around what it found (docs/PIPELINE.md). Needs a `cascade` section.
    case cascade
    /// One network over the whole image: the cascade's stage-2 network, or a one-stage model's
    /// only network (the baseline the cascade saves memory against).
    case singleStage = "single-stage"
    /// The cascade's stage-1 network alone, its labels resampled to the image grid.
    case stage1Only = "stage1-only"

    /// The mode a model runs in when none is chosen: the cascade when the model has a `cascade`
    /// section, else its single stage. A model of several stages without a cascade section has
    /// no default and is refused, naming the choices.
    public static func automatic(for model: ModelFile) throws -> SegmentationMode {
        if model.metadata.cascade != nil { return .cascade }
        let stages = model.metadata.stages.count
        guard stages == 1 else {
            throw CascadeSegError.usage("the model has \(stages) stages but no cascade section to combine them; choose a mode: --single-stage or --stage1-only (SegmentationMode.singleStage or .stage1Only)")
        }
        return .singleStage
    }

    /// The 1-based stage index this mode runs outside the cascade (0 for `.cascade`, which runs
    /// both of the cascade's stages).
    public func stageIndex(in model: ModelFile) throws -> Int {
        let indices = model.metadata.cascade == nil ? nil : try CascadeSegmentation.stageIndices(of: model)
        switch self {
        case .cascade:
            _ = try CascadeSegmentation.stageIndices(of: model)
            return 0
        case .singleStage: return indices?.stage2 ?? 1
        case .stage1Only: return indices?.stage1 ?? 1
        }
    }
}

/// How to run one segmentation.
///
/// Thread safety: a value type of `Sendable` parts; the closures it holds are called on the
/// thread that runs the segmentation.
public struct SegmentationOptions: Sendable {
    /// The networks to run; nil picks `SegmentationMode.automatic(for:)`.
    public var mode: SegmentationMode?
    /// Use the model's prior boxes for labels stage 1 misses (cascade only; ignored otherwise).
    public var usePriors: Bool
    /// The most device memory, in bytes, the segmentation may hold at once, counting everything
    /// the device's context holds (this model's weights and any other model's on the device).
    /// Networks that do not fit whole run streamed in tiles with the same labels; a budget below
    /// the smallest tile is refused before any work, naming the minimum. Nil: no limit, and the
    /// weights stay on the device between segmentations.
    public var memoryBudget: Int?
    /// Called with one line per step (stage 1's grid, each stage-2 ROI, ...), on the thread that
    /// runs the segmentation, while it runs.
    public var progress: (@Sendable (String) -> Void)?
    /// Checked before each stage and each stage-2 ROI; see `CancellationToken`.
    public var cancellation: CancellationToken?

    /// Options with the given values; the defaults are the automatic mode, priors on, no budget,
    /// no progress and no cancellation.
    public init(mode: SegmentationMode? = nil, usePriors: Bool = true, memoryBudget: Int? = nil,
                progress: (@Sendable (String) -> Void)? = nil, cancellation: CancellationToken? = nil) {
        self.mode = mode
        self.usePriors = usePriors
        self.memoryBudget = memoryBudget
        self.progress = progress
        self.cancellation = cancellation
    }
}
