import Foundation

/// One stage network over a whole image: normalize as the model says, resample to the stage's
/// spacing, zero-pad to the network's size multiple, run, take the arg-max over classes, crop the
/// padding and resample the labels (nearest) back to the image grid. This is the single-stage
/// baseline of the cascade and its `--stage1-only` mode; it holds the whole volume on the device.
public enum WholeVolumeSegmentation {
    public struct Result: Sendable {
        /// Label ids on the image grid, index x + nx * (y + ny * z).
        public var labels: [Int32]
        /// Grid the network ran on (x, y, z), before padding.
        public var stageSize: SIMD3<Int>
        public var stageSpacing: SIMD3<Double>
        public var run: RunResult
    }

    /// `network` must be the model's graph for `stageIndex` (1-based) loaded on a device.
    public static func segment(_ image: NiftiImage, model: ModelFile, stageIndex: Int, network: Network) throws -> Result {
        let stages = model.metadata.stages
        guard stageIndex >= 1, stageIndex <= stages.count else {
            throw CascadeSegError.usage("the model has \(stages.count) stage(s); stage \(stageIndex) does not exist")
        }
        guard model.metadata.input.channels == 1 else {
            throw CascadeSegError.invalidInput("the model expects \(model.metadata.input.channels) input channels; a NIfTI volume provides 1")
        }
        var volume = Volume(image)
        guard volume.spacing.x > 0, volume.spacing.y > 0, volume.spacing.z > 0 else {
            throw CascadeSegError.invalidInput("voxel spacing \(volume.spacing) must be positive")
        }
        volume = try IntensityNormalization.apply(model.metadata.input.normalization, to: volume)
        let target = SIMD3<Double>(zyx: stages[stageIndex - 1].spacingMM)
        let relative = (volume.spacing - target) / target
        if max(abs(relative.x), abs(relative.y), abs(relative.z)) > 1e-6 {
            volume = Resampler.resample(volume, toSpacing: target)
        }

        // Zero-pad at the far end of each axis up to the size multiple (normalized zero).
        let multiple = SIMD3<Int>(zyx: network.graph.sizeMultiple)
        let size = volume.size
        var padded = size
        for axis in 0..<3 { padded[axis] = (size[axis] + multiple[axis] - 1) / multiple[axis] * multiple[axis] }
        var input = Tensor(zeros: [1, 1, padded.z, padded.y, padded.x])
        input.data.withUnsafeMutableBufferPointer { dst in
            volume.voxels.withUnsafeBufferPointer { src in
                for z in 0..<size.z {
                    for y in 0..<size.y {
                        let from = (z * size.y + y) * size.x, to = (z * padded.y + y) * padded.x
                        for x in 0..<size.x { dst[to + x] = src[from + x] }
                    }
                }
            }
        }
        let run = try network.run(input)
        guard let logits = run.outputs[network.graph.outputs[0].name], logits.shape.count == 5,
              Array(logits.shape[2...]) == [padded.z, padded.y, padded.x] else {
            throw CascadeSegError.invalidGraph("graph '\(network.graph.name)' must output 1 x K x D x H x W logits on the input's grid")
        }
        let classes = logits.shape[1]
        // Channel k is the label with the k-th smallest id when the table has one entry per
        // channel, otherwise the label id k.
        let ids = model.metadata.labels.map(\.id).sorted()
        let labelOfClass: [Int32] = (0..<classes).map { Int32(ids.count == classes ? ids[$0] : $0) }
        let plane = padded.x * padded.y * padded.z
        var stageLabels = [Int32](repeating: 0, count: size.x * size.y * size.z)
        logits.data.withUnsafeBufferPointer { l in
            for z in 0..<size.z {
                for y in 0..<size.y {
                    for x in 0..<size.x {
                        let p = (z * padded.y + y) * padded.x + x
                        var best = l[p], index = 0
                        for k in 1..<max(classes, 1) where l[k * plane + p] > best { best = l[k * plane + p]; index = k }
                        stageLabels[(z * size.y + y) * size.x + x] = labelOfClass[index]
                    }
                }
            }
        }
        let imageSize = SIMD3(image.nx, image.ny, image.nz)
        let labels = size == imageSize ? stageLabels : Resampler.resampleLabelsToShape(stageLabels, from: size, to: imageSize)
        return Result(labels: labels, stageSize: size, stageSpacing: volume.spacing, run: run)
    }
}
