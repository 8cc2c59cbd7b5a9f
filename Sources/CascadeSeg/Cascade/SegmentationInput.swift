/// The image every segmentation starts from: checked against the model, then normalized once
/// on its own grid (step 1 of the cascade, and of the whole-volume segmentation).
///
/// The checks are cheap and device-free, so a caller can run `check` before loading networks
/// and a bad image is refused before any kernel is compiled or any network runs.
public enum SegmentationInput {
    /// Refuses an image no stage could segment: a model that wants more than the one channel a
    /// NIfTI volume has, a non-positive or non-finite spacing (`Volume` requires it), and NaN or
    /// infinite voxels (refused with their count, whatever the normalization: kind `none` would
    /// otherwise pass them on to the network).
    public static func check(_ image: NiftiImage, model: ModelFile) throws {
        guard model.metadata.input.channels == 1 else {
            throw CascadeSegError.invalidInput("the model expects \(model.metadata.input.channels) input channels; a NIfTI volume provides 1")
        }
        let s = image.spacing
        for value in [s.x, s.y, s.z] where !(value > 0 && value.isFinite) {
            throw CascadeSegError.invalidInput("voxel spacing \(s.x) x \(s.y) x \(s.z) must be positive and finite")
        }
        let bad = image.nonFiniteCount
        if bad > 0 {
            throw CascadeSegError.invalidInput("the image has \(bad) NaN or infinite voxels; replace them before segmenting")
        }
    }

    /// The checked image as a `Volume` (spacing in mm), normalized as the model says.
    public static func normalized(_ image: NiftiImage, model: ModelFile) throws -> Volume {
        try check(image, model: model)
        return try IntensityNormalization.apply(model.metadata.input.normalization, to: Volume(image))
    }
}
