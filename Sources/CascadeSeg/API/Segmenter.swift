import Foundation

/// The engine behind one call: a model loaded on one OpenCL device, ready to segment volumes.
///
/// ```swift
/// let segmenter = try Segmenter(modelPath: "brain.cseg", device: "gpu")
/// let result = try segmenter.segment(file: "scan.nii.gz", writingLabelsTo: "labels.nii.gz")
/// print(result.rois.count, result.peakDeviceBytes)
/// ```
///
/// Loading compiles the networks' kernels on the device (once per device per process, shared by
/// every `Segmenter` there) and, without a memory budget, keeps the weights on the device
/// between segmentations. Each network is loaded when a segmentation first needs it.
///
/// Thread safety: a `Segmenter` may be used from any thread. Calls on one `Segmenter` run one at
/// a time (a second call waits for the first), since its networks hold per-run device state.
/// Separate `Segmenter`s run concurrently, also on one device: the device's context serializes
/// the OpenCL calls themselves. Device memory is counted per device, not per segmenter: while
/// two segmenters run on one device at once, a memory budget counts what the other holds too,
/// and each run's reported peak (measured over its own window) is the device's high-water mark
/// during that run, the other run's buffers included.
public final class Segmenter: @unchecked Sendable {
    /// The model file.
    public let model: ModelFile
    /// The device the networks run on.
    public let device: ComputeDevice
    /// The device's process-wide context (programs, queue, memory accounting).
    public let context: ComputeContext

    private let lock = NSLock()
    private var networks: [Int: Network] = [:]

    /// Every OpenCL device of every platform, numbered as `device` indices and the command-line
    /// `--device INDEX` count them.
    public static func devices() throws -> [ComputeDevice] { try ComputeDevice.all() }

    /// The device `spec` names: an index, `cpu`, `gpu` or a case-insensitive name substring;
    /// nil picks the first GPU, or else the first device.
    public static func device(_ spec: String?) throws -> ComputeDevice { try ComputeDevice.select(spec) }

    /// Loads `model` onto `device` (nil: `Segmenter.device(nil)`). Checks that the model's
    /// stages and cascade section fit together; networks are built on first use.
    public init(model: ModelFile, device: ComputeDevice? = nil) throws {
        self.model = model
        self.device = try device ?? ComputeDevice.select(nil)
        self.context = try ComputeContext.shared(for: self.device)
        if model.metadata.cascade != nil { _ = try CascadeSegmentation.stageIndices(of: model) }
        guard !model.metadata.stages.isEmpty else { throw CascadeSegError.invalidModel("model '\(model.metadata.name)' has no stages") }
    }

    /// Loads the `.cseg` file at `path` onto the device `device` names (see `device(_:)`).
    public convenience init(modelPath path: String, device spec: String? = nil) throws {
        let model = try ModelFile(contentsOf: path)
        try self.init(model: model, device: try ComputeDevice.select(spec))
    }

    /// Loads a `.cseg` model from its bytes (e.g. embedded in an application) onto the device
    /// `device` names (see `device(_:)`).
    public convenience init(modelBytes bytes: [UInt8], device spec: String? = nil) throws {
        let model = try ModelFile(bytes: bytes)
        try self.init(model: model, device: try ComputeDevice.select(spec))
    }

    /// Builds every network the model's modes use now (kernels compiled, and weights uploaded
    /// unless `residentWeights` is false), instead of at the first segmentation.
    public func prepare(residentWeights: Bool = true) throws {
        try lock.withLock {
            for stage in 1...model.metadata.stages.count { _ = try network(stage, residentWeights: residentWeights) }
        }
    }

    /// Frees the device memory this segmenter's networks hold (their weights); the next
    /// segmentation uploads them again.
    public func releaseDeviceMemory() {
        lock.withLock { networks.removeAll() }
    }

    // MARK: Segmenting

    /// Segments an image: checks it against the model, normalizes it as the model says, runs
    /// the mode's networks and returns labels with the image's grid.
    public func segment(_ image: NiftiImage, options: SegmentationOptions = .init()) throws -> SegmentationResult {
        try SegmentationInput.check(image, model: model)
        let mode = try options.mode ?? SegmentationMode.automatic(for: model)
        let stageIndex = try mode.stageIndex(in: model)
        try options.cancellation?.check("before the first stage")
        return try lock.withLock { try segmentLocked(image, mode: mode, stageIndex: stageIndex, options: options) }
    }

    /// Segments a volume held in memory.
    ///
    /// - Parameters:
    ///   - voxels: intensities, index x + nx * (y + ny * z) (x fastest), `size.x * size.y * size.z` of them.
    ///   - size: the grid (nx, ny, nz).
    ///   - spacing: voxel spacing in mm along x, y, z; used when `affine` is nil.
    ///   - affine: the voxel-to-world matrix in mm, 4 rows of 4 (or 3), row-major; its column
    ///     lengths are the spacing. Nil: a diagonal matrix of `spacing`.
    public func segment(voxels: [Float], size: SIMD3<Int>, spacing: SIMD3<Double>, affine: [[Double]]? = nil,
                        options: SegmentationOptions = .init()) throws -> SegmentationResult {
        guard spacing.x > 0, spacing.y > 0, spacing.z > 0, spacing.x.isFinite, spacing.y.isFinite, spacing.z.isFinite else {
            throw CascadeSegError.invalidInput("the voxel spacing must be positive and finite, got \(spacing.x) x \(spacing.y) x \(spacing.z)")
        }
        let matrix = affine ?? [[spacing.x, 0, 0, 0], [0, spacing.y, 0, 0], [0, 0, spacing.z, 0], [0, 0, 0, 1]]
        let geometry = try NiftiGeometry(nx: size.x, ny: size.y, nz: size.z, affine: matrix, niftiVersion: 2)
        return try segment(try NiftiImage(voxels: voxels, geometry: geometry), options: options)
    }

    /// Segments the NIfTI file at `path` and, when `outputPath` is given, writes the label map
    /// there with exactly the input's geometry (atomically: a complete file or none).
    @discardableResult
    public func segment(file path: String, writingLabelsTo outputPath: String? = nil,
                        options: SegmentationOptions = .init()) throws -> SegmentationResult {
        let image = try NiftiImage(contentsOf: path)
        let result = try segment(image, options: options)
        if let outputPath { try NiftiImage.writeLabelMap(result.labels, like: image, to: outputPath) }
        return result
    }

    /// Runs one stage network (1-based `stage`) on a tensor, 1 x C x D x H x W or C x D x H x W,
    /// returning its raw outputs (no normalization, resampling or arg-max).
    public func run(stage: Int, input: Tensor, memoryBudget: Int? = nil, profile: Bool = false) throws -> RunResult {
        try WholeVolumeSegmentation.checkStage(stage, of: model)
        return try lock.withLock { try network(stage, residentWeights: memoryBudget == nil).run(input, memoryBudget: memoryBudget, profile: profile) }
    }

    // MARK: Internals

    /// The network of `stage`, built on first use (callers hold `lock`).
    private func network(_ stage: Int, residentWeights: Bool) throws -> Network {
        if let n = networks[stage] { return n }
        let n = try Network(model: model, stage: stage, context: context, residentWeights: residentWeights)
        networks[stage] = n
        return n
    }

    private func segmentLocked(_ image: NiftiImage, mode: SegmentationMode, stageIndex: Int,
                               options: SegmentationOptions) throws -> SegmentationResult {
        let budget = options.memoryBudget
        let start = DispatchTime.now()
        var result = SegmentationResult(mode: mode, labels: [], size: SIMD3(image.nx, image.ny, image.nz), geometry: image.geometry,
                                        rois: [], stages: [], peakDeviceBytes: 0, memoryBudget: budget, seconds: 0,
                                        stage1MissedLabels: nil, priorLabels: [], missedLabels: [], labelVoxelCounts: [:],
                                        labelNames: Dictionary(model.metadata.labels.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a }))
        switch mode {
        case .cascade:
            let (one, two) = try CascadeSegmentation.stageIndices(of: model)
            let stage1 = try network(one, residentWeights: budget == nil)
            let stage2 = try network(two, residentWeights: budget == nil)
            let r = try CascadeSegmentation.segment(image, model: model, stage1: stage1, stage2: stage2,
                                                    options: .init(usePriors: options.usePriors, memoryBudget: budget,
                                                                   progress: options.progress, cancellation: options.cancellation))
            (result.labels, result.stages, result.rois, result.peakDeviceBytes) = (r.labels, r.stages, r.rois, r.peakDeviceBytes)
            (result.stage1MissedLabels, result.priorLabels) = (r.stage1MissedLabels, r.priorLabels)
        case .singleStage, .stage1Only:
            let network = try network(stageIndex, residentWeights: budget == nil)
            let r = try WholeVolumeSegmentation.segment(image, model: model, stageIndex: stageIndex, network: network, memoryBudget: budget)
            let s = r.stageSize
            options.progress?("stage \(stageIndex) over the whole image: grid \(s.x)x\(s.y)x\(s.z)" + (r.run.tiles > 1 ? ", \(r.run.tiles) tiles" : ""))
            result.labels = r.labels
            result.stages = [.init(stage: stageIndex, seconds: r.stageSeconds, peakDeviceBytes: r.run.peakDeviceBytes, grid: s,
                                   runs: 1, tiles: r.run.tiles)]
            result.peakDeviceBytes = r.run.peakDeviceBytes
        }
        result.seconds = start.secondsElapsed
        var counts: [Int32: Int] = [:]
        result.labels.withUnsafeBufferPointer { for l in $0 where l != 0 { counts[l, default: 0] += 1 } }
        result.labelVoxelCounts = counts
        result.missedLabels = model.metadata.labels.map(\.id).filter { $0 != 0 && counts[Int32($0)] == nil }.sorted()
        return result
    }
}
